"""Signed gallery commands (edge.mqtt.signing): keys, canonical bytes, and a timed-out push refused by the box later on."""

from __future__ import annotations

import json
import stat
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, List, cast

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner
from support import CentralKeys, Mosquitto, wait_until

from edge.central.cli import central as central_cli
from edge.central.server import Central, CentralError, remove
from edge.gallery.store import Gallery, NewEmbedding
from edge.gallery.sync import GallerySync
from edge.mqtt.contract import Topics
from edge.mqtt.signing import (
    CommandRefused,
    KeyFileError,
    canonical_bytes,
    load_private_key,
    load_public_keys,
    sign_command,
)
from edge.recognize import Recognizer

SITE, DEVICE = "school-1", "box-17"
BOX = f"{SITE}/{DEVICE}"


def test_keygen_writes_an_owner_only_private_key_and_never_replaces_one(tmp_path: Path) -> None:
    key, pub = tmp_path / "c" / "central.key", tmp_path / "c" / "central.pub"
    args = ["keygen", "--key-file", str(key), "--public-file", str(pub)]
    out = CliRunner().invoke(central_cli, args)
    assert out.exit_code == 0, out.output
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in key.read_bytes() and b"PRIVATE" not in pub.read_bytes()
    load_private_key(key), load_public_keys(pub)
    before = key.read_bytes()
    again = CliRunner().invoke(central_cli, args)
    assert again.exit_code == 1 and "exists" in again.output and key.read_bytes() == before


def test_key_files_that_are_not_ed25519_keys_are_named(tmp_path: Path, central_keys: CentralKeys) -> None:
    with pytest.raises(KeyFileError, match="cannot be read"):
        load_public_keys(tmp_path / "missing.pub")
    junk = tmp_path / "junk.pub"
    junk.write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    with pytest.raises(KeyFileError, match="key 1 is not a PEM public key"):
        load_public_keys(junk)
    (tmp_path / "empty.pub").write_text("\n")
    with pytest.raises(KeyFileError, match="no public key"):
        load_public_keys(tmp_path / "empty.pub")
    with pytest.raises(KeyFileError, match="not an unencrypted PEM private key"):
        load_private_key(central_keys.public_file)  # the public half given where the private key belongs


def test_the_signature_covers_the_canonical_command_only() -> None:
    a = {"op": "remove", "schema": "edge.gallery_command/1", "person_id": "김민지", "signature": "x"}
    b = {"person_id": "김민지", "schema": "edge.gallery_command/1", "op": "remove"}
    assert canonical_bytes(a) == canonical_bytes(b) == json.dumps(b, sort_keys=True, separators=(",", ":"),
                                                                  ensure_ascii=False).encode()  # fmt: skip


def test_a_command_is_signed_for_one_box_and_its_lifetime(central_keys: CentralKeys) -> None:
    now = datetime(2026, 12, 2, 9, 0, tzinfo=timezone.utc)
    command = remove("s1")
    signed = sign_command(command, central_keys.private_key, BOX, 30, now)
    assert "signature" not in command  # the caller's command is left as it was
    assert (signed["device"], signed["issued_at"], signed["expires_at"]) == (
        BOX, "2026-12-02T09:00:00.000+00:00", "2026-12-02T09:00:30.000+00:00"
    )  # fmt: skip
    verifier = central_keys.verifier(BOX)
    assert verifier.check(signed, now + timedelta(seconds=30)) == now + timedelta(seconds=30)
    with pytest.raises(CommandRefused, match="expired"):
        verifier.check(signed, now + timedelta(seconds=30.001))
    with pytest.raises(ValueError, match="lifetime"):
        sign_command(command, central_keys.private_key, BOX, 25 * 3600, now)


# a push that timed out must not be applied later ------------------------------------------------------------------


def box_session(port: int, received: List[Dict[str, Any]]) -> mqtt.Client:
    """The box's persistent session (fixed client id, clean_session False) subscribed to its commands."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"edge-{DEVICE}", clean_session=False)
    client.on_message = lambda _c, _u, msg: received.append(json.loads(msg.payload))
    client.connect("127.0.0.1", port)
    client.subscribe(Topics.of("edge/v1", SITE, DEVICE).gallery_command, qos=1)
    client.loop_start()
    return client


def test_a_timed_out_push_is_refused_when_the_box_gets_it_later(
    broker: Mosquitto, tmp_path: Path, central_keys: CentralKeys
) -> None:
    received: List[Dict[str, Any]] = []
    box = box_session(broker.port, received)
    time.sleep(0.3)
    box.disconnect()
    box.loop_stop()  # the box is offline; the broker queues its QoS 1 commands
    central = Central("127.0.0.1", broker.port, tmp_path / "c.db", client_id="pusher", store_events=False,
                      key_file=central_keys.key_file)  # fmt: skip
    try:
        central.connect()
        with pytest.raises(CentralError, match="no answer"):
            central.push(SITE, DEVICE, remove("s1"), timeout=0.5)
    finally:
        central.close()
    box = box_session(broker.port, received)  # back online after the central gave up: the queued command arrives
    try:
        assert wait_until(lambda: len(received) == 1, 10)
    finally:
        box.disconnect()
        box.loop_stop()
    with Gallery(tmp_path / "box.db") as gallery:
        gallery.put_person("s1", "S One", [NewEmbedding(np.full(128, 128**-0.5, np.float32), "m", 0.9, "test")])
        sync = GallerySync(gallery, cast(Recognizer, None), central_keys.verifier(BOX))  # refused before recognition
        result = sync.apply(received[0])
        assert result["status"] == "rejected" and "expired" in result["reason"]
        assert [p.person_id for p in gallery.people()] == ["s1"]  # the removal the central gave up on did not happen


def test_check_config_refuses_a_central_key_file_that_is_not_a_public_key(
    tmp_path: Path, central_keys: CentralKeys
) -> None:
    from edge.cli import main

    config = tmp_path / "edge.yml"
    for key_file, words in [
        (central_keys.public_file, None),
        (central_keys.key_file, "key 1 is not a PEM public key"),  # the private key copied to the box by mistake
        (tmp_path / "missing.pub", "cannot be read"),
    ]:
        config.write_text(f"mqtt:\n  central_key_file: {key_file}\n")
        out = CliRunner().invoke(main, ["check-config", str(config)])
        if words is None:
            assert out.exit_code == 0, out.output
        else:
            assert out.exit_code == 1 and "central_key_file" in out.output and words in out.output, out.output
