"""Test peers: real protocol endpoints that Ventana's backends talk to in tests.

Each subpackage starts a server on 127.0.0.1 that speaks the same protocol as
the production counterpart (``winrm``: WinRM/PowerShell Remoting over HTTPS).
"""
