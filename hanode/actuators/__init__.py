"""How a node acts on its own replicas: start, stop, restart, sleep and wake them, and the
supervisor that keeps each one where it is wanted. Commands come from the local config only."""
