"""Test peers: real protocol endpoints that Ventana's backends talk to in tests.

Each module or subpackage starts a server on 127.0.0.1 that speaks the same
protocol as the production counterpart — ``vcsim``: govmomi's vSphere
simulator; ``winrm``: a WinRM/PowerShell Remoting endpoint over HTTPS.
"""
