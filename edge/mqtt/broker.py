"""Who may do what on the broker: per-box credentials and a mosquitto ACL that keeps every box to its own topics.

    write_acl(Path("/etc/mosquitto/edge.acl"), "edge/v1", central_users=("edge-central", "edge-operator"))
    password = add_user(Path("/etc/mosquitto/edge.passwd"), "box-17")      # mosquitto_passwd -b
    write_secret(Path("/etc/edge/mqtt.password"), password)                # for the box, mode 0600

The ACL (mosquitto `acl_file`, with `password_file` and `allow_anonymous false`):

- the central users read and write everything under the prefix (they alone may publish `ack` and
  `gallery/command`): `edge-central` for the server (`edge central run`) and `edge-operator` for the one-shot
  commands (`edge central push/remove/resend`), because one login is one connection (below);
- every other user is a box whose user name is its device id (`%u` in `pattern` rules): it may publish only its own
  `status`, `stats`, `events`, `gallery/result`, `cameras/+/status` and `crop` (face crops, crops.upload), and
  read only its own `ack` and `gallery/command`. Anything not granted is denied: another box's topics, acks, commands, `#`.

The site level of the topic is `+`: a box is identified by its device id alone, so device ids must be unique on a
broker (add_user refuses a user name that is already in the password file).

`use_username_as_clientid true` binds each login to one client id (its user name): without it, box B's login
connecting with box A's client id takes over box A's session and drops box A's connection, again and again. The
price: two connections with one login replace each other, so the central server and the operator's commands log
in with two logins.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import List, Sequence

from edge.errors import EdgeError

BOX_WRITES = ("status", "stats", "events", "gallery/result", "cameras/+/status", "crop")
BOX_READS = ("ack", "gallery/command")
CENTRAL_USERS = ("edge-central", "edge-operator")
"""The central server's login and the operator's (one-shot commands): both may publish acks and commands."""
USER_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""User names: device ids (and the central's name), nothing mosquitto's %u substitution would refuse."""
MOSQUITTO_PASSWD = "mosquitto_passwd"


class BrokerSetupError(EdgeError):
    """The broker's password or ACL file could not be written."""


def acl_text(prefix: str, central_users: Sequence[str] = CENTRAL_USERS) -> str:
    """The mosquitto acl_file for edge under `prefix` (see the module docstring)."""
    prefix = prefix.rstrip("/")
    if not prefix or any(c in prefix for c in "#+%"):
        raise BrokerSetupError(f"prefix must be a topic without wildcards or '%', got {prefix!r}")
    if not central_users:
        raise BrokerSetupError("the ACL needs at least one central user")
    lines = [
        "# edge broker ACL (written by `edge broker acl`): each box only its own topics, the central everything.",
        "# Box user names are device ids (%u); the central alone publishes acks and gallery commands.",
    ]
    for user in dict.fromkeys(central_users):
        lines += [f"user {check_user(user)}", f"topic readwrite {prefix}/#", ""]
    lines += [f"pattern write {prefix}/+/%u/{tail}" for tail in BOX_WRITES]
    lines += [f"pattern read {prefix}/+/%u/{tail}" for tail in BOX_READS]
    return "\n".join(lines) + "\n"


def mosquitto_conf(password_file: Path, acl_file: Path) -> str:
    """The lines of mosquitto.conf that switch the ACL on (add a TLS listener for a broker off the local network)."""
    return (
        f"allow_anonymous false\npassword_file {password_file}\nacl_file {acl_file}\n"
        "# one login, one client id: no login can take over another's session (box B posing as box A)\n"
        "use_username_as_clientid true\n"
    )


def check_user(user: str) -> str:
    if not USER_PATTERN.match(user):
        raise BrokerSetupError(f"user name must be 1-64 letters, digits, '_' or '-' (a device id), got {user!r}")
    return user


def users_in(password_file: Path) -> List[str]:
    """The user names of a mosquitto password file (none when it does not exist)."""
    if not password_file.exists():
        return []
    try:
        lines = password_file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise BrokerSetupError(f"{password_file}: cannot be read ({exc.strerror})") from None
    return [line.split(":", 1)[0] for line in lines if ":" in line]


def add_user(password_file: Path, user: str, replace: bool = False) -> str:
    """Add `user` with a new random password to the mosquitto password file (created mode 0600 if missing, through
    mosquitto_passwd); returns the password. Refuses an existing user unless `replace` (a new password)."""
    check_user(user)
    if user in users_in(password_file) and not replace:
        raise BrokerSetupError(f"{password_file} already has a user {user!r} (device ids must be unique on a broker)")
    tool = shutil.which(MOSQUITTO_PASSWD) or shutil.which(MOSQUITTO_PASSWD, path="/usr/bin:/usr/sbin")
    if tool is None:
        raise BrokerSetupError("mosquitto_passwd not found: install mosquitto (Debian: apt install mosquitto)")
    password = secrets.token_urlsafe(24)
    if not password_file.exists():
        write_secret(password_file, "")
    done = subprocess.run([tool, "-b", str(password_file), user, password], capture_output=True, text=True, timeout=30)
    if done.returncode:
        raise BrokerSetupError(f"mosquitto_passwd failed: {(done.stderr or done.stdout).strip()[:300]}")
    return password


def write_secret(path: Path, text: str) -> None:
    """Write `text` to `path` readable by its owner only (mode 0600, also when the file existed)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
    except OSError as exc:
        raise BrokerSetupError(f"{path}: cannot be written ({exc.strerror})") from None


def write_acl(path: Path, prefix: str, central_users: Sequence[str] = CENTRAL_USERS) -> None:
    """Write the ACL file (mode 0644: it holds no secret)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(acl_text(prefix, central_users), encoding="utf-8")
    except OSError as exc:
        raise BrokerSetupError(f"{path}: cannot be written ({exc.strerror})") from None
