"""The HTTP and MCP servers: thin, tenant-scoped translations of the Python API.

``create_app`` builds the FastAPI app (extra ``contextos[server]``) and
``build_mcp_server`` the MCP server (extra ``contextos[mcp]``); both import
their framework only when called, so importing this package needs neither.
"""

from .app import ServerConfig, close_app, create_app
from .keys import ApiKey, IssuedKey, KeyStore
from .mcp_server import build_mcp_server
from .ratelimit import RateLimit

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
