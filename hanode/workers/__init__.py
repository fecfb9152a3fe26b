"""Data-plane workers: ``[router] workers = N`` processes serving the router port over one
pool view the node publishes (docs/workers.md)."""
