"""claudews: drive the Claude Code CLI remotely over one WebSocket."""

__version__ = "0.1.0"
