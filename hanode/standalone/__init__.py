"""A node without consensus: its own health checkers own the pool."""
