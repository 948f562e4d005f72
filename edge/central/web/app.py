"""The console's ASGI app (Starlette): routes, static files and the security headers of every answer.

    app = create_app(Console(store, central=central, crops=crops, secure=True))
    uvicorn.run(app, host="127.0.0.1", port=8080, ssl_certfile=..., ssl_keyfile=...)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Awaitable, Callable, MutableMapping

from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from edge.central.web import auth, manage, pages
from edge.central.web.context import Console

STATIC = Path(__file__).resolve().parent / "static"
MAX_BODY_BYTES = 4 * 4 * 1024 * 1024 + 64 * 1024
"""Largest request: four photos at their limit, and the form around them."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


class SecurityHeaders:
    """Every answer: no framing, no sniffing, scripts and styles from this site only, pages not cached; HSTS over
    HTTPS."""

    def __init__(self, app: ASGIApp, secure: bool) -> None:
        self.app, self.secure = app, secure

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope.get("path", "").startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
                                                 b"form-action 'self'; base-uri 'none'"),
                    (b"x-frame-options", b"DENY"),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                ]  # fmt: skip
                if not static and not any(k.lower() == b"cache-control" for k, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                if self.secure:
                    headers.append((b"strict-transport-security", b"max-age=31536000"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(console: Console) -> Any:
    page, admin = auth.page, (lambda handler: auth.page(handler, admin=True))
    routes = [
        Route("/login", auth.login_form, methods=["GET"]),
        Route("/login", auth.login, methods=["POST"]),
        Route("/logout", page(auth.logout), methods=["POST"]),
        Route("/", page(pages.board)),
        Route("/board/live", page(pages.board_live)),
        Route("/person/{person_id}", page(pages.person)),
        Route("/correct", page(pages.correct), methods=["POST"]),
        Route("/report", page(pages.report)),
        Route("/report.{format}", page(pages.report_file)),
        Route("/unknown", page(pages.unknown)),
        Route("/crop/{event_id}", page(pages.crop)),
        Route("/unknown/{event_id}/label", page(pages.label), methods=["POST"]),
        Route("/unknown/{event_id}/enroll", admin(manage.enroll_face), methods=["POST"]),
        Route("/health", page(pages.health)),
        Route("/gallery", admin(manage.gallery)),
        Route("/gallery/add", admin(manage.add_person), methods=["POST"]),
        Route("/gallery/{person_id}/group", admin(manage.set_group), methods=["POST"]),
        Route("/gallery/{person_id}/remove", admin(manage.remove_person), methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]
    app = Starlette(routes=routes, max_body_size=MAX_BODY_BYTES)
    app.state.console = console
    app.state.throttle = auth.Throttle()
    return SecurityHeaders(app, console.secure)
