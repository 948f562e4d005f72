"""The MQTT contract between a box and the central server: topics, payload builders and schema validation.

Topics, under a root `<prefix>/<site>/<device>` (prefix default `edge/v1`):

| topic                          | direction     | QoS | retained | schema                |
| ------------------------------ | ------------- | --- | -------- | --------------------- |
| `<root>/status`                | box -> server | 1   | yes      | edge.status/1 (+ LWT) |
| `<root>/cameras/<id>/status`   | box -> server | 1   | yes      | edge.camera_status/1  |
| `<root>/stats`                 | box -> server | 0   | no       | edge.stats/1          |
| `<root>/events`                | box -> server | 1   | no       | edge.event/1          |
| `<root>/ack`                   | server -> box | 1   | no       | edge.ack/1            |
| `<root>/gallery/command`       | server -> box | 1   | no       | edge.gallery_command/1|
| `<root>/gallery/result`        | box -> server | 1   | no       | edge.gallery_result/1 |
| `<root>/crop`                  | box -> server | 1   | no       | edge.crop/1 (opt-in)  |

The JSON Schemas live in `edge/schemas/`. Everything the box publishes is built here and validated by the tests;
everything it receives is checked here (size first, then JSON, then schema) before anything acts on it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any, Dict, Optional

from edge.errors import EdgeError
from edge.jsoncheck import JsonRefused, describe, error_order, load_json, strict_validator
from edge.store import StoredEvent, event_to_dict

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
SCHEMAS = {
    "edge.event/1": "event.schema.json",
    "edge.status/1": "status.schema.json",
    "edge.camera_status/1": "camera_status.schema.json",
    "edge.stats/1": "stats.schema.json",
    "edge.ack/1": "ack.schema.json",
    "edge.gallery_command/1": "gallery_command.schema.json",
    "edge.gallery_result/1": "gallery_result.schema.json",
    "edge.crop/1": "crop.schema.json",
}


class MessageError(EdgeError):
    """An incoming message is refused: too large, not JSON, or not valid against its schema."""


@dataclass(frozen=True)
class Topics:
    """All topic names of one box."""

    root: str

    @classmethod
    def of(cls, prefix: str, site: str, device: str) -> Topics:
        return cls(f"{prefix.rstrip('/')}/{site}/{device}")

    @property
    def status(self) -> str:
        return f"{self.root}/status"

    def camera_status(self, camera_id: str) -> str:
        return f"{self.root}/cameras/{camera_id}/status"

    @property
    def stats(self) -> str:
        return f"{self.root}/stats"

    @property
    def events(self) -> str:
        return f"{self.root}/events"

    @property
    def ack(self) -> str:
        return f"{self.root}/ack"

    @property
    def gallery_command(self) -> str:
        return f"{self.root}/gallery/command"

    @property
    def gallery_result(self) -> str:
        return f"{self.root}/gallery/result"

    @property
    def crop(self) -> str:
        return f"{self.root}/crop"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@cache
def _validator(schema_id: str) -> Any:
    schema = json.loads((SCHEMA_DIR / SCHEMAS[schema_id]).read_text(encoding="utf-8"))
    return strict_validator(schema)


def validate(schema_id: str, payload: Any) -> None:
    """Raise MessageError naming the first problem (its JSON path and the rule broken, never the value: names and
    embeddings must not reach logs or result messages) when `payload` breaks the schema."""
    errors = sorted(_validator(schema_id).iter_errors(payload), key=error_order)
    if errors:
        raise MessageError(f"{schema_id}: {describe(errors[0])}")


def parse(schema_id: str, raw: bytes, max_bytes: int) -> Dict[str, Any]:
    """Check an incoming payload: size, UTF-8 JSON object (nesting, numbers: edge.jsoncheck), schema. Returns the
    decoded object."""
    if len(raw) > max_bytes:
        raise MessageError(f"message of {len(raw):,} bytes is over the {max_bytes:,} byte limit")
    try:
        payload = load_json(raw)
    except JsonRefused as exc:
        raise MessageError(str(exc)) from None
    if not isinstance(payload, dict):
        raise MessageError("not a JSON object")
    validate(schema_id, payload)
    return payload


def encode(payload: Dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# payload builders ------------------------------------------------------------------------------------------------
def event_payload(stored: StoredEvent, site: str, prev_seq: Optional[int], historical: bool) -> Dict[str, Any]:
    """The event as published; `prev_seq` is None for the first seq of an epoch (`stored.first_of_epoch`)."""
    body = event_to_dict(stored)
    body.pop("mono_time", None)
    return {
        "schema": "edge.event/1",
        **body,
        "epoch": stored.epoch,
        "prev_seq": prev_seq,
        "site": site,
        "historical": historical,
    }


def status_payload(
    device_id: str,
    site: str,
    state: str,
    boot_id: str,
    *,
    software_version: Optional[str] = None,
    gallery_version: Optional[int] = None,
    model_id: Optional[str] = None,
    config_hash: Optional[str] = None,
    reason: Optional[str] = None,
) -> Dict[str, Any]:
    payload: Dict[str, Any] = {
        "schema": "edge.status/1",
        "device_id": device_id,
        "site": site,
        "state": state,
        "boot_id": boot_id,
        "at": now_iso(),
    }
    extras = {
        "software_version": software_version,
        "gallery_version": gallery_version,
        "model_id": model_id,
        "config_hash": config_hash,
        "reason": reason,
    }
    payload.update({k: v for k, v in extras.items() if v is not None})
    return payload


def camera_status_payload(device_id: str, camera_id: str, state: str, reason: str) -> Dict[str, Any]:
    return {
        "schema": "edge.camera_status/1",
        "device_id": device_id,
        "camera_id": camera_id,
        "state": state,
        "reason": reason,
        "at": now_iso(),
    }


def gallery_result_payload(
    request_id: Optional[str],
    op: Optional[str],
    status: str,
    reason: str,
    gallery_version: int,
    **extra: Any,
) -> Dict[str, Any]:
    return {
        "schema": "edge.gallery_result/1",
        "request_id": request_id,
        "op": op,
        "status": status,
        "reason": reason,
        "gallery_version": gallery_version,
        "at": now_iso(),
        **extra,
    }


def crop_payload(device_id: str, site: str, event_id: str, event_type: str, at: str, jpeg: bytes) -> Dict[str, Any]:
    """The face crop of one event (edge.crop/1): the JPEG in base64."""
    import base64

    return {
        "schema": "edge.crop/1",
        "event_id": event_id,
        "device_id": device_id,
        "site": site,
        "event_type": event_type,
        "at": at,
        "jpeg": base64.b64encode(jpeg).decode("ascii"),
    }


# configuration -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TlsConfig:
    """TLS towards the broker: the CA to trust and, for client-certificate auth, the box's certificate and key."""

    ca_file: Optional[str] = None
    """PEM file of the CA that signed the broker's certificate (None: the system's CAs)."""
    cert_file: Optional[str] = None
    """PEM client certificate (with key_file) when the broker wants one."""
    key_file: Optional[str] = None
    insecure: bool = False
    """Skip the broker hostname check (testing only)."""

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name} {path} is not a file")


