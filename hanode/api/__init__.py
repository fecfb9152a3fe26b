"""The gRPC control API (hanode.v1.Control) that hanodectl talks to."""

from hanode.api.server import ControlService, start_api_server

__all__ = ["ControlService", "start_api_server"]
