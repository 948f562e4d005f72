"""The broker set-up of `edge broker` against a real mosquitto (password_file + acl_file, no anonymous clients):
each box only its own topics, only the central publishes acks and gallery commands, strangers are refused."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner
from support import REPO, CentralKeys, Mosquitto, edge_command, free_port, mosquitto_unavailable, wait_until

from edge.central.server import Central, remove
from edge.mqtt.broker_cli import broker as broker_cli
from edge.mqtt.contract import Topics

PREFIX, SITE = "edge/v1", "school-1"
A, B = Topics.of(PREFIX, SITE, "box-a"), Topics.of(PREFIX, SITE, "box-b")


@dataclass
class AclBroker:
    server: Mosquitto
    passwords: Dict[str, str]

    @property
    def port(self) -> int:
        return self.server.port


def run_broker_cli(*args: str) -> str:
    out = CliRunner().invoke(broker_cli, list(args))
    assert out.exit_code == 0, out.output
    return out.output


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[AclBroker]:
    """mosquitto set up as the README says, through `edge broker`: the central and boxes box-a and box-b."""
    if mosquitto_unavailable():
        pytest.skip(str(mosquitto_unavailable()))
    etc = tmp_path / "etc"
    passwd, acl = etc / "edge.passwd", etc / "edge.acl"
    run_broker_cli("acl", "--prefix", PREFIX, "-o", str(acl))
    for user in ("edge-central", "edge-operator"):
        run_broker_cli("add-central", "--user", user, "--password-file", str(passwd),
                       "--secret-out", str(etc / f"{user}.secret"))  # fmt: skip
    for box in ("box-a", "box-b"):
        args = ["--site", SITE, "--device", box, "--secret-out", str(etc / f"{box}.secret")]
        run_broker_cli("add-box", "--password-file", str(passwd), *args)
    conf = run_broker_cli("conf", "--password-file", str(passwd), "--acl-file", str(acl))
    server = Mosquitto(tmp_path / "broker", free_port())
    server.conf.write_text(server.conf.read_text().replace("allow_anonymous true\n", "") + conf)
    server.start()
    users = ("edge-central", "edge-operator", "box-a", "box-b")
    secrets = {user: (etc / f"{user}.secret").read_text().strip() for user in users}
    try:
        yield AclBroker(server, secrets)
    finally:
        server.kill()


class Client:
    """A paho client logged in as `user` (None: anonymous), recording what it receives."""

    def __init__(self, port: int, user: object, password: object = None, client_id: str = "") -> None:
        self.received: List[Tuple[str, bytes]] = []
        self.connack: List[str] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"edge-{user}")
        if isinstance(user, str):
            self.client.username_pw_set(user, str(password))
        self.client.on_connect = lambda _c, _u, _f, reason, _p: self.connack.append(str(reason))
        self.client.on_message = lambda _c, _u, msg: self.received.append((msg.topic, bytes(msg.payload)))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert wait_until(lambda: bool(self.connack), 5)

    def subscribe(self, *topics: str) -> None:
        self.client.subscribe([(t, 1) for t in topics])

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def payloads(self) -> List[bytes]:
        return [p for _, p in self.received]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_strangers_and_wrong_passwords_are_refused(acl_broker: AclBroker) -> None:
    anonymous = Client(acl_broker.port, None, client_id="stranger")
    wrong = Client(acl_broker.port, "box-a", acl_broker.passwords["box-b"])
    unknown = Client(acl_broker.port, "box-c", acl_broker.passwords["box-a"])
    try:
        for client in (anonymous, wrong, unknown):
            assert client.connack == ["Not authorized"], client.connack
    finally:
        for client in (anonymous, wrong, unknown):
            client.close()


def test_a_box_login_reaches_only_its_own_topics(acl_broker: AclBroker) -> None:
    pw = acl_broker.passwords
    central = Client(acl_broker.port, "edge-central", pw["edge-central"], "edge-central")
    box_a = Client(acl_broker.port, "box-a", pw["box-a"])
    box_b = Client(acl_broker.port, "box-b", pw["box-b"])
    clients = (central, box_a, box_b)
    try:
        for client in clients:
            assert client.connack == ["Success"], client.connack
        central.subscribe(f"{PREFIX}/#")
        box_b.subscribe(B.ack, B.gallery_command)
        # box A tries to listen to everything, and to box B's events and commands in particular
        box_a.subscribe(f"{PREFIX}/#", B.events, B.gallery_command, B.ack, A.ack, A.gallery_command)
        time.sleep(0.5)
        forged = {  # box A publishing where it must not
            B.events: b"A-forges-B-event", B.status: b"A-spoofs-B-status", B.stats: b"A-forges-B-stats",
            B.gallery_result: b"A-forges-B-result", B.camera_status("door"): b"A-forges-B-camera",
            B.ack: b"A-acks-B", B.gallery_command: b"A-commands-B",
            A.ack: b"A-acks-itself", A.gallery_command: b"A-commands-itself", B.crop: b"A-forges-B-crop",
        }  # fmt: skip
        for topic, payload in forged.items():
            box_a.publish(topic, payload, retain=topic.endswith("status"))
        box_b.publish(B.events, b"B-event")
        central.publish(B.gallery_command, b"central-commands-B")
        central.publish(B.ack, b"central-acks-B")
        central.publish(A.gallery_command, b"central-commands-A")
        box_a.publish(A.crop, b"A-crop")  # its own face crop (crops.upload)
        box_a.publish(A.events, b"A-event")  # last: once the central has it, everything before was routed
        assert wait_until(lambda: b"A-event" in central.payloads(), 5), central.received
        time.sleep(0.3)
        assert sorted(central.payloads()) == sorted(
            [b"B-event", b"central-commands-B", b"central-acks-B", b"central-commands-A", b"A-crop", b"A-event"]
        )
        assert sorted(box_b.payloads()) == [b"central-acks-B", b"central-commands-B"]
        assert box_a.payloads() == [b"central-commands-A"]  # its own command from the central, nothing else
    finally:
        for client in clients:
            client.close()


def test_one_login_cannot_take_over_another_logins_session(acl_broker: AclBroker) -> None:
    """Box B's login connecting with box A's client id would take over box A's session and drop its connection;
    with `use_username_as_clientid` the broker gives each login its own id, so box A stays connected and keeps
    receiving its commands."""
    pw = acl_broker.passwords
    drops: List[str] = []
    box_a = Client(acl_broker.port, "box-a", pw["box-a"])
    box_a.client.on_disconnect = lambda *args: drops.append("dropped")
    box_a.subscribe(A.gallery_command)
    thief = Client(acl_broker.port, "box-b", pw["box-b"], "edge-box-a")
    central = Client(acl_broker.port, "edge-central", pw["edge-central"])
    try:
        assert thief.connack == ["Success"]
        time.sleep(1.0)
        central.publish(A.gallery_command, b"for-box-a")
        assert wait_until(lambda: b"for-box-a" in box_a.payloads(), 5), (drops, box_a.received)
        assert drops == [] and thief.payloads() == []
    finally:
        for client in (thief, central, box_a):
            client.close()


def test_add_box_writes_owner_only_credentials_and_keeps_device_ids_unique(tmp_path: Path) -> None:
    passwd, secret = tmp_path / "edge.passwd", tmp_path / "box-a.secret"
    args = ["add-box", "--password-file", str(passwd), "--site", SITE, "--device", "box-a", "--secret-out", str(secret)]
    out = run_broker_cli(*args)
    assert "user name as its client id" in out
    assert stat.S_IMODE(passwd.stat().st_mode) == 0o600 and stat.S_IMODE(secret.stat().st_mode) == 0o600
    first = secret.read_text()
    assert passwd.read_text().startswith("box-a:") and first.strip() not in passwd.read_text()  # hashed there
    again = CliRunner().invoke(broker_cli, args)
    assert again.exit_code == 1 and "already has a user 'box-a'" in again.output and secret.read_text() == first
    assert CliRunner().invoke(broker_cli, [*args, "--replace"]).exit_code == 0 and secret.read_text() != first
    bad = CliRunner().invoke(broker_cli, [*args[:-3], "box/+", "--secret-out", str(secret)])
    assert bad.exit_code == 1 and "user name must be" in bad.output


def test_the_daemon_and_the_central_work_under_the_acl(
    acl_broker: AclBroker, tmp_path: Path, central_keys: CentralKeys
) -> None:
    """Everything a box needs is granted: its retained status and last will, reading commands, answering them."""
    config = tmp_path / "edge.yml"
    config.write_text(
        f"device: {{id: box-a, site: {SITE}}}\nstorage: {{database: {tmp_path / 'box.db'}}}\n"
        f"mqtt:\n  host: 127.0.0.1\n  port: {acl_broker.port}\n  username: box-a\n"
        f"  password: '{acl_broker.passwords['box-a']}'\n  central_key_file: {central_keys.public_file}\n"
        "  reconnect_min_s: 0.2\n  reconnect_max_s: 1.0\n  keepalive_s: 5\n"
        "cameras: []\n"
    )
    central = Central("127.0.0.1", acl_broker.port, tmp_path / "central.db", username="edge-central",
                      password=acl_broker.passwords["edge-central"], key_file=central_keys.key_file)  # fmt: skip
    with open(tmp_path / "edge.log", "w") as log:
        daemon = subprocess.Popen(
            [*edge_command(), "--config", str(config), "run"], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        central.start()
        assert wait_until(lambda: (central.status_of(SITE, "box-a") or {}).get("state") == "online", 30), (
            tmp_path / "edge.log"
        ).read_text()
        result = central.push(SITE, "box-a", remove("nobody"), timeout=20)
        assert result["status"] == "rejected" and "nobody" in result["reason"]  # read, verified, applied, answered
        daemon.kill()  # no goodbye: the broker publishes the box's last will on its own status topic
        daemon.wait(10)
        assert wait_until(lambda: central.status_of(SITE, "box-a")["state"] == "offline", 20)  # type: ignore[index]
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(10)
        central.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="install_box.sh --broker-login runs as root")
def test_the_installer_gives_each_box_a_login_on_the_broker(tmp_path: Path) -> None:
    if mosquitto_unavailable():
        pytest.skip(str(mosquitto_unavailable()))
    etc, secrets = tmp_path / "mosquitto", tmp_path / "secrets"
    (etc / "conf.d").mkdir(parents=True)
    secrets.mkdir()
    wrapper = tmp_path / "edge"
    wrapper.write_text(f'#!/bin/sh\nexec {" ".join(edge_command())} "$@"\n')
    wrapper.chmod(0o755)
    env = {**os.environ, "EDGE": str(wrapper), "MOSQUITTO_ETC": str(etc), "EDGE_SECRETS": str(secrets)}
    for box in ("box-a", "box-b"):
        done = subprocess.run(["bash", str(REPO / "scripts" / "install_box.sh"), "--broker-login", SITE, box],
                              env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"copy {secrets}/edge-{box}.secret to the box" in done.stdout
    assert sorted(p.name for p in secrets.iterdir()) == [
        "edge-box-a.secret",
        "edge-box-b.secret",
        "edge-central.secret",
        "edge-operator.secret",
    ]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in secrets.iterdir())
    server = Mosquitto(tmp_path / "broker", free_port())
    conf = (etc / "conf.d" / "edge.conf").read_text()
    server.conf.write_text(server.conf.read_text().replace("allow_anonymous true\n", "") + conf)
    server.start()
    clients = []
    try:
        for user in ("edge-central", "edge-operator", "box-a", "box-b"):
            clients.append(
                Client(server.port, user, (secrets / f"edge-{user.removeprefix('edge-')}.secret").read_text().strip())
            )
            assert clients[-1].connack == ["Success"], user
        clients.append(Client(server.port, None, client_id="stranger"))
        assert clients[-1].connack == ["Not authorized"]
    finally:
        for client in clients:
            client.close()
        server.kill()


def test_hostile_gallery_commands_change_nothing_and_the_daemon_keeps_running(
    acl_broker: AclBroker, tmp_path: Path, central_keys: CentralKeys
) -> None:
    """Forged, tampered, cross-device, expired, replayed and retained commands, from another box's login, a stolen
    central login without the key, and no login at all: each refused; only the genuine command changes the gallery."""
    from edge.gallery.store import Gallery, NewEmbedding
    from edge.mqtt.contract import encode
    from edge.mqtt.signing import generate_keys, load_private_key, sign_command

    db, pw = tmp_path / "box.db", acl_broker.passwords
    with Gallery(db) as gallery:
        vector = np.full(128, 128**-0.5, np.float32)
        for person_id in ("s1", "s2"):
            gallery.put_person(person_id, person_id, [NewEmbedding(vector, "m", 0.9, "test")])
    config = tmp_path / "edge.yml"
    config.write_text(
        f"device: {{id: box-a, site: {SITE}}}\nstorage: {{database: {db}}}\n"
        f"mqtt:\n  host: 127.0.0.1\n  port: {acl_broker.port}\n  username: box-a\n"
        f"  password: '{pw['box-a']}'\n  central_key_file: {central_keys.public_file}\n"
        "  reconnect_min_s: 0.2\n  reconnect_max_s: 1.0\n  keepalive_s: 5\ncameras: []\n"
    )
    generate_keys(tmp_path / "intruder.key", tmp_path / "intruder.pub")
    intruder = load_private_key(tmp_path / "intruder.key")
    central = Central("127.0.0.1", acl_broker.port, tmp_path / "central.db", username="edge-central",
                      password=pw["edge-central"], key_file=central_keys.key_file)  # fmt: skip
    stolen = Client(acl_broker.port, "edge-operator", pw["edge-operator"], "attacker-with-a-central-login")
    box_b = Client(acl_broker.port, "box-b", pw["box-b"])
    with open(tmp_path / "edge.log", "w") as log:
        daemon = subprocess.Popen(
            [*edge_command(), "--config", str(config), "run"], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        central.start()
        assert wait_until(lambda: (central.status_of(SITE, "box-a") or {}).get("state") == "online", 30)

        def erase(person_id: str) -> Dict[str, object]:
            return {"schema": "edge.gallery_command/1", "request_id": f"r-{person_id}-{time.time_ns()}",
                    "op": "remove", "person_id": person_id}  # fmt: skip

        now = datetime.now(timezone.utc)
        tampered = central_keys.sign(erase("s2"), f"{SITE}/box-a")
        tampered["person_id"] = "s1"
        refused = {
            "unsigned": erase("s1"),
            "signed by another key": sign_command(erase("s1"), intruder, f"{SITE}/box-a", 60),
            "tampered": tampered,
            "for box-b": central_keys.sign(erase("s1"), f"{SITE}/box-b"),
            "expired": sign_command(
                erase("s1"), central_keys.private_key, f"{SITE}/box-a", 60, now - timedelta(seconds=120)
            ),  # fmt: skip
        }
        for cmd in refused.values():
            stolen.publish(A.gallery_command, encode(cmd))
        from_box_b = central_keys.sign(erase("s1"), f"{SITE}/box-a")  # a genuine command, but sent with B's login
        box_b.publish(A.gallery_command, encode(from_box_b))
        anonymous = Client(acl_broker.port, None, client_id="stranger")
        assert anonymous.connack == ["Not authorized"]
        anonymous.close()
        for name, cmd in refused.items():
            assert wait_until(lambda: central.result(cmd["request_id"]) is not None, 20), name  # noqa: B023
            result = central.result(cmd["request_id"])
            assert result is not None and result["status"] == "rejected", (name, result)

        genuine = central_keys.sign(erase("s2"), f"{SITE}/box-a")
        stolen.publish(A.gallery_command, encode(genuine))
        assert wait_until(lambda: (central.result(genuine["request_id"]) or {}).get("status") == "ok", 20)
        stolen.publish(A.gallery_command, encode(genuine))  # replayed
        stolen.publish(A.gallery_command, encode(genuine), retain=True)  # and left retained for every reconnect
        time.sleep(1.5)
        assert central.result(from_box_b["request_id"]) is None  # the broker never delivered box B's publish
        assert daemon.poll() is None
        with Gallery(db) as gallery:
            assert [p.person_id for p in gallery.people()] == ["s1"]  # only the genuine command took effect
        assert central.push(SITE, "box-a", erase("nobody"), timeout=20)["status"] == "rejected"  # still serving
    finally:
        daemon.kill()
        daemon.wait(10)
        for client in (stolen, box_b):
            client.close()
        central.close()
    assert "Traceback" not in (tmp_path / "edge.log").read_text()


def test_central_workers_with_their_own_logins_share_a_boxs_events_under_the_acl(tmp_path: Path) -> None:
    """A fleet's central workers (edge central run --share-group, one login each, as use_username_as_clientid
    requires) subscribe through $share/<group>/...: under the ACL each event reaches exactly one of them."""
    if mosquitto_unavailable():
        pytest.skip(str(mosquitto_unavailable()))
    etc = tmp_path / "etc"
    passwd, acl = etc / "edge.passwd", etc / "edge.acl"
    workers = ("edge-central-1", "edge-central-2")
    run_broker_cli("acl", "--prefix", PREFIX, *[a for w in workers for a in ("--central-user", w)], "-o", str(acl))
    for user in workers:
        run_broker_cli("add-central", "--user", user, "--password-file", str(passwd),
                       "--secret-out", str(etc / f"{user}.secret"))  # fmt: skip
    run_broker_cli("add-box", "--password-file", str(passwd), "--site", SITE, "--device", "box-a",
                   "--secret-out", str(etc / "box-a.secret"))  # fmt: skip
    conf = run_broker_cli("conf", "--password-file", str(passwd), "--acl-file", str(acl))
    server = Mosquitto(tmp_path / "broker", free_port())
    server.conf.write_text(server.conf.read_text().replace("allow_anonymous true\n", "") + conf)
    server.start()
    secret = {u: (etc / f"{u}.secret").read_text().strip() for u in (*workers, "box-a")}
    clients = []
    try:
        consumers = [Client(server.port, user, secret[user]) for user in workers]
        clients += consumers
        for consumer in consumers:
            consumer.subscribe(f"$share/central/{PREFIX}/+/+/events")
        time.sleep(0.5)
        box = Client(server.port, "box-a", secret["box-a"])
        clients.append(box)
        sent = [f"event {k}".encode() for k in range(20)]
        for payload in sent:
            box.publish(f"{PREFIX}/{SITE}/box-a/events", payload)
        assert wait_until(lambda: sum(len(c.received) for c in consumers) >= len(sent), 10)
        time.sleep(0.5)
        got = [p for c in consumers for p in c.payloads()]
        assert sorted(got) == sorted(sent), "each event to exactly one worker"
    finally:
        for client in clients:
            client.close()
        server.kill()
