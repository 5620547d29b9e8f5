"""The inspector: ``/ui``, one static page plus a little plain JavaScript.

Why static files and no templates: the page holds no data when it is served.
The script asks the API for everything with the key the user typed (kept in
``sessionStorage`` as ``contextos_key`` and sent as a bearer token; no cookies,
so there is no CSRF surface), and puts stored text into the page with
``textContent`` only. Nothing needs a build step, a template engine or a CDN,
and the server never mixes stored text into markup.

:class:`SecurityHeaders` adds a strict Content-Security-Policy (scripts and
styles from this origin only, no inline ones, no framing) to the page, and
``X-Content-Type-Options: nosniff`` to every response.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from importlib.resources import files
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from contextos.llm.tokens import Tokenizer

    from ..auth import Authenticator
    from ..tenants import TenantMemories
    from ..window_slots import WindowSlots

STATIC = files(__name__).joinpath("static")

#: Content types of the files the page is made of (anything else is a 404).
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)

Scope_ = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope_, Receive, Send], Awaitable[None]]


class SecurityHeaders:
    """ASGI middleware: CSP and framing headers on ``/ui``, nosniff on everything.

    The CSP stays off the API's own ``/docs`` page, which loads Swagger UI from a
    CDN by FastAPI's design; the inspector is the only page this policy is for.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope_, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_ui = str(scope.get("path", "")).startswith("/ui")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-content-type-options", b"nosniff"))
                if is_ui:
                    headers += [
                        (b"content-security-policy", CSP.encode()),
                        (b"x-frame-options", b"DENY"),
                        (b"referrer-policy", b"no-referrer"),
                        (b"cache-control", b"no-store"),
                    ]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def page_router() -> Any:
    """``GET /ui`` (the page) and ``GET /ui/static/{name}`` (its script and style)."""
    from fastapi import APIRouter
    from fastapi.responses import HTMLResponse, Response

    from ...errors import NotFound

    router = APIRouter(include_in_schema=False)
    index = STATIC.joinpath("index.html").read_text(encoding="utf-8")
    assets = {name: STATIC.joinpath(name).read_bytes() for name in ASSETS}

    @router.get("/ui")
    def page() -> Any:
        """The inspector page; which view it shows is read from the query string."""
        return HTMLResponse(index)

    @router.get("/ui/static/{name}")
    def asset(name: str) -> Any:
        """One of the page's own files (a fixed list: no path is read from the request)."""
        if name not in assets:
            raise NotFound(f"no asset {name!r}")
        return Response(assets[name], media_type=ASSETS[name])

    return router


def install_ui(
    app: Any,
    auth: Authenticator,
    tenants: TenantMemories,
    tokenizer: Tokenizer,
    windows: WindowSlots | None = None,
) -> None:
    """Mount the inspector on ``app``: the page, its JSON routes, the security headers.
    Its windows are built in ``windows`` (the app's, shared with ``/v1``'s window route)."""
    from fastapi import Depends

    from ..inspect_routes import inspect_router
    from ..strict_query import strict_request

    app.include_router(page_router())
    # Its JSON routes refuse an unknown or repeated query key, as /v1's do: mounted
    # without the check, ?user_id=ana&user_id=bob listed bob's memories (a review). The
    # page sends each key once, and only declared ones.
    strict = [Depends(strict_request)]
    app.include_router(
        inspect_router(auth, tenants, tokenizer, windows=windows), dependencies=strict
    )
    app.add_middleware(SecurityHeaders)


__all__ = ["CSP", "SecurityHeaders", "install_ui", "page_router"]
