"""The console's users and their sessions, in the central's store (either back-end).

    users = Users(store.backend)
    users.add("kim", "a long passphrase", Role.ADMIN)
    user = users.check_password("kim", "a long passphrase")        # a User, or None
    session = users.open_session(user, now)                          # the cookie carries session.token
    users.session(token, now)                                        # the Session, or None when expired or unknown

Passwords are kept as argon2id hashes (argon2-cffi), never in clear; a hash made with weaker parameters is redone at
the next good login. Sessions are kept server-side: the cookie holds a random token, the table only its SHA-256, so
a copy of the database opens no session. A session ends after `idle` without a request or `lifetime` after login,
whichever comes first; logging out, a new password or removing the user ends it at once. Each session has its own
CSRF token, which every form posts back.

Two roles: staff read and correct (the board, reports, history, unknown faces, corrections); admin also manages
(the gallery: add, enroll, remove; users are managed with `edge central user ...`).
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import wraps
from typing import TYPE_CHECKING, Any, Callable, List, Optional, TypeVar, Union

from sqlite_utils import Database

from edge.central.backend import Backend, Ddl, Schema
from edge.central.backend.sqlite import SqliteBackend
from edge.errors import EdgeError

if TYPE_CHECKING:
    from argon2 import PasswordHasher

migrations = Schema("edge.central.users")

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
IDLE = timedelta(minutes=30)
LIFETIME = timedelta(hours=12)


class UserError(EdgeError):
    """A user cannot be added or changed: a bad name, a short password, an unknown user or role."""


class Role(str, enum.Enum):
    STAFF = "staff"
    ADMIN = "admin"


@dataclass(frozen=True)
class User:
    username: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


@dataclass(frozen=True)
class Session:
    """A logged-in browser: `token` only when just opened (the table keeps its hash), `csrf` for every form."""

    user: User
    csrf: str
    expires_at: datetime
    token: str = ""


@migrations()
def m001_users(db: Ddl) -> None:
    db.execute(
        """
        CREATE TABLE console_users (
            username TEXT PRIMARY KEY, role TEXT NOT NULL, password_hash TEXT NOT NULL,
            created_at TEXT NOT NULL, password_changed_at TEXT NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE console_sessions (
            token_hash TEXT PRIMARY KEY, username TEXT NOT NULL, csrf TEXT NOT NULL,
            opened_at TEXT NOT NULL, last_seen_at TEXT NOT NULL, expires_at TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX idx_console_sessions_user ON console_sessions (username)")


def _hasher() -> PasswordHasher:  # argon2 is an extra of the central: imported when needed
    from argon2 import PasswordHasher

    return PasswordHasher()


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def _check_password(password: str) -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise UserError(f"a password must have {MIN_PASSWORD} to {MAX_PASSWORD} characters, got {len(password)}")


def _role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise UserError(f"role must be staff or admin, got {role!r}") from None


F = TypeVar("F", bound=Callable[..., Any])


def _locked(method: F) -> F:
    @wraps(method)
    def run(self: Users, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            return method(self, *args, **kwargs)

    return run  # type: ignore[return-value]


class Users:
    """Users and sessions on the central's store: its back-end (or a sqlite_utils Database of a central file).
    `lock`: held around each method (default: the back-end's)."""

    def __init__(
        self,
        db: Union[Backend, Database],
        idle: timedelta = IDLE,
        lifetime: timedelta = LIFETIME,
        lock: Optional[Any] = None,
    ) -> None:
        self.db = db if isinstance(db, Backend) else SqliteBackend.over(db)
        self.idle, self.lifetime = idle, lifetime
        self.lock = lock if lock is not None else self.db.lock
        self._dummy_hash = ""

    # users -------------------------------------------------------------------------------------------------------
    @_locked
    def add(self, username: str, password: str, role: str, now: datetime) -> User:
        if not USERNAME.match(username):
            raise UserError(f"user name {username!r}: lower-case letters, digits, '.', '_' or '-', up to 64")
        _check_password(password)
        user = User(username, _role(role))
        if self.get(username) is not None:
            raise UserError(f"user {username!r} exists; use `edge central user passwd` to change the password")
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO console_users (username, role, password_hash, created_at, password_changed_at) "
                "VALUES (?, ?, ?, ?, ?)",
                [username, user.role.value, _hasher().hash(password), now.isoformat(), now.isoformat()],
            )
        return user

    @_locked
    def get(self, username: str) -> Optional[User]:
        row = self.db.one("SELECT username, role FROM console_users WHERE username = ?", [username])
        return User(row[0], Role(row[1])) if row else None

    @_locked
    def all(self) -> List[User]:
        rows = self.db.query("SELECT username, role FROM console_users ORDER BY username")
        return [User(r[0], Role(r[1])) for r in rows]

    @_locked
    def set_password(self, username: str, password: str, now: datetime) -> None:
        """A new password; every session of the user ends."""
        _check_password(password)
        self._known(username)
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE console_users SET password_hash = ?, password_changed_at = ? WHERE username = ?",
                [_hasher().hash(password), now.isoformat(), username],
            )
            tx.execute("DELETE FROM console_sessions WHERE username = ?", [username])

    @_locked
    def set_role(self, username: str, role: str) -> None:
        self._known(username)
        with self.db.transaction() as tx:
            tx.execute("UPDATE console_users SET role = ? WHERE username = ?", [_role(role).value, username])

    @_locked
    def remove(self, username: str) -> None:
        self._known(username)
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM console_sessions WHERE username = ?", [username])
            tx.execute("DELETE FROM console_users WHERE username = ?", [username])

    def _known(self, username: str) -> None:
        if self.get(username) is None:
            raise UserError(f"no user {username!r}")

    @_locked
    def check_password(self, username: str, password: str) -> Optional[User]:
        """The user when the password is right; None otherwise (an unknown name costs the same hashing time)."""
        from argon2.exceptions import InvalidHashError, VerificationError

        hasher = _hasher()
        row = self.db.one("SELECT role, password_hash FROM console_users WHERE username = ?", [username])
        if row is None or len(password) > MAX_PASSWORD:
            if not self._dummy_hash:
                self._dummy_hash = hasher.hash(secrets.token_hex(16))
            with contextlib.suppress(VerificationError):
                hasher.verify(self._dummy_hash, password[:MAX_PASSWORD])
            return None
        try:
            hasher.verify(row[1], password)
        except (VerificationError, InvalidHashError):
            return None
        if hasher.check_needs_rehash(row[1]):
            with self.db.transaction() as tx:
                tx.execute(
                    "UPDATE console_users SET password_hash = ? WHERE username = ?", [hasher.hash(password), username]
                )
        return User(username, Role(row[0]))

    # sessions ----------------------------------------------------------------------------------------------------
    @_locked
    def open_session(self, user: User, now: datetime) -> Session:
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        expires = min(now + self.idle, now + self.lifetime)
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM console_sessions WHERE expires_at < ?", [now.isoformat()])
            tx.execute(
                "INSERT INTO console_sessions (token_hash, username, csrf, opened_at, last_seen_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [_digest(token), user.username, csrf, now.isoformat(), now.isoformat(), expires.isoformat()],
            )
        return Session(user, csrf, expires, token)

    @_locked
    def session(self, token: str, now: datetime) -> Optional[Session]:
        """The live session of a cookie's token, its idle time renewed; None when unknown or expired."""
        if not token or len(token) > 128 or not token.isascii():
            return None
        row = self.db.one(
            "SELECT s.username, u.role, s.csrf, s.opened_at, s.expires_at FROM console_sessions s "
            "JOIN console_users u USING (username) WHERE s.token_hash = ?",
            [_digest(token)],
        )
        if row is None:
            return None
        if datetime.fromisoformat(row[4]) <= now:
            self.close_session(token)
            return None
        expires = min(now + self.idle, datetime.fromisoformat(row[3]) + self.lifetime)
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE console_sessions SET last_seen_at = ?, expires_at = ? WHERE token_hash = ?",
                [now.isoformat(), expires.isoformat(), _digest(token)],
            )
        return Session(User(row[0], Role(row[1])), row[2], expires)

    @_locked
    def close_session(self, token: str) -> None:
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM console_sessions WHERE token_hash = ?", [_digest(token)])
