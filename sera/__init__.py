"""sera: a coding agent that learns your repository on your own machine."""

__version__ = "0.1.0"
