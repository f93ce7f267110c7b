"""The Textual console: app, panes, screens and the command line."""
