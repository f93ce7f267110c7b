"""Ventana's domain model, live store, events, action log, recordings, plans."""
