"""The HTTP and MCP servers: thin, tenant-scoped translations of the Python API.

``create_app`` builds the FastAPI app (extra ``contextos[server]``) and
``build_mcp_server`` the MCP server (extra ``contextos[mcp]``); both import
their framework only when called, so importing this package needs neither.
"""

from typing import Any

from .app import ServerConfig, close_app, create_app
from .keys import ApiKey, IssuedKey, KeyStore
from .ratelimit import RateLimit


def build_mcp_server(*args: Any, **kwargs: Any) -> Any:
    """See :func:`contextos.server.mcp_server.build_mcp_server` (imported on first use:
    it needs the ``mcp`` extra)."""
    from .mcp_server import build_mcp_server as build

    return build(*args, **kwargs)


__all__ = [
    "ApiKey",
    "IssuedKey",
    "KeyStore",
    "RateLimit",
    "ServerConfig",
    "build_mcp_server",
    "close_app",
    "create_app",
]
