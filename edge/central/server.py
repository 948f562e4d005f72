"""The reference central subscriber: what an installer runs to check a box end to end over MQTT.

    with Central("broker.lan", 1883, "central.db") as central:
        central.start()
        central.wait_connected(10)
        result = central.push("school-1", "box-17", upsert_photos("s1", "Kim Minji", [Path("kim.jpg")]))

It subscribes (QoS 1, persistent session) to every box's events, statuses, camera statuses, stats and gallery
results under `<prefix>/+/+/...`, checks every message against its schema (a bad one is logged and counted, never
fatal), keeps events and statuses in its own SQLite file, and acknowledges stored events to each box.

Events are identified per box epoch (`<device>-<epoch>-<seq>`: a box whose database was started again has a new
epoch, so its seqs start again without reusing an id). The ack rule is per box epoch (edge/central_ledger.py):
`up_to_seq` is the highest N such that every seq from the box's floor + 1 to N is stored here (a seq the box never
used counts as stored); `seqs` lists stored seqs above N. The floor rises to the `outbox.acked_up_to` a box reports
in its stats, so a central that joins late acknowledges from there, never from the lowest seq it happens to receive
first (a box sends live events before its older backlog). paho's network thread only checks and stores; acks go
out from their own thread in batches, at most one per box epoch every ACK_INTERVAL_S (edge/central_acks.py). An
event_id arriving again with other facts, or stats whose last_seq went back, mean the box reuses seqs: the epoch is
flagged and no longer acknowledged. A box epoch that reports more events delivered than this copy has (its
database was lost) is asked to send them again (`resend_from` in the ack, at most once a minute per box).

Gallery commands: push() signs the command for that one box with the central's Ed25519 key (`key_file`, made by
`edge central keygen`; see edge.mqtt.signing), valid for the push's timeout only (a command still queued in the broker
after the central gave up is refused by the box), checks it against edge.gallery_command/1 and the box's size
limit, publishes it
QoS 1 on `<root>/gallery/command` and waits for the edge.gallery_result/1 with the same request_id on
`<root>/gallery/result` (results are also kept in memory by request_id and in the gallery_results table).
"""

from __future__ import annotations

import base64
import logging
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from edge.central import fleet
from edge.central.acks import Acks, Flag, resend_request
from edge.central.crops import CentralCrops, CropRefused, CropRules
from edge.central.store import CentralError, CentralStore
from edge.mqtt.contract import MessageError, MqttConfig, TlsConfig, Topics, encode, parse, validate
from edge.mqtt.signing import MAX_LIFETIME_S, load_private_key, sign_command

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = MqttConfig().max_message_bytes
"""Largest message accepted from a box, and largest command sent (a box refuses bigger ones by default)."""
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png"}

NO_EPOCH = "0" * 16
"""The epoch in a box's stats before it could read its database once (edge.mqtt.link.NO_EPOCH): no figures to use."""

SCHEMA_OF_TAIL = {
    "events": "edge.event/1",
    "status": "edge.status/1",
    "stats": "edge.stats/1",
    "gallery/result": "edge.gallery_result/1",
    "crop": "edge.crop/1",
}


# what happened, for a console ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Notice:
    """One thing the central saw: kind is event, duplicate, conflict, status, camera_status, gallery_result, crop or
    invalid; `line` is a one-line description for a console."""

    kind: str
    site: str
    device: str
    line: str


def _describe(kind: str, site: str, device: str, payload: Dict[str, Any], extra: str = "") -> str:
    where = f"{site}/{device}"
    if kind in ("event", "duplicate", "conflict"):
        who = payload["person_id"] or "unknown"
        return f"{kind:<9} {where} #{payload['seq']} {payload['type']} {who} at {payload['at']} {extra}".rstrip()
    if kind == "status":
        facts = ", ".join(f"{k} {payload[k]}" for k in ("gallery_version", "model_id", "reason") if k in payload)
        return f"status    {where} {payload['state']}" + (f" ({facts})" if facts else "")
    if kind == "camera_status":
        return f"camera    {where} {payload['camera_id']} {payload['state']}: {payload['reason']}"
    if kind == "gallery_result":
        return (
            f"result    {where} {payload['request_id']} {payload['op']} {payload['status']}: {payload['reason']} "
            f"(gallery version {payload['gallery_version']})"
        )
    return f"{kind:<9} {where} {extra}"


