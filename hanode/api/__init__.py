"""The gRPC control API (hanode.v1.Control) that hanodectl talks to, and the backend
interface it serves from (``control``)."""
