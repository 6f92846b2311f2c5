"""The agent: its loop, tools, work copies, sandbox and trajectories (see README.md here)."""
