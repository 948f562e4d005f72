from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from edge.config import Config, load_config
from edge.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config" / "edge.example.yml"


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "edge.yml"
    path.write_text(text)
    return load_config(path)


def test_example_config_is_valid_and_documents_every_key() -> None:
    config = load_config(EXAMPLE)
    text = EXAMPLE.read_text()

    def walk(obj: object, prefix: str) -> None:
        for f in dataclasses.fields(obj):  # type: ignore[arg-type]
            value = getattr(obj, f.name)
            assert f"{f.name}:" in text, f"config/edge.example.yml does not document {prefix}{f.name}"
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{f.name}.")

    walk(config, "")


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load(tmp_path, "") == Config()


def test_values_are_typed(tmp_path: Path) -> None:
    config = load(tmp_path, "matcher:\n  threshold: 0.5\n  top_k: 4\nembedder:\n  num_threads: 1\n")
    assert config.matcher.threshold == 0.5 and config.matcher.top_k == 4
    assert config.embedder.num_threads == 1


@pytest.mark.parametrize(
    "text, message",
    [
        ("matcher:\n  treshold: 0.5\n", r"matcher\.treshold \(line 2\): unknown key"),
        ("bogus: 1\n", r"bogus \(line 1\): unknown key"),
        ("matcher:\n  threshold: high\n", r"matcher\.threshold \(line 2\): expected a number"),
        ("embedder:\n  num_threads: 2.5\n", r"embedder\.num_threads \(line 2\): expected an integer"),
        ("embedder:\n  num_threads: 0\n", r"embedder \(line 2\): num_threads must be within 1..16"),
        ("matcher: [1, 2]\n", r"matcher \(line 1\): expected a mapping"),
        ("quality:\n  max_yaw_deg: 120\n", r"quality \(line 2\): max_yaw_deg"),
        ("device:\n  id: 'has space'\n", r"device \(line 2\): id must be"),
        ("matcher:\n  threshold: 0.5\n  threshold: 0.6\n", r"matcher\.threshold \(line 3\): key given twice"),
        ("matcher: {threshold: [0.5\n", "not valid YAML"),
        ("cameras:\n  - id: door\n    role: entrance\n", r"cameras\[0\]\.url \(line 2\): required key is missing"),
        (
            "cameras:\n  - {id: door, kind: rtsp, url: 'http://x'}\n",
            r"cameras\[0\] \(line 2\): url must start with rtsp",
        ),
        ("cameras:\n  - {id: door, url: 'rtsp://x', role: line}\n", r"cameras\[0\] \(line 2\): line must be given"),
        (
            "cameras:\n  - {id: door, url: a.mp4, max_fps: fast}\n",
            r"cameras\[0\]\.max_fps \(line 2\): expected a number",
        ),
        (
            "attendance:\n  schedule:\n    sessions:\n      - {name: am, start: '25:00', end: '12:00'}\n",
            r"attendance\.schedule\.sessions\[0\] \(line 4\): start",
        ),
        (
            "attendance:\n  schedule:\n    sessions:\n      - {name: am, start: '09:00', end: '08:00'}\n",
            r"attendance\.schedule\.sessions\[0\] \(line 4\): end must be after start",
        ),
        ("attendance:\n  cooldown_s: -1\n", r"attendance \(line 2\): cooldown_s must be >= 0"),
        ("device:\n  timezone: Mars/Olympus\n", r"device \(line 2\): timezone must be an IANA zone"),
        ("mqtt:\n  host: b\n  tls: {ca_file: /nonexistent/ca.pem}\n", r"mqtt\.tls \(line 3\): ca_file /nonexistent"),
        ("mqtt:\n  port: 99999\n", r"mqtt \(line 2\): port must be within"),
        ("mqtt:\n  prefix: 'edge/#'\n", r"mqtt \(line 2\): prefix must be"),
    ],
)
def test_errors_name_the_key_and_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, text)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "nope.yml")
