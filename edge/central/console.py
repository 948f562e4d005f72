"""`edge central console` (the office's web console, with the central's MQTT side in the same process) and
`edge central user ...` (the console's users)."""

from __future__ import annotations

import ipaddress
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Tuple

import click

from edge.central.backend import TARGET_HELP, StoreTarget
from edge.central.cli import _central, broker_options
from edge.cligroup import EdgeGroup

DB_OPTION = click.option(
    "--db",
    type=StoreTarget(),
    default="central.db",
    show_default=True,
    help=f"The central's store (users are kept there): {TARGET_HELP}.",
)


def _listen(text: str) -> Tuple[str, int]:
    host, _, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = 0
    if not host or not 1 <= number <= 65535:
        raise click.BadParameter(f"expected HOST:PORT, e.g. 127.0.0.1:8080, got {text!r}")
    return host.strip("[]"), number


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command()
@broker_options
@DB_OPTION
@click.option("--client-id", default="edge-central", show_default=True, help="MQTT client id (keys the session).")
@click.option(
    "--key-file",
    envvar="EDGE_CENTRAL_KEY_FILE",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="The central's private key (edge central keygen): needed to add, enroll or remove people on the boxes. "
    "Env: EDGE_CENTRAL_KEY_FILE.",
)
@click.option("--listen", default="127.0.0.1:8080", show_default=True, help="HOST:PORT the console serves on.")
@click.option("--cert", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="TLS certificate (PEM): serve over HTTPS (with --key).")  # fmt: skip
@click.option("--key", "tls_key", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="TLS private key (PEM) of --cert.")  # fmt: skip
def console(
    db: str,
    client_id: str,
    key_file: Optional[Path],
    listen: str,
    cert: Optional[Path],
    tls_key: Optional[Path],
    **broker: Any,
) -> None:
    """Serve the office's web console (board, reports, unknown faces, gallery, boxes) and, in the same process,
    receive, store and acknowledge the boxes' events as `edge central run` does (run one or the other)."""
    import uvicorn

    from edge.central.web.app import create_app
    from edge.central.web.context import Console

    host, port = _listen(listen)
    if (cert is None) != (tls_key is None):
        raise click.UsageError("give both --cert and --key for HTTPS, or neither")
    if cert is None and not _loopback(host):
        click.echo(f"warning: serving plain HTTP on {host}: passwords and cookies travel in clear; give --cert and "
                   "--key", err=True)  # fmt: skip
    central_ = _central(broker, db, client_id=client_id, key_file=key_file)
    try:
        central_.start()
        app = create_app(Console(central_.store, central=central_, crops=central_.crops, secure=cert is not None))
        scheme = "https" if cert is not None else "http"
        click.echo(f"console: {scheme}://{listen}/ (database {db}); Ctrl-C to stop", err=True)
        config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", access_log=False, proxy_headers=False,
            ssl_certfile=str(cert) if cert else None, ssl_keyfile=str(tls_key) if tls_key else None,
        )  # fmt: skip
        # uvicorn stops on SIGINT/SIGTERM and then raises the signal again for the handler it found: a quiet one,
        # so the central below still closes (its due acks go out) and the exit status is 0
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: None)
        uvicorn.Server(config).run()
    finally:
        central_.close()
    click.echo("console: stopped", err=True)


@click.group(cls=EdgeGroup)
def user() -> None:
    """The web console's users: staff read and correct, admins also manage the gallery."""


def _users(db: str) -> Any:
    from edge.central.store import CentralStore
    from edge.central.users import Users

    store = CentralStore(db)
    return store, Users(store.backend)


def _read_password(password_file: Optional[Path]) -> str:
    if password_file is not None:
        lines = password_file.read_text(encoding="utf-8").splitlines()
        if not lines or not lines[0]:
            raise click.ClickException(f"{password_file}: the first line (the password) is empty")
        return lines[0]
    if not sys.stdin.isatty():
        line = sys.stdin.readline().rstrip("\n")
        if not line:
            raise click.ClickException("no password on standard input")
        return line
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


PASSWORD_FILE = click.option(
    "--password-file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Read the password from this file's first line (default: asked, or one line on standard input).",
)


@user.command("add")
@DB_OPTION
@click.argument("username")
@click.option("--role", type=click.Choice(["staff", "admin"]), default="staff", show_default=True,
              help="staff: read and correct; admin: also manage the gallery.")  # fmt: skip
@PASSWORD_FILE
def add_user(db: str, username: str, role: str, password_file: Optional[Path]) -> None:
    """Add a console user (the password is stored as an argon2 hash)."""
    store, users = _users(db)
    try:
        users.add(username, _read_password(password_file), role, datetime.now(timezone.utc))
    finally:
        store.close()
    click.echo(f"added {username} ({role})")


@user.command("passwd")
@DB_OPTION
@click.argument("username")
@PASSWORD_FILE
def passwd(db: str, username: str, password_file: Optional[Path]) -> None:
    """Set a user's password; their open sessions end."""
    store, users = _users(db)
    try:
        users.set_password(username, _read_password(password_file), datetime.now(timezone.utc))
    finally:
        store.close()
    click.echo(f"password of {username} changed; their sessions ended")


@user.command("role")
@DB_OPTION
@click.argument("username")
@click.argument("role", type=click.Choice(["staff", "admin"]))
def role(db: str, username: str, role: str) -> None:
    """Make a user staff or admin."""
    store, users = _users(db)
    try:
        users.set_role(username, role)
    finally:
        store.close()
    click.echo(f"{username} is {role}")


@user.command("remove")
@DB_OPTION
@click.argument("username")
def remove_user(db: str, username: str) -> None:
    """Remove a user; their open sessions end."""
    store, users = _users(db)
    try:
        users.remove(username)
    finally:
        store.close()
    click.echo(f"removed {username}")


@user.command("list")
@DB_OPTION
def list_users(db: str) -> None:
    """List the users and their roles."""
    store, users = _users(db)
    try:
        for item in users.all():
            click.echo(f"{item.username} {item.role.value}")
    finally:
        store.close()


def register(group: click.Group) -> None:
    """Add `console` and `user` to `edge central`."""
    group.add_command(console)
    group.add_command(user)

