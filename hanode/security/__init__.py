"""Secrets on disk, TLS material and a small certificate authority for a new cluster."""
