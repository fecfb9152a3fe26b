"""hanode: high availability and auto-recovery for AI inference endpoints."""

__version__ = "0.1.0"
