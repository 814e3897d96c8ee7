"""Modal screens: confirmations, the quit dialog, the menu, help and file viewers."""