def check_broker_host(host: str) -> None:
    """A host name or an IP address, nothing else: `127.0.0.1:1883` or `mqtts://broker` would make paho look up a
    host that does not exist and retry forever, so they are config errors naming the key."""
    import ipaddress

    if not host.strip() or host != host.strip() or any(c.isspace() for c in host):
        raise ValueError(f"host must be a host name or IP address without spaces, got {host!r}")
    if "://" in host:
        raise ValueError(f"host must not carry a scheme ({host.split('://')[0]}://): TLS is mqtt.tls, got {host!r}")
    if "/" in host or "@" in host:
        raise ValueError(f"host must be only a host name or IP address (no path, no user), got {host!r}")
    if ":" in host or "[" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"host must not carry a port: put it in mqtt.port, got {host!r}") from None


@dataclass(frozen=True)
class MqttConfig:
    """The link to the central server. With no host the box keeps every event in SQLite until one is configured."""

    host: Optional[str] = None
    """Broker host name or address; null: no broker (events are kept and sent once one is configured)."""
    port: int = 1883
    prefix: str = "edge/v1"
    """Topic root prefix: topics are <prefix>/<site>/<device>/..."""
    client_id: Optional[str] = None
    """MQTT client id (the persistent session is keyed on it); null: edge-<device id>."""
    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)
    """Better kept out of this file: password_file, or the environment variable EDGE_MQTT_PASSWORD."""
    password_file: Optional[str] = None
    """File holding the broker password (not readable by everyone; one trailing newline is ignored)."""
    tls: Optional[TlsConfig] = None
    keepalive_s: int = 30
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    max_message_bytes: int = 4 * 1024 * 1024
    """Largest incoming message accepted (a gallery command with photos); larger ones are rejected."""
    stats_interval_s: float = 60.0
    """How often the stats message is published."""
    redeliver_after_s: float = 30.0
    """An event published but not acknowledged by the central server for this long is sent again."""
    backlog_rate: float = 200.0
    """Events per second when draining the backlog after an outage (live events are not held back)."""
    live_window_s: float = 60.0
    """Events stored less than this long ago are live; older ones go out as historical backlog."""
    central_key_file: Optional[str] = None
    """PEM file of the central's Ed25519 public key(s) (several during a key rotation); gallery commands must be
    signed with one of them. null: every gallery command is refused."""

    def __post_init__(self) -> None:
        if self.central_key_file is not None:
            from edge.mqtt.signing import KeyFileError, load_public_keys

            try:  # checked here so that check-config (systemd's ExecStartPre) catches a bad key file
                load_public_keys(Path(self.central_key_file))
            except KeyFileError as exc:
                raise ValueError(f"central_key_file: {exc}") from None
        if self.host is not None:
            check_broker_host(self.host)
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port must be within 1..65535, got {self.port}")
        if not self.prefix or "#" in self.prefix or "+" in self.prefix:
            raise ValueError(f"prefix must be a non-empty topic without wildcards, got {self.prefix!r}")
        if (self.username is None) and (self.password is not None or self.password_file is not None):
            raise ValueError("password needs a username")
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        for name in (
            "reconnect_min_s",
            "reconnect_max_s",
            "stats_interval_s",
            "redeliver_after_s",
            "backlog_rate",
            "live_window_s",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        if not 1024 <= self.max_message_bytes <= 256 * 1024 * 1024:
            raise ValueError(f"max_message_bytes must be within 1 KiB..256 MiB, got {self.max_message_bytes}")
        if self.keepalive_s < 5:
            raise ValueError(f"keepalive_s must be >= 5, got {self.keepalive_s}")
