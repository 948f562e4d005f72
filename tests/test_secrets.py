"""Secrets and personal data stay out of logs, messages and world-readable files."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest
from click.testing import CliRunner

from edge.capture import redact
from edge.cli import main
from edge.config import load_config
from edge.credentials import ENV_PASSWORD, config_fingerprint, mqtt_password, with_mqtt_password
from edge.errors import ConfigError

PASSWORD = "s3cr-et/p@ss:word"
BROKER = "mqtt:\n  host: broker\n  username: box\n"


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


# where the MQTT password comes from ------------------------------------------------------------------------------
def test_the_password_can_come_from_a_private_file(tmp_path: Path) -> None:
    secret = write(tmp_path / "mqtt.password", PASSWORD + "\n")
    config = load_config(write(tmp_path / "edge.yml", BROKER + f"  password_file: {secret}\n"))
    assert config.mqtt.password is None  # not read by commands that do not need it
    assert with_mqtt_password(config, {}).mqtt.password == PASSWORD


def test_the_password_can_come_from_the_environment(tmp_path: Path) -> None:
    config = load_config(write(tmp_path / "edge.yml", BROKER))
    assert with_mqtt_password(config, {ENV_PASSWORD: PASSWORD}).mqtt.password == PASSWORD
    assert with_mqtt_password(config, {}).mqtt.password is None


@pytest.mark.parametrize(
    "yaml_extra, environ, message",
    [
        ("  password: x\n", {ENV_PASSWORD: PASSWORD}, "given twice \\(mqtt.password and EDGE_MQTT_PASSWORD\\)"),
        ("  password_file: {secret}\n", {ENV_PASSWORD: PASSWORD}, "given twice"),
        ("  password_file: {missing}\n", {}, "password_file .*missing.*: cannot be read \\(No such file"),
        ("  password_file: {public}\n", {}, "readable by everyone; make it private \\(chmod 600"),
        ("  password_file: {folder}\n", {}, "not a regular file"),
        ("  password_file: {two_lines}\n", {}, "must hold the password on one line"),
    ],
)
def test_password_sources_are_checked(tmp_path: Path, yaml_extra: str, environ: Dict[str, str], message: str) -> None:
    paths = {
        "secret": write(tmp_path / "secret", PASSWORD),
        "missing": tmp_path / "missing",
        "public": write(tmp_path / "public", PASSWORD, 0o644),
        "folder": tmp_path,
        "two_lines": write(tmp_path / "two", PASSWORD + "\nmore\n"),
    }
    config = load_config(write(tmp_path / "edge.yml", BROKER + yaml_extra.format(**paths)))
    with pytest.raises(ConfigError, match=message) as caught:
        with_mqtt_password(config, environ)
    assert PASSWORD not in str(caught.value)


def test_password_and_password_file_together_are_a_config_error(tmp_path: Path) -> None:
    text = BROKER + "  password: x\n  password_file: /etc/edge/mqtt.password\n"
    with pytest.raises(ConfigError, match=r"mqtt \(line 2\): give password or password_file, not both"):
        load_config(write(tmp_path / "edge.yml", text))


def test_the_environment_password_needs_a_username() -> None:
    from edge.mqtt.contract import MqttConfig

    with pytest.raises(ConfigError, match="EDGE_MQTT_PASSWORD is set but mqtt.username is not"):
        mqtt_password(MqttConfig(host="b"), {ENV_PASSWORD: "x"})


def test_check_config_reads_the_password_file(tmp_path: Path) -> None:
    public = write(tmp_path / "public", PASSWORD, 0o644)
    path = write(tmp_path / "edge.yml", BROKER + f"  password_file: {public}\n")
    result = CliRunner().invoke(main, ["check-config", str(path)])
    assert result.exit_code == 1 and "readable by everyone" in result.output and PASSWORD not in result.output
    public.chmod(0o600)
    assert CliRunner().invoke(main, ["check-config", str(path)]).output.endswith(": OK\n")


# what `edge run` hands the daemon ---------------------------------------------------------------------------------
def run_edge(monkeypatch: pytest.MonkeyPatch, config: Path, env: Dict[str, str]) -> Dict[str, Any]:
    seen: Dict[str, Any] = {}

    def fake_daemon(config: Any, stop: Any, db: Any, config_hash: str, *more: Any, **options: Any) -> None:
        seen.update(config=config, config_hash=config_hash)

    monkeypatch.setattr("edge.daemon.run", fake_daemon)
    result = CliRunner().invoke(main, ["--config", str(config), "--db", str(config.parent / "e.db"), "run"], env=env)
    assert result.exit_code == 0, result.output
    return seen


def test_the_published_config_hash_does_not_depend_on_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    camera = "cameras:\n  - {id: door, url: 'rtsp://admin:%s@cam/s'}\n"
    one = write(tmp_path / "one.yml", BROKER + "  password: 'hunter2'\n" + camera % "hunter2")
    two = write(tmp_path / "two.yml", BROKER + "  password: 'letmein'\n" + camera % "letmein")
    first, second = run_edge(monkeypatch, one, {}), run_edge(monkeypatch, two, {})
    assert first["config"].mqtt.password == "hunter2"
    assert first["config_hash"] == second["config_hash"]  # the password cannot be tested against the hash offline
    assert first["config_hash"] != hashlib.sha256(one.read_bytes()).hexdigest()
    other = write(tmp_path / "three.yml", BROKER.replace("broker", "broker2") + "  password: 'hunter2'\n")
    assert run_edge(monkeypatch, other, {})["config_hash"] != first["config_hash"]


def test_edge_run_takes_the_password_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = run_edge(monkeypatch, write(tmp_path / "edge.yml", BROKER), {ENV_PASSWORD: PASSWORD})
    assert seen["config"].mqtt.password == PASSWORD
    assert seen["config_hash"] == config_fingerprint(load_config(tmp_path / "edge.yml"))


# camera URLs ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url, shown",
    [
        ("rtsp://admin:hunter2@10.0.0.5:554/s", "rtsp://admin:***@10.0.0.5:554/s"),
        ("rtsp://10.0.0.5/s", "rtsp://10.0.0.5/s"),
        ("rtsp://admin:p@ss@10.0.0.5/s", "rtsp://admin:***@10.0.0.5/s"),
        ("rtsp://admin:a/b@c@10.0.0.5/live/1", "rtsp://admin:***@10.0.0.5/live/1"),
        ("rtsp://admin:pa:ss@cam/s", "rtsp://admin:***@cam/s"),
        ("rtsps://admin:%2F%40x@cam/s", "rtsps://admin:***@cam/s"),
        ("rtsp://cam/s?user=admin&password=hunter2&channel=1", "rtsp://cam/s?user=admin&password=***&channel=1"),
        ("/dev/video0", "/dev/video0"),
    ],
)
def test_rtsp_passwords_are_redacted(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_a_camera_url_error_does_not_show_its_password(tmp_path: Path) -> None:
    text = "cameras:\n  - {id: door, kind: rtsp, url: 'http://admin:p@ss/w0rd@cam/s'}\n"
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path / "edge.yml", text))
    assert "w0rd" not in str(caught.value) and "p@ss" not in str(caught.value)


def test_a_bad_camera_address_does_not_show_its_password() -> None:
    from edge.capture import CameraConfig, CaptureError
    from edge.capture.live import reach

    with pytest.raises(CaptureError) as caught:
        reach(CameraConfig("door", "rtsp://admin:a/b4dpass@cam/s"))
    assert "a/b4dpass" not in str(caught.value) and "a'" not in str(caught.value)


# exported events ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_exported_events_are_private(tmp_path: Path, fmt: str, umask_022: None) -> None:
    from edge.store import EventStore

    out = tmp_path / f"events.{fmt}"
    with EventStore(tmp_path / "e.db", "edge-1"):  # the box's database (export never creates one)
        pass
    runner = CliRunner()
    result = runner.invoke(main, ["--db", str(tmp_path / "e.db"), "events", "export", "--format", fmt, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    out.chmod(0o644)  # an existing file is made private too: it is about to hold attendance records
    assert runner.invoke(main, ["--db", str(tmp_path / "e.db"), "events", "export", "-o", str(out)]).exit_code == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
