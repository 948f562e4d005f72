"""TLS (server certificate check, client certificate) and username/password of the MQTT link against a real
mosquitto, with a throwaway CA made by the openssl CLI. edge.central.server.Central, with the same kind of settings, plays
the central server and acknowledges what arrives."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

from edge.attendance import AttendanceEvent, EventType
from edge.central.server import Central
from edge.config import DeviceConfig
from edge.mqtt.contract import MqttConfig, TlsConfig
from edge.mqtt.link import Link, LinkInfo
from edge.store import EventContext, EventStore, StoredEvent
from tests.support import Mosquitto, free_port, mosquitto_unavailable, wait_until


def _tools_missing() -> Optional[str]:
    missing = mosquitto_unavailable()
    if missing:
        return missing
    for tool in ("openssl", "mosquitto_passwd"):
        if shutil.which(tool) is None:
            return f"{tool} not found on PATH (Debian packages openssl, mosquitto): cannot make TLS test material"
    return None


pytestmark = pytest.mark.skipif(_tools_missing() is not None, reason=str(_tools_missing()))

DEVICE = DeviceConfig(id="box-tls", site="lab")
INFO = LinkInfo(software_version="1.2.3", model_id="sface-int8", config_hash="abc123", gallery_version=4)
USER, PASSWORD = "box", "s3cret-pass"

OPENSSL_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = placeholder
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    """A CA that did not sign the server's certificate."""
    passwords: Path


def _run(*cmd: str) -> None:
    done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"{' '.join(cmd)} failed: {done.stderr}"


def _new_key(folder: Path, name: str) -> Path:
    key = folder / f"{name}.key"
    _run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-out", str(key))
    return key


def _make_ca(folder: Path, cnf: Path, name: str) -> tuple[Path, Path]:
    key = _new_key(folder, name)
    cert = folder / f"{name}.crt"
    _run("openssl", "req", "-x509", "-config", str(cnf), "-extensions", "ca", "-key", str(key), "-out", str(cert),
         "-days", "2", "-subj", f"/CN=edge test {name}")  # fmt: skip
    return cert, key


def _make_leaf(folder: Path, cnf: Path, name: str, ca: tuple[Path, Path], serial: int) -> tuple[Path, Path]:
    key = _new_key(folder, name)
    csr, cert = folder / f"{name}.csr", folder / f"{name}.crt"
    _run("openssl", "req", "-new", "-config", str(cnf), "-key", str(key), "-out", str(csr), "-subj", f"/CN={name}")
    _run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-set_serial",
         str(serial), "-days", "2", "-extfile", str(cnf), "-extensions", name.split("-")[0], "-out", str(cert))  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    cnf = folder / "openssl.cnf"
    cnf.write_text(OPENSSL_CNF)
    ca = _make_ca(folder, cnf, "ca")
    server = _make_leaf(folder, cnf, "server", ca, 1001)
    client = _make_leaf(folder, cnf, "client", ca, 1002)
    other_ca, _ = _make_ca(folder, cnf, "other-ca")
    passwords = folder / "passwords"
    _run("mosquitto_passwd", "-c", "-b", str(passwords), USER, PASSWORD)
    return Pki(ca[0], server[0], server[1], client[0], client[1], other_ca, passwords)


@dataclass
class TlsBroker:
    mosquitto: Mosquitto
    tls_port: int

    def log(self) -> str:
        path = self.mosquitto.log
        return path.read_text(errors="replace") if path.exists() else ""


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@pytest.fixture
def broker(tmp_path: Path, pki: Pki) -> Iterator[TlsBroker]:
    """mosquitto with its plain listener (used by support.Mosquitto to see it is up) and a TLS listener that wants
    a client certificate from the CA. Without per_listener_settings, password_file and allow_anonymous are global:
    every client, on either listener, needs the username and password."""
    tls_port = free_port()
    extra = (
        f"\nlistener {tls_port} 127.0.0.1\n"
        f"cafile {pki.ca}\ncertfile {pki.server_cert}\nkeyfile {pki.server_key}\n"
        "require_certificate true\n"
        f"password_file {pki.passwords}\nallow_anonymous false\n"
    )
    mosquitto = Mosquitto(tmp_path / "broker", free_port(), extra=extra)
    mosquitto.start()
    try:
        assert wait_until(lambda: _listening(tls_port), 5), f"no TLS listener on {tls_port}"
        yield TlsBroker(mosquitto, tls_port)
    finally:
        mosquitto.kill()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    with EventStore(tmp_path / "edge.db", DEVICE.id) as events:
        yield events


def tls_config(pki: Pki, **changes: Any) -> TlsConfig:
    base: Dict[str, Any] = dict(ca_file=str(pki.ca), cert_file=str(pki.client_cert), key_file=str(pki.client_key))
    base.update(changes)
    return TlsConfig(**base)


def mqtt_config(port: int, tls: TlsConfig, password: str = PASSWORD) -> MqttConfig:
    return MqttConfig(
        host="127.0.0.1",
        port=port,
        username=USER,
        password=password,
        tls=tls,
        keepalive_s=5,
        reconnect_min_s=0.1,
        reconnect_max_s=0.5,
        redeliver_after_s=1.0,
    )