# the MQTT side ------------------------------------------------------------------------------------------------------
def wired(client: Any, owner: Any, username: Optional[str], password: Optional[str], tls: Optional[TlsConfig]) -> Any:
    """A paho client set up as every central connection is: back-off, login, TLS, and `owner`'s callbacks
    (_on_connect, _on_disconnect, _on_message, _on_subscribe). Used by Central and the fleet's workers."""
    client.reconnect_delay_set(1, 30)
    if username is not None:
        client.username_pw_set(username, password)
    if tls is not None:
        client.tls_set(ca_certs=tls.ca_file, certfile=tls.cert_file, keyfile=tls.key_file)
        client.tls_insecure_set(tls.insecure)
    client.on_connect = owner._on_connect
    client.on_disconnect = owner._on_disconnect
    client.on_message = owner._on_message
    client.on_subscribe = owner._on_subscribe
    return client


class Central:
    """Subscribes to every box under a prefix, stores events and statuses, acknowledges events, pushes gallery
    commands. The paho network thread checks and stores (about 0.4 ms a message), the ack thread of
    edge.central.acks.Acks acknowledges; the public methods may be called from any thread.

    `store_events=False` makes a command-only client (the `push`/`remove`/`resend` commands): it subscribes only to
    statuses and gallery results, acknowledges nothing, and uses a clean session (nothing queued for it after it
    leaves)."""

    def __init__(
        self,
        host: str,
        port: int,
        db_path: Union[str, Path],
        prefix: str = "edge/v1",
        *,
        username: Optional[str] = None,
        password: Optional[str] = None,
        tls: Optional[TlsConfig] = None,
        client_id: str = "edge-central",
        store_events: bool = True,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        on_notice: Optional[Callable[[Notice], None]] = None,
        key_file: Union[str, Path, None] = None,
        crop_rules: Optional[CropRules] = None,
    ) -> None:
        if not prefix or "#" in prefix or "+" in prefix:
            raise CentralError(f"prefix must be a non-empty topic without wildcards, got {prefix!r}")
        if password is not None and username is None:
            raise CentralError("a password needs a username")
        self.host, self.port, self.prefix = host, port, prefix.rstrip("/")
        self.store_events = store_events
        self.max_message_bytes = max_message_bytes
        self.on_notice = on_notice
        self._signing_key = load_private_key(Path(key_file)) if key_file is not None else None
        self.store = CentralStore(db_path)
        self.crops = CentralCrops(self.store, crop_rules) if store_events and self.store.path != ":memory:" else None
        """Face crops boxes send (crops.upload on a box), None for a command-only client or a database in memory."""
        self._results: Dict[str, Dict[str, Any]] = {}
        self._stats: Dict[Tuple[str, str], Dict[str, Any]] = {}
        self._counts: Dict[str, int] = {}
        self._cond = threading.Condition()
        self._connected = threading.Event()
        self._answered = threading.Event()  # the broker accepted (and subscribed) or refused
        self._subscribe_mid: Optional[int] = None
        self._refused: Optional[str] = None
        self._closing = False
        self._client = self._make_client(client_id, username, password, tls)
        self._acks = Acks(self.store, self._publish_ack, self._flag) if store_events else None

    def _make_client(
        self, client_id: str, username: Optional[str], password: Optional[str], tls: Optional[TlsConfig]
    ) -> Any:
        import paho.mqtt.client as mqtt

        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=not self.store_events,
            protocol=mqtt.MQTTv311,
        )
        return wired(client, self, username, password, tls)

    # lifecycle ---------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect in the background (retrying until close()); see wait_connected()."""
        if self._acks is not None:
            self._acks.start()
        self._client.connect_async(self.host, self.port, keepalive=30)
        self._client.loop_start()

    def connect(self, timeout: float = 10.0) -> None:
        """Connect now (for one-shot commands): CentralError at once when the broker is unreachable or refuses."""
        try:
            self._client.connect(self.host, self.port, keepalive=30)
        except (OSError, ValueError) as exc:
            raise CentralError(f"cannot reach the broker at {self.host}:{self.port} ({exc})") from None
        self._client.loop_start()
        self._answered.wait(timeout)
        if not self._connected.is_set():
            refused = f": {self._refused}" if self._refused else ""
            raise CentralError(f"the broker at {self.host}:{self.port} did not accept the connection{refused}")

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def close(self) -> None:
        self._closing = True
        try:
            if self._acks is not None:
                self._acks.close()  # the acks still due go out first
            self._client.disconnect()
        finally:
            self._client.loop_stop()
            self.store.close()

    def __enter__(self) -> Central:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # reading -----------------------------------------------------------------------------------------------------
    def events(self, device: Optional[str] = None) -> List[Dict[str, Any]]:
        return self.store.events(device)

    def status_of(self, site: str, device: str) -> Optional[Dict[str, Any]]:
        return self.store.status(site, device)

    def camera_status_of(self, site: str, device: str, camera_id: str) -> Optional[Dict[str, Any]]:
        return self.store.status(site, device, camera_id)

    def stats_of(self, site: str, device: str) -> Optional[Dict[str, Any]]:
        with self._cond:
            return self._stats.get((site, device))

    def counts(self) -> Dict[str, int]:
        """Messages by outcome: events, duplicates, conflicts, statuses, stats, results, acks, invalid, errors; and
        flags by kind: new_epoch, regression, resend."""
        with self._cond:
            return dict(self._counts)

    def result(self, request_id: str) -> Optional[Dict[str, Any]]:
        with self._cond:
            return self._results.get(request_id)

    def flags(self) -> List[Dict[str, Any]]:
        """What the central flagged about boxes' seqs (new_epoch, regression, resend), oldest first."""
        return self.store.flags()

    # asking for events again ---------------------------------------------------------------------------------------
    def request_resend(self, site: str, device: str, from_seq: int, epoch: Optional[str] = None) -> str:
        """Ask a box to send its events from `from_seq` again (this copy lost them); `epoch`: the box's latest one
        seen here by default. Returns the epoch asked about. A running central asks in its next ack; a command-only
        client publishes the request now."""
        epoch = epoch or next(iter(self.store.epochs(site, device)), None)
        if epoch is None:
            raise CentralError(f"no epoch known for {site}/{device}: give the box's epoch")
        request = resend_request(epoch, from_seq)
        try:
            validate("edge.ack/1", request)
        except MessageError as exc:
            raise CentralError(f"not a valid resend request: {exc}") from None
        if self._acks is not None and self._acks.running:
            self._acks.request_resend(site, device, epoch, from_seq)
        else:
            info = self._client.publish(Topics.of(self.prefix, site, device).ack, encode(request), qos=1)
            info.wait_for_publish(10)
            if not info.is_published():
                raise CentralError(f"the broker at {self.host}:{self.port} did not take the request in 10 s")
        return epoch

    # pushing -----------------------------------------------------------------------------------------------------
    def push(self, site: str, device: str, command: Dict[str, Any], timeout: float = 30.0) -> Dict[str, Any]:
        """Sign a gallery command for one box, valid for `timeout` seconds, send it and wait for its result (same
        request_id)."""
        if self._signing_key is None:
            raise CentralError("no signing key: give the central's private key file (make one with edge central keygen)")
        if not 0 < timeout <= MAX_LIFETIME_S:
            raise CentralError(f"timeout must be within 0..{MAX_LIFETIME_S:g} s, got {timeout:g}")
        command = sign_command(command, self._signing_key, f"{site}/{device}", timeout)
        try:
            validate("edge.gallery_command/1", command)
        except MessageError as exc:
            raise CentralError(f"not a valid gallery command: {exc}") from None
        raw = encode(command)
        if len(raw) > self.max_message_bytes:
            raise CentralError(
                f"command of {len(raw):,} bytes is over the {self.max_message_bytes:,} byte limit of a box; "
                "send fewer or smaller photos"
            )
        request_id = command["request_id"]
        info = self._client.publish(Topics.of(self.prefix, site, device).gallery_command, raw, qos=1)
        if info.rc != 0:
            raise CentralError(f"cannot publish to the broker at {self.host}:{self.port} (paho error {info.rc})")
        with self._cond:
            if not self._cond.wait_for(lambda: request_id in self._results, timeout):
                raise CentralError(
                    f"no answer from {site}/{device} to request {request_id} within {timeout:g} s "
                    "(is the box online and subscribed?)"
                )
            return self._results[request_id]

    # MQTT callbacks (network thread) -----------------------------------------------------------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self._refused = str(reason_code)
            log.warning("broker %s:%s refused the connection: %s", self.host, self.port, reason_code)
            self._answered.set()
            return
        tails = ["status", "cameras/+/status", "gallery/result"]
        if self.store_events:
            tails += ["events", "stats"]
        if self.crops is not None:
            tails += ["crop"]
        _, self._subscribe_mid = client.subscribe([(f"{self.prefix}/+/+/{tail}", 1) for tail in tails])
        log.info("connected to %s:%s (session present: %s)", self.host, self.port, flags.session_present)

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        # connected means subscribed: before the SUBACK, an event another client publishes could reach no one
        if mid != self._subscribe_mid:
            return
        refused = [str(code) for code in reason_codes if code.is_failure]
        if refused:
            self._refused = f"the broker refused the subscriptions ({', '.join(refused)})"
            log.warning("broker %s:%s %s", self.host, self.port, self._refused)
            self._answered.set()
            return
        self._connected.set()
        self._answered.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if self._connected.is_set() and not self._closing:
            log.warning("lost the broker %s:%s (%s); reconnecting", self.host, self.port, reason_code)
        self._connected.clear()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            self._handle(message.topic, bytes(message.payload), bool(message.retain))
        except Exception:  # a bad message or a bug must never stop the network thread
            log.exception("message on %s could not be handled", message.topic)
            self._count("errors")

    def _count(self, what: str) -> None:
        with self._cond:
            self._counts[what] = self._counts.get(what, 0) + 1

    def _notify(self, kind: str, site: str, device: str, line: str) -> None:
        if self.on_notice is not None:
            self.on_notice(Notice(kind, site, device, line))

    def _handle(self, topic: str, raw: bytes, retained: bool) -> None:
        parts = topic[len(self.prefix) + 1 :].split("/") if topic.startswith(self.prefix + "/") else []
        if len(parts) < 3:
            return
        site, device, tail = parts[0], parts[1], "/".join(parts[2:])
        camera_id = parts[3] if len(parts) == 5 and parts[2] == "cameras" and parts[4] == "status" else None
        schema = "edge.camera_status/1" if camera_id is not None else SCHEMA_OF_TAIL.get(tail)
        if schema is None:
            return
        if not raw and schema in ("edge.status/1", "edge.camera_status/1"):
            self.store.put_status(site, device, camera_id, None)  # a retained status was cleared
            return
        try:
            payload = parse(schema, raw, self.max_message_bytes)
            self._check_source(payload, site, device)
        except (MessageError, RecursionError) as exc:  # RecursionError: JSON nested too deep to decode
            log.warning("invalid message on %s: %s", topic, exc)
            self._count("invalid")
            self._notify("invalid", site, device, f"invalid   {site}/{device} {tail}: {exc}")
            return
        if schema == "edge.event/1":
            self._take_event(site, device, payload)
        elif schema == "edge.stats/1":
            self._take_stats(site, device, payload)
        elif schema == "edge.crop/1":
            self._take_crop(site, device, payload)
        elif schema == "edge.gallery_result/1":
            self.store.add_result(site, device, payload)
            with self._cond:
                if payload["request_id"] is not None:
                    self._results[payload["request_id"]] = payload
                self._counts["results"] = self._counts.get("results", 0) + 1
                self._cond.notify_all()
            self._notify("gallery_result", site, device, _describe("gallery_result", site, device, payload))
        else:
            kind = "camera_status" if camera_id is not None else "status"
            self.store.put_status(site, device, camera_id, payload)
            self._count("statuses")
            self._notify(kind, site, device, _describe(kind, site, device, payload))

    @staticmethod
    def _check_source(payload: Dict[str, Any], site: str, device: str) -> None:
        if "device_id" in payload and payload["device_id"] != device:
            raise MessageError(f"device_id {payload['device_id']!r} does not match the topic's {device!r}")
        if "site" in payload and payload["site"] != site:
            raise MessageError(f"site {payload['site']!r} does not match the topic's {site!r}")
        if payload.get("schema") == "edge.event/1" and payload["event_id"] != "{}-{}-{:010d}".format(
            device, payload["epoch"], payload["seq"]
        ):
            raise MessageError(f"event_id {payload['event_id']!r} does not match device {device!r}, epoch and seq")

    def _publish_ack(self, site: str, device: str, ack: Dict[str, Any]) -> None:  # the ack thread
        self._client.publish(Topics.of(self.prefix, site, device).ack, encode(ack), qos=1)
        self._count("acks")

    def _flag(self, flag: Flag) -> None:
        log.warning("%s/%s %s: %s", flag.site, flag.device, flag.kind, flag.detail)
        self.store.add_flag(flag.site, flag.device, flag.epoch, flag.kind, flag.detail)
        self._count(flag.kind)
        self._notify("flag", flag.site, flag.device, f"flag      {flag.site}/{flag.device} {flag.kind}: {flag.detail}")

    def _take_event(self, site: str, device: str, payload: Dict[str, Any]) -> None:
        assert self._acks is not None  # events are subscribed to only then
        stored = self.store.add_event(site, payload)
        if stored.conflict:
            # Same event_id, other facts: the box reuses seqs. Keep the first; the epoch is no longer acknowledged.
            log.warning("event %s arrived again with different facts; kept the first, not acknowledged",
                        payload["event_id"])  # fmt: skip
            self._count("conflicts")
            self._notify("conflict", site, device, _describe("conflict", site, device, payload, "(not acknowledged)"))
            self._acks.conflict(site, device, payload["epoch"], payload["event_id"])
            return
        self._count("events" if stored.new else "duplicates")
        self._acks.stored(site, device, payload["epoch"], int(payload["seq"]), payload["prev_seq"])
        kind = "event" if stored.new else "duplicate"
        extra = "" if stored.new else f"(delivery {stored.deliveries})"
        self._notify(kind, site, device, _describe(kind, site, device, payload, extra))

    def _take_crop(self, site: str, device: str, payload: Dict[str, Any]) -> None:
        """A face crop of one event (edge.central.crops keeps it within its size and retention rules)."""
        if self.crops is None:
            return
        try:
            if not payload["event_id"].startswith(f"{device}-"):
                raise CropRefused(f"event_id {payload['event_id']!r} is not an event of {device!r}")
            crop = self.crops.add(site, device, payload)
        except CropRefused as exc:
            log.warning("refused a crop from %s/%s: %s", site, device, exc)
            self._count("crops_refused")
            self._notify("invalid", site, device, f"invalid   {site}/{device} crop: {exc}")
            return
        self._count("crops")
        line = f"crop      {site}/{device} {crop.event_type} {crop.event_id} ({crop.bytes:,} bytes)"
        self._notify("crop", site, device, line)

    def _take_stats(self, site: str, device: str, payload: Dict[str, Any]) -> None:
        with self._cond:
            self._stats[(site, device)] = payload
            self._counts["stats"] = self._counts.get("stats", 0) + 1
        outbox = payload["outbox"]
        fleet.save_box_stats(self.store, site, device, payload)  # the console's and /metrics' lag per box
        if self._acks is not None and outbox.get("epoch") not in (None, NO_EPOCH):
            self._acks.stats(site, device, outbox["epoch"], int(outbox["last_seq"]), int(outbox["acked_up_to"]))


