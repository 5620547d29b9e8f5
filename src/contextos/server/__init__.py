"""The HTTP and MCP servers: thin, tenant-scoped translations of the Python API.

``create_app`` (FastAPI, extra ``contextos[server]``) and ``build_mcp_server``
(extra ``contextos[mcp]``) are imported lazily by the CLI, so the core library
never needs either package.
"""
