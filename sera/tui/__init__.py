"""The terminal app (`sera tui`)."""
