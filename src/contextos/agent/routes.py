"""HTTP routes of the self-editing memory tools, under ``/v1/agent``.

``POST /v1/agent/tools/{name}`` runs one tool for a user/agent (and session)
of the caller's tenant and answers what the model would see: the text and
whether it is an error (a refused edit is a normal tool result, status 200).
``GET /v1/agent/core`` gives the blocks and the text to pin in the prefix;
``GET /v1/agent/tools`` the tool schemas. (No ``from __future__ import
annotations``: FastAPI reads the handlers' annotations at runtime.)
"""

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Request, Security
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from ..errors import NotFound
from ..server.routes import ERRORS, OptScopeId, bearer, caller
from ..server.window_slots import READS_LOG, WindowSlots
from ..server.write_threads import run_write
from .schemas import ToolCallIn
from .tools import SCHEMAS, TOOL_NAMES, WRITING_TOOLS, scoped_tools

if TYPE_CHECKING:
    from ..memory import Memory
    from ..server.auth import Authenticator
    from ..server.tenants import TenantMemories


class ToolOutcomeOut(BaseModel):
    """What the model sees: the tool's text, and whether it is an error."""

    name: str
    text: str
    is_error: bool


class BlockOut(BaseModel):
    label: str
    value: str
    limit: int
    memory_id: str | None


class CoreOut(BaseModel):
    """The core memory blocks of a scope, and the text to pin in the prefix."""

    blocks: list[BlockOut]
    prefix: str


class ToolsOut(BaseModel):
    tools: list[dict[str, Any]]


def agent_router(
    auth: "Authenticator", tenants: "TenantMemories", windows: WindowSlots | None = None
) -> APIRouter:
    """Routes under ``/v1/agent``, scoped to the tenant of the caller's key. The tools
    that read a session's whole log run in ``windows`` (the app's window slots)."""
    router = APIRouter(prefix="/v1/agent", tags=["agent"], responses=ERRORS)
    slots = windows or WindowSlots()

    def tenant_memory(request: Request, _: Annotated[Any, Security(bearer)] = None) -> "Memory":
        return tenants.get(auth.tenant_for(caller(auth, request)))  # charged once, at the gate

    Mem = Annotated[Any, Depends(tenant_memory)]

    @router.get("/tools", response_model=ToolsOut, summary="tool_schemas")
    def tools(_: Mem) -> ToolsOut:
        """The self-editing memory tools' schemas (name, description, input_schema)."""
        return ToolsOut(tools=[dict(t) for t in SCHEMAS])

    @router.post("/tools/{name}", response_model=ToolOutcomeOut, summary="execute")
    async def execute(name: str, body: ToolCallIn, mem: Mem, request: Request) -> ToolOutcomeOut:
        """Run one tool (AgentTools.execute); a refused call has is_error true."""
        if name not in TOOL_NAMES:
            raise NotFound(
                f"no agent tool {name!r}; the tools are: {', '.join(sorted(TOOL_NAMES))}"
            )

        def run() -> ToolOutcomeOut:
            agent = scoped_tools(
                mem, user_id=body.user_id, agent_id=body.agent_id, session_id=body.session_id
            )
            out = agent.execute(name, body.arguments)
            return ToolOutcomeOut(name=out.name, text=out.text, is_error=out.is_error)

        # A tool that reads the whole log (conversation_search) waits in the tenant's
        # window slots, off the thread pool every route shares (see WindowSlots).
        if name in READS_LOG:
            return await slots.run(mem.tenant, run, client_gone=request.is_disconnected)
        # A write waits for the database's write lock on threads of its own, so that
        # reads keep the shared pool, in the tenant's share of them (server.write_threads).
        if name in WRITING_TOOLS:
            return await run_write(run, tenant=mem.tenant, client_gone=request.is_disconnected)
        return await run_in_threadpool(run)

    @router.get("/core", response_model=CoreOut, summary="core_memory")
    def core(mem: Mem, user_id: OptScopeId = None, agent_id: OptScopeId = None) -> CoreOut:
        """The core memory blocks of a user/agent and the text to pin in the prefix."""
        memory = scoped_tools(mem, user_id=user_id, agent_id=agent_id).core
        blocks = [BlockOut(**vars(b)) for b in memory.blocks()]
        return CoreOut(blocks=blocks, prefix=memory.render())

    return router


__all__ = ["agent_router"]
