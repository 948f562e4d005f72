"""A real, throwaway PostgreSQL for the tests: one cluster per test session (initdb into a temporary folder,
listening only on a unix socket there), a fresh empty database per test.

    from pg import postgres, postgres_server   # noqa: F401  (pytest finds fixtures imported into a test module)

    def test_something(postgres: str) -> None:  # postgres: the URL of an empty database, postgresql://...
        store = open_store(postgres)

Debian's postgresql package (scripts/install_system_deps.sh) puts its binaries in /usr/lib/postgresql/<major>/bin;
PG_BIN overrides the folder. Without them, or without psycopg, the tests that ask for `postgres` skip and say why.
initdb refuses to run as root: as root the cluster belongs to the `postgres` OS user (the package creates it) and
its folder is made for that user; otherwise it belongs to whoever runs the tests.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator, List, Optional
from urllib.parse import quote

import pytest

SUPERUSER = "edge_test"
"""The cluster's superuser role (not the OS user): every test connects as it."""


def pg_bin() -> Optional[Path]:
    """The folder with initdb and pg_ctl: PG_BIN, or the newest /usr/lib/postgresql/<major>/bin; None: absent."""
    if os.environ.get("PG_BIN"):
        folder = Path(os.environ["PG_BIN"])
        return folder if (folder / "initdb").is_file() else None
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def postgres_unavailable() -> Optional[str]:
    """Why a real PostgreSQL cannot be started here, or None."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[central]')"
    if pg_bin() is None:
        return "PostgreSQL's initdb/pg_ctl not found (apt-get install postgresql, or set PG_BIN)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' OS user to own the test cluster"
    return None


class PgServer:
    """A PostgreSQL cluster of our own in a temporary folder, reached through a unix socket in that folder."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="edge-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root
        self.port = 5432  # only a unix socket: the port just names the socket file
        self._as_user: List[str] = []
        self._names = itertools.count(1)
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        cmd = [*self._as_user, *args]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")

    def start(self) -> None:
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "--username", SUPERUSER, "--auth", "trust",
            "--encoding", "UTF8", "--locale", "C", "--no-sync",
        )  # fmt: skip
        options = f"-c listen_addresses='' -c unix_socket_directories='{self.socket_dir}' -p {self.port} " \
                  "-c fsync=off -c full_page_writes=off -c max_connections=200"  # fmt: skip
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-o", options,
                  "-w", "-t", "60", "start")  # fmt: skip

    def stop(self) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, dbname: str = "postgres") -> str:
        """A libpq URL to `dbname` through the socket folder."""
        return f"postgresql://{SUPERUSER}@/{dbname}?host={quote(str(self.socket_dir), safe='')}&port={self.port}"

    def create_database(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PgServer]:
    """One throwaway PostgreSQL cluster for the session; skips with the reason when it cannot run here."""
    reason = postgres_unavailable()
    if reason:
        pytest.skip(reason)
    bin_dir = pg_bin()
    assert bin_dir is not None
    server = PgServer(bin_dir)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres(postgres_server: PgServer) -> str:
    """The URL (postgresql://...) of a fresh, empty database in the session's throwaway cluster."""
    return postgres_server.create_database()