def append(store: EventStore, n: int) -> List[StoredEvent]:
    now = datetime.now(timezone.utc)
    events = [
        AttendanceEvent(EventType.ENTRY, f"p{i}", "door-in", now, now, "day", f"t{i}", 0.8, 0.2, 5, 0.9)
        for i in range(n)
    ]
    return store.append(
        events, EventContext(gallery_version=4, model_id="sface-int8", mono_time=1.0, wall_time=time.time())
    )


def outbox_rows(store: EventStore) -> List[tuple[int, Optional[str], Optional[str]]]:
    return [tuple(r) for r in store.db.conn.execute("SELECT seq, published_at, acked_at FROM events ORDER BY seq")]


def link_warnings(caplog: pytest.LogCaptureFixture) -> List[str]:
    return [r.getMessage() for r in caplog.records if r.name == "edge.mqtt.link" and r.levelno >= logging.WARNING]


# ---------------------------------------------------------------- the good case


def test_tls_with_client_certificate_and_password_delivers_and_gets_acked(
    tmp_path: Path, pki: Pki, broker: TlsBroker, store: EventStore
) -> None:
    tls = tls_config(pki)
    central = Central(
        "127.0.0.1", broker.tls_port, tmp_path / "central.db", username=USER, password=PASSWORD, tls=tls,
        client_id="central-tls",
    )  # fmt: skip
    with central:
        central.start()
        assert central.wait_connected(10), f"the central did not connect over TLS: {broker.log()}"
        link = Link(mqtt_config(broker.tls_port, tls), DEVICE, store.path, INFO)
        link.start()
        try:
            assert wait_until(lambda: link.connected, 10), f"the link did not connect over TLS: {broker.log()}"
            stored = append(store, 3)
            link.notify_new_events()
            assert wait_until(lambda: store.oldest_unacked() is None, 10), link.outbox_stats()
            assert wait_until(lambda: (central.status_of(DEVICE.site, DEVICE.id) or {}).get("state") == "online", 5)
        finally:
            link.close()
        received = central.events(DEVICE.id)
        counts = central.counts()
    assert sorted(e["event_id"] for e in received) == sorted(s.event_id for s in stored)
    assert counts.get("invalid", 0) == 0 and counts.get("events") == 3
    rows = outbox_rows(store)
    assert [seq for seq, _, _ in rows] == [1, 2, 3]
    assert all(published and acked for _, published, acked in rows), rows


# ---------------------------------------------------------------- refused: the link waits, keeps events, logs why


def _assert_kept_and_not_connected(link: Link, store: EventStore, n: int) -> None:
    time.sleep(0.5)  # a few reconnect attempts (reconnect_max_s=0.5) go by
    assert not link.connected
    assert link.outbox_stats()["depth"] == n
    assert outbox_rows(store) == [(seq, None, None) for seq in range(1, n + 1)]
    assert link._thread is not None and link._thread.is_alive(), "the outbox thread died"


def test_wrong_password_is_refused_and_events_stay_in_sqlite(
    pki: Pki, broker: TlsBroker, store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="edge.mqtt.link")
    append(store, 4)
    link = Link(mqtt_config(broker.tls_port, tls_config(pki), password="wrong"), DEVICE, store.path, INFO)
    link.start()
    try:
        link.notify_new_events()
        assert wait_until(lambda: any("refused" in w for w in link_warnings(caplog)), 10), (
            link_warnings(caplog),
            broker.log(),
        )
        _assert_kept_and_not_connected(link, store, 4)
    finally:
        link.close()
    warnings = link_warnings(caplog)
    assert any("refused" in w and "authorized" in w for w in warnings), warnings  # paho's reason: "Not authorized"
    assert not any("connected to the broker" in w for w in warnings), warnings


def test_a_refused_connection_is_logged_once_not_on_every_retry(
    pki: Pki, broker: TlsBroker, store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="edge.mqtt.link")
    link = Link(mqtt_config(broker.tls_port, tls_config(pki), password="wrong"), DEVICE, store.path, INFO)
    link.start()
    try:
        assert wait_until(lambda: any("refused" in w for w in link_warnings(caplog)), 10), broker.log()
        time.sleep(1.2)  # at least two more retries (reconnect_max_s=0.5)
    finally:
        link.close()
    warnings = link_warnings(caplog)
    assert len(warnings) == 1 and "refused" in warnings[0], warnings


@pytest.mark.parametrize(
    "case",
    ["ca that did not sign the server", "no client certificate"],
)
def test_bad_tls_settings_do_not_connect_and_events_stay_in_sqlite(
    case: str, pki: Pki, broker: TlsBroker, store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="edge.mqtt.link")
    if case == "ca that did not sign the server":
        tls = tls_config(pki, ca_file=str(pki.other_ca))
    else:
        tls = tls_config(pki, cert_file=None, key_file=None)
    append(store, 2)
    link = Link(mqtt_config(broker.tls_port, tls), DEVICE, store.path, INFO)
    link.start()
    try:
        link.notify_new_events()
        assert wait_until(lambda: bool(link_warnings(caplog)), 10), broker.log()
        _assert_kept_and_not_connected(link, store, 2)
    finally:
        link.close()
    warnings = link_warnings(caplog)
    assert warnings and not any("connected to the broker" in w for w in warnings), warnings
    assert any("kept in SQLite" in w for w in warnings), warnings