# building commands --------------------------------------------------------------------------------------------------
def _command(op: str, base_version: Optional[int], **body: Any) -> Dict[str, Any]:
    command: Dict[str, Any] = {"schema": "edge.gallery_command/1", "request_id": uuid.uuid4().hex, "op": op, **body}
    if base_version is not None:
        command["base_version"] = base_version
    try:
        validate("edge.gallery_command/1", command)
    except MessageError as exc:
        raise CentralError(str(exc)) from None
    return command


def upsert_photos(
    person_id: str,
    name: str,
    photo_paths: Sequence[Union[str, Path]],
    base_version: Optional[int] = None,
    metadata: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """An upsert that sends JPEG/PNG photos; the box detects, embeds and enrolls them itself."""
    if not photo_paths:
        raise CentralError(f"person {person_id!r}: no photos given")
    photos = []
    for path in map(Path, photo_paths):
        if path.suffix.lower() not in PHOTO_SUFFIXES:
            raise CentralError(f"{path}: send JPEG or PNG photos (.jpg, .jpeg, .png)")
        try:
            photos.append(base64.b64encode(path.read_bytes()).decode("ascii"))
        except OSError as exc:
            raise CentralError(f"{path}: cannot be read ({exc.strerror})") from None
    person: Dict[str, Any] = {"person_id": person_id, "name": name, "photos": photos}
    if metadata:
        person["metadata"] = metadata
    return _command("upsert", base_version, person=person)


def upsert_embeddings(person: Dict[str, Any], base_version: Optional[int] = None) -> Dict[str, Any]:
    """An upsert of ready embeddings: person = {person_id, name?, metadata?, embeddings: [{model_id, vector, ...}]}."""
    return _command("upsert", base_version, person=person)


def remove(person_id: str, base_version: Optional[int] = None) -> Dict[str, Any]:
    return _command("remove", base_version, person_id=person_id)


def sync_from_export(document: Dict[str, Any]) -> Dict[str, Any]:
    """A full sync from an `edge gallery export` document (format edge-gallery v1): the box becomes exactly it."""
    from edge.gallery.exchange import FORMAT, FORMAT_VERSION

    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CentralError(f"not an {FORMAT} document (its 'format' is not {FORMAT!r})")
    if document.get("format_version") != FORMAT_VERSION:
        raise CentralError(f"{FORMAT} format_version {document.get('format_version')!r}; expected {FORMAT_VERSION}")
    people = document.get("people")
    if not isinstance(people, list):
        raise CentralError(f"{FORMAT} document: 'people' must be a list")
    keys = ("person_id", "name", "metadata", "embeddings")
    return _command("sync", None, people=[{k: p[k] for k in keys if k in p} for p in _objects(people)])


def timetable_command(schedule: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """A `timetable` command: the box follows this schedule document (edge.timetable.schedule_document of the
    office's Timetable.schedule) instead of its YAML one; None hands the box back to its YAML."""
    return _command("timetable", None, timetable=schedule)


def _objects(items: Iterable[Any]) -> List[Dict[str, Any]]:
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise CentralError(f"people[{i}] must be an object")
        out.append(item)
    return out
