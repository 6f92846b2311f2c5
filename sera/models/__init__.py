"""Chat backends behind one protocol, picked by spec string (see README.md here)."""
