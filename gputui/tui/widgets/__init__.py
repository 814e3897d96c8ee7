"""Widgets of the gputui app; each owns its bindings and talks to the app by messages."""
