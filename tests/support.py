"""Test infrastructure shared by several test files: waiting, free ports, a real RTSP server process."""

from __future__ import annotations

import os
import selectors
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

if TYPE_CHECKING:
    from edge.mqtt.signing import CommandVerifier

REPO = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"


def wait_until(predicate: Callable[[], bool], timeout: float, poll: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return predicate()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rtsp_unavailable() -> Optional[str]:
    probe = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    try:
        done = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{SYSTEM_PYTHON} unusable: {exc}"
    if done.returncode:
        return f"{SYSTEM_PYTHON} lacks PyGObject/gst-rtsp-server; run scripts/install_system_deps.sh as root"
    return None


class RtspServer:
    """scripts/rtsp_server.py as a child process on a fixed port, so it can be killed and restarted."""

    def __init__(self, clip: Path, port: int, loop: bool = True) -> None:
        self.clip = clip
        self.port = port
        self.loop = loop
        self.url = f"rtsp://127.0.0.1:{port}/cam"
        self.proc: Optional[subprocess.Popen[str]] = None

    def start(self, timeout: float = 15.0) -> None:
        cmd = [SYSTEM_PYTHON, str(REPO / "scripts" / "rtsp_server.py"), "--file", str(self.clip)]
        cmd += ["--port", str(self.port), "--mount", "cam"] + (["--loop"] if self.loop else [])
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                self.kill()
                raise RuntimeError("rtsp_server.py did not print READY in time")
        line = self.proc.stdout.readline().strip()
        if line != f"READY {self.url}":
            err = self.proc.stderr.read() if self.proc.stderr and self.proc.poll() is not None else ""
            self.kill()
            raise RuntimeError(f"rtsp_server.py said {line!r} {err}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.terminate()
        code = self.proc.wait(5)
        self.proc = None
        return code


MOSQUITTO = "/usr/sbin/mosquitto"


def mosquitto_unavailable() -> Optional[str]:
    if not Path(MOSQUITTO).is_file():
        return f"{MOSQUITTO} not found: run scripts/install_system_deps.sh as root (Debian package mosquitto)"
    return None


class Mosquitto:
    """A real mosquitto broker on a loopback port, with persistence in `folder` so it can be stopped and restarted
    (SIGTERM saves its sessions and queued messages) or killed."""

    def __init__(self, folder: Path, port: int, extra: str = "") -> None:
        self.folder, self.port = folder, port
        self.proc: Optional[subprocess.Popen[str]] = None
        folder.mkdir(parents=True, exist_ok=True)
        self.conf = folder / "mosquitto.conf"
        self.log = folder / "mosquitto.log"
        self.conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {folder}/\nautosave_interval 1\nmax_queued_messages 100000\n"
            f"message_size_limit 0\nlog_dest file {self.log}\nlog_type error\nlog_type warning\n"
            # as root mosquitto drops to user mosquitto, which cannot write pytest's private folders
            f"{'user root' + chr(10) if os.geteuid() == 0 else ''}{extra}"
        )

    def start(self, timeout: float = 10.0) -> Mosquitto:
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )

        def listening() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                return False

        if not wait_until(listening, timeout, 0.05):
            err = self.proc.stderr.read() if self.proc.poll() is not None and self.proc.stderr else ""
            self.kill()
            raise RuntimeError(f"mosquitto did not listen on {self.port}: {err}")
        return self

    def stop(self) -> None:
        """SIGTERM: a clean broker shutdown (it saves its state)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


def edge_command() -> list:  # type: ignore[type-arg]
    """The `edge` command of this environment (the running interpreter's `python -m edge`)."""
    import sys

    return [sys.executable, "-m", "edge"]


def run_edge(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the real `edge` command (`python -m edge`) to completion, capturing its output."""
    return subprocess.run([*edge_command(), *args], capture_output=True, text=True, timeout=timeout)


def enroll_lin_manuel(db: Path, data: Path) -> None:
    """Enroll Lin-Manuel Miranda from his still into the gallery at `db`, through the real CLI."""
    photo = data / "hamilton" / "lin-manuel-miranda.png"
    args = ["--db", str(db), "enroll", "--person-id", "lin-manuel", "--name", "Lin-Manuel Miranda", str(photo)]
    done = run_edge(*args)
    assert done.returncode == 0, done.stdout + done.stderr


def stored_events(db: Path) -> list:  # type: ignore[type-arg]
    """Every row of the events table of a box database, by seq (none when the table does not exist yet)."""
    import sqlite3

    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute("SELECT * FROM events ORDER BY seq")]
        except sqlite3.OperationalError:
            return []


class CentralKeys:
    """An Ed25519 key pair as the central and a box hold it (`edge central keygen` files in `folder`), with helpers to
    sign commands for a box and to make a box's verifier."""

    def __init__(self, folder: Path) -> None:
        from edge.mqtt.signing import generate_keys, load_private_key

        self.key_file, self.public_file = folder / "central.key", folder / "central.pub"
        generate_keys(self.key_file, self.public_file)
        self.private_key = load_private_key(self.key_file)

    def sign(self, command: Dict[str, Any], device: str, lifetime_s: float = 60.0) -> Dict[str, Any]:
        """`command` signed for the box `<site>/<device id>`."""
        from edge.mqtt.signing import sign_command

        return sign_command(command, self.private_key, device, lifetime_s)

    def verifier(self, device: str) -> CommandVerifier:
        from edge.mqtt.signing import CommandVerifier, load_public_keys

        return CommandVerifier(load_public_keys(self.public_file), device)
