"""`edge broker ...`: set up mosquitto for edge (per-box credentials, the ACL); thin wrappers over edge.mqtt.broker."""

from __future__ import annotations

from pathlib import Path
from typing import Tuple

import click

from edge.cligroup import EdgeGroup
from edge.mqtt.broker import CENTRAL_USERS

CENTRAL_USER = CENTRAL_USERS[0]



password_file_option = click.option(
    "--password-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default="/etc/mosquitto/edge.passwd",
    show_default=True,
    help="mosquitto's password_file (hashed passwords; created mode 0600 if missing).",
)
secret_option = click.option(
    "--secret-out",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="Where to write the new password in clear, mode 0600 (give it to the box or central, then delete it).",
)


@click.group(cls=EdgeGroup)
def broker() -> None:
    """Set up the MQTT broker: per-box logins and the ACL that keeps each box to its own topics."""


@broker.command()
@click.option("--prefix", default="edge/v1", show_default=True, help="Topic prefix the boxes publish under.")
@click.option(
    "--central-user",
    "central_users",
    multiple=True,
    default=CENTRAL_USERS,
    show_default=True,
    help="A central login (repeat it): the server's and the operator's; they alone publish acks and commands.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
    default="-",
    show_default=True,
    help="ACL file to write (mosquitto's acl_file); - prints it.",
)
def acl(prefix: str, central_users: Tuple[str, ...], output: Path) -> None:
    """Write the mosquitto ACL: a box (user = device id) only its own topics, the central everything."""
    from edge.mqtt.broker import acl_text, write_acl

    if str(output) == "-":
        click.echo(acl_text(prefix, central_users), nl=False)
    else:
        write_acl(output, prefix, central_users)
        click.echo(f"wrote {output}", err=True)


@broker.command("add-box")
@password_file_option
@secret_option
@click.option("--site", required=True, help="Site of the box (device.site in its config).")
@click.option("--device", required=True, help="Device id of the box (device.id): its user name on the broker.")
@click.option("--replace", is_flag=True, help="Give an existing box a new password.")
def add_box(password_file: Path, secret_out: Path, site: str, device: str, replace: bool) -> None:
    """Give one box its own broker login (user name = device id, random password)."""
    from edge.mqtt.broker import add_user, check_user, write_secret

    check_user(site)
    password = add_user(password_file, device, replace=replace)
    write_secret(secret_out, password + "\n")
    click.echo(f"added user {device} to {password_file}; its password is in {secret_out} (mode 0600)")
    click.echo(
        f"box config: device: {{id: {device}, site: {site}}}; mqtt: username {device}, the password from "
        f"{secret_out} (the broker uses the user name as its client id); reload mosquitto (systemctl reload mosquitto)"
    )


@broker.command("add-central")
@password_file_option
@secret_option
@click.option(
    "--user",
    default=CENTRAL_USER,
    show_default=True,
    help=f"A central login named in the ACL: {CENTRAL_USERS[0]} (the server) or {CENTRAL_USERS[1]} (the operator's "
    "one-shot commands; one login is one connection).",
)
@click.option("--replace", is_flag=True, help="Give the central a new password.")
def add_central(password_file: Path, secret_out: Path, user: str, replace: bool) -> None:
    """Give the central its broker login (the ACL lets it read everything and publish acks and commands)."""
    from edge.mqtt.broker import add_user, write_secret

    write_secret(secret_out, add_user(password_file, user, replace=replace) + "\n")
    click.echo(f"added user {user} to {password_file}; its password is in {secret_out} (mode 0600)")


@broker.command()
@password_file_option
@click.option(
    "--acl-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default="/etc/mosquitto/edge.acl",
    show_default=True,
    help="mosquitto's acl_file (edge broker acl -o FILE).",
)
def conf(password_file: Path, acl_file: Path) -> None:
    """Print the mosquitto.conf lines that turn the logins and the ACL on (no anonymous clients)."""
    from edge.mqtt.broker import mosquitto_conf

    click.echo(mosquitto_conf(password_file, acl_file), nl=False)
