"""Logging in and out, the session cookie, the roles and the CSRF check every POST goes through.

    async def board(request: Request, session: Session) -> Response: ...
    routes = [Route("/", page(board)), Route("/gallery/add", page(add_person, admin=True), methods=["POST"])]

`page` finds the session from the cookie (none or expired: a GET goes to the login page, anything else gets 401),
refuses staff on admin pages (403) and refuses a POST whose form `csrf` field is not the session's token (403).
The login form itself has a token too (a short-lived cookie and the same value in the form: double submit), and
five wrong passwords for a name within 15 minutes lock that name for 15 minutes.
"""

from __future__ import annotations

import hmac
import secrets
import threading
from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable, Dict, List
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from edge.central.users import Session
from edge.central.web.context import Console
from edge.central.web.templates import render

COOKIE = "edge_console"
LOGIN_COOKIE = "edge_console_login"
MAX_FAILURES = 5
LOCKOUT = timedelta(minutes=15)

Handler = Callable[[Request, Session], Awaitable[Response]]


def console_of(request: Request) -> Console:
    return request.app.state.console  # type: ignore[no-any-return]


def safe_next(target: str) -> str:
    """A local path to go back to (never another site: //host or a scheme)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def set_cookie(response: Response, console: Console, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path="/", httponly=True, samesite="strict", secure=console.secure
    )


class Throttle:
    """Failed logins per user name, kept in memory."""

    def __init__(self) -> None:
        self._failures: Dict[str, List[datetime]] = {}
        self._lock = threading.Lock()

    def locked(self, username: str, now: datetime) -> bool:
        with self._lock:
            recent = [t for t in self._failures.get(username, []) if now - t < LOCKOUT]
            self._failures[username] = recent
            return len(recent) >= MAX_FAILURES

    def failed(self, username: str, now: datetime) -> None:
        with self._lock:
            self._failures.setdefault(username, []).append(now)

    def passed(self, username: str) -> None:
        with self._lock:
            self._failures.pop(username, None)


def current_session(request: Request) -> Session | None:
    console = console_of(request)
    return console.users.session(request.cookies.get(COOKIE, ""), console.clock())


def _same(a: Any, b: str) -> bool:
    return isinstance(a, str) and bool(b) and hmac.compare_digest(a.encode(), b.encode())


def page(handler: Handler, admin: bool = False) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint that needs a logged-in user (an admin when `admin`), and the session's CSRF token on a POST."""

    async def endpoint(request: Request) -> Response:
        session = await run_in_threadpool(current_session, request)
        if session is None:
            if request.method == "GET":
                target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""), safe="")
                return RedirectResponse(f"/login?next={target}", status_code=303)
            return render(request, "error.html", {"message": "Please log in again."}, status_code=401)
        if admin and not session.user.is_admin:
            return render(request, "error.html", {"message": "This page is for admins.", "session": session}, 403)
        if request.method == "POST":
            form = await request.form()
            if not _same(form.get("csrf"), session.csrf):
                return render(request, "error.html", {"message": "The form expired; go back and try again.",
                                                      "session": session}, 403)  # fmt: skip
        return await handler(request, session)

    return endpoint


async def login_form(request: Request) -> Response:
    console = console_of(request)
    token = secrets.token_urlsafe(24)
    response = render(request, "login.html", {"login_csrf": token, "next": safe_next(request.query_params.get("next", "/"))})
    set_cookie(response, console, LOGIN_COOKIE, token, 600)
    return response


async def login(request: Request) -> Response:
    console = console_of(request)
    form = await request.form()
    username, password = str(form.get("username", "")).strip().lower(), str(form.get("password", ""))
    target = safe_next(str(form.get("next", "/")))

    def again(message: str, status: int) -> Response:
        token = secrets.token_urlsafe(24)
        context = {"login_csrf": token, "next": target, "message": message, "username": username}
        response = render(request, "login.html", context, status_code=status)
        set_cookie(response, console, LOGIN_COOKIE, token, 600)
        return response

    if not _same(form.get("csrf"), request.cookies.get(LOGIN_COOKIE, "")):
        return again("The login form expired; please try again.", 403)
    throttle: Throttle = request.app.state.throttle
    now = console.clock()
    if throttle.locked(username, now):
        return again("Too many wrong passwords for this name; try again in 15 minutes.", 429)
    user = await run_in_threadpool(console.users.check_password, username, password)
    if user is None:
        throttle.failed(username, now)
        return again("Wrong user name or password.", 401)
    throttle.passed(username)
    session = await run_in_threadpool(console.users.open_session, user, now)
    response = RedirectResponse(target, status_code=303)
    set_cookie(response, console, COOKIE, session.token, int(console.users.lifetime.total_seconds()))
    response.delete_cookie(LOGIN_COOKIE, path="/")
    return response


async def logout(request: Request, session: Session) -> Response:
    console = console_of(request)
    await run_in_threadpool(console.users.close_session, request.cookies.get(COOKIE, ""))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response
