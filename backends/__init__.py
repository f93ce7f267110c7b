"""Backends: one module or package per source (sim, replay, hyperv, vsphere, ssh)."""
