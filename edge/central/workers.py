"""Several central workers for a fleet: each consumes through MQTT v5 shared subscriptions, stores and acknowledges in
batches, and keeps nothing in memory that another worker needs.

    with Worker("broker.lan", 1883, "central.db", group="edge-central") as worker:
        worker.start()
        ...

`edge central run --workers N` starts N of them as processes; N processes started by hand with the same
`--share-group` (on one machine or several, with a PostgreSQL store) do the same. The broker hands each message of
`$share/<group>/<prefix>/+/+/events` (and stats, crop, gallery/result) to one worker of the group; retained statuses
are not delivered through shared subscriptions (MQTT 5), so each worker also subscribes to them directly (storing
the latest status twice is harmless).

A batch (at most `batch_max` messages, or what arrived within `batch_wait_s` of the first):
1. each event is stored idempotently (unique event_id: a redelivery only counts a delivery; other facts under the
   same id halt that box epoch, as in the single central);
2. the ack of every box epoch the batch touched is computed from the store alone: its saved marks (edge.central.ledger
   Marks) plus the seqs stored above them, whichever worker stored them. The ack lists the seqs of this batch above
   the contiguous mark, so every stored event is confirmed by the worker that stored it;
3. the marks are saved with an fsync (which makes the batch's events durable too), then the acks go out;
4. only then does the worker PUBACK the batch's messages to the broker (manual acks).

A worker killed anywhere in that sequence loses nothing: a box keeps every event until an edge.ack/1 confirms it and
sends it again after `redeliver_after_s`; the worker's session is dropped with it (clean start, no session expiry),
so the broker gives nothing more to a dead worker. It stores nothing twice: the event_id is unique in the store.

What is not shared, on purpose: the resend pacing (edge.central.ledger.ResendPacer) is per worker, so with N
workers a box that lost events may be asked up to N times a minute; the box takes one request a minute
(edge.mqtt.acks.RESEND_INTERVAL_S) and refuses the rest. A stats message's seq check compares with the highest last_seq
the box reported before (kept in the store); the single central's finer check against what it had received when
the previous stats came needs memory of one process, so workers leave it out (a conflicting event_id still halts).
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple, Type, Union

from edge.central import fleet
from edge.central.acks import Flag, resend_request
from edge.central.crops import CentralCrops, CropRefused, CropRules
from edge.central.ledger import AckLedger, Marks, ResendPacer
from edge.central.server import MAX_MESSAGE_BYTES, NO_EPOCH, SCHEMA_OF_TAIL, Central, wired
from edge.central.store import CentralError, CentralStore, Stored
from edge.mqtt.contract import MessageError, TlsConfig, Topics, encode, parse

log = logging.getLogger("edge.central.workers")

BATCH_MAX = 500
"""Most messages one batch takes."""
BATCH_WAIT_S = 0.05
"""How long a batch waits for more messages after its first."""
RECEIVE_MAXIMUM = 2000
"""QoS 1 messages the broker may have in flight to one worker (its PUBACK waits for the batch's commit)."""
DEFAULT_GROUP = "edge-central"

Key = Tuple[str, str, str]  # site, device id, epoch


def _store_errors() -> Tuple[Type[BaseException], ...]:
    errors: List[Type[BaseException]] = [sqlite3.Error, CentralError]
    try:
        import psycopg

        errors.append(psycopg.Error)
    except ImportError:
        pass
    return tuple(errors)


STORE_ERRORS = _store_errors()
"""What a failing store raises: the batch is taken again rather than confirmed."""


@dataclass(frozen=True)
class Received:
    """One message as paho's network thread hands it over (nothing parsed)."""

    topic: str
    payload: bytes
    retained: bool
    mid: int
    qos: int


@dataclass
class Batch:
    """What one batch did: the seqs stored per box epoch, the epochs to halt and the stats to apply."""

    incoming: List[Tuple[str, str, Dict[str, Any]]] = field(default_factory=list)  # site, device, payload
    stored: Dict[Key, List[int]] = field(default_factory=dict)
    halts: Dict[Key, str] = field(default_factory=dict)
    stats: Dict[Key, Tuple[int, int]] = field(default_factory=dict)  # key -> (last_seq, acked_up_to), the latest
    events: int = 0
    duplicates: int = 0


def shared_topics(prefix: str, group: str, crops: bool = True) -> List[str]:
    """The topic filters a worker subscribes to: events, stats, gallery results and crops shared in the group,
    statuses directly (retained messages never come through a shared subscription)."""
    shared = ["events", "stats", "gallery/result"] + (["crop"] if crops else [])
    direct = ["status", "cameras/+/status"]
    return [f"$share/{group}/{prefix}/+/+/{tail}" for tail in shared] + [f"{prefix}/+/+/{tail}" for tail in direct]


# the ack rule from the store alone ---------------------------------------------------------------------------------
def ledger_of(store: CentralStore, key: Key, marks: Optional[Marks]) -> AckLedger:
    """A box epoch's ledger as the store has it now: its saved marks and every event stored above them."""
    ledger = AckLedger(marks or Marks())
    for seq, prev_seq in store.seqs_above(*key, ledger.stored_up_to):
        ledger.add(seq, prev_seq)
    return ledger


def settle_batch(
    store: CentralStore, batch: Batch, pacers: Dict[Tuple[str, str], ResendPacer], now: float, auto_resend: bool = True
) -> Tuple[List[Tuple[Key, Dict[str, Any]]], List[Tuple[Key, Marks]], List[Flag]]:
    """The acks (and requests to send again) of one batch, the marks to save before sending them, and the flags to
    raise; reads the store, changes nothing."""
    keys = sorted(set(batch.stored) | set(batch.halts) | set(batch.stats))
    saved = store.ledger_marks(keys)
    acks: List[Tuple[Key, Dict[str, Any]]] = []
    resends: List[Tuple[Key, Dict[str, Any]]] = []
    marks: List[Tuple[Key, Marks]] = []
    flags: List[Flag] = []
    for key in keys:
        before = saved.get(key)
        if before is None:
            others = [epoch for epoch in store.epochs(key[0], key[1]) if epoch != key[2]]
            if others:
                detail = (f"new epoch {key[2]} (before: {', '.join(others)}): its event database was started again; "
                          "the new epoch is acknowledged on its own")  # fmt: skip
                flags.append(Flag(*key, "new_epoch", detail))
        ledger = ledger_of(store, key, before)
        halt = batch.halts.get(key)
        if key in batch.stats:
            last_seq, acked_up_to = batch.stats[key]
            if last_seq < ledger.reported:
                halt = halt or f"its last seq is {last_seq}, below the {ledger.reported} it reported before"
            ledger.reported = max(ledger.reported, last_seq)
            ledger.raise_floor(acked_up_to)
            pacer = pacers.setdefault(key[:2], ResendPacer())
            stored_up_to = ledger.stored_up_to
            lost = auto_resend and halt is None and ledger.halted is None and acked_up_to > stored_up_to
            if lost and pacer.due(now, stored_up_to):
                resends.append((key, resend_request(key[2], stored_up_to + 1)))
                have = f"1..{stored_up_to}" if stored_up_to else "none of them"
                detail = (f"it took seqs up to {acked_up_to} as delivered, this copy has {have}: "
                          f"asked for them again from {stored_up_to + 1}")  # fmt: skip
                flags.append(Flag(*key, "resend", detail))
        if halt is not None and ledger.halted is None:
            ledger.halted = halt
            detail = f"seqs went back ({halt}): epoch {key[2]} is no longer acknowledged; the box keeps its events"
            flags.append(Flag(*key, "regression", detail))
        marks.append((key, ledger.marks()))
        if ledger.halted is None and key in batch.stored:
            acks.append((key, ledger.ack(key[2], batch.stored[key])))
    return acks + resends, marks, flags


# one worker ----------------------------------------------------------------------------------------------------------
class Worker:
    """One central worker: a paho MQTT v5 client in a shared-subscription group and a batch thread that stores and
    acknowledges. The public methods may be called from any thread."""

    def __init__(
        self,
        host: str,
        port: int,
        db_path: Union[str, Path],
        prefix: str = "edge/v1",
        *,
        group: str = DEFAULT_GROUP,
        worker_id: Optional[str] = None,
        username: Optional[str] = None,
        password: Optional[str] = None,
        tls: Optional[TlsConfig] = None,
        batch_max: int = BATCH_MAX,
        batch_wait_s: float = BATCH_WAIT_S,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        crop_rules: Optional[CropRules] = None,
        on_line: Optional[Callable[[str], None]] = None,
    ) -> None:
        if not prefix or "#" in prefix or "+" in prefix:
            raise CentralError(f"prefix must be a non-empty topic without wildcards, got {prefix!r}")
        if not group or any(c in group for c in "/+#"):
            raise CentralError(f"share group must be a non-empty name without '/', '+' or '#', got {group!r}")
        if not 1 <= batch_max <= 10_000:
            raise CentralError(f"batch_max must be within 1..10000, got {batch_max}")
        if not 0 <= batch_wait_s <= 5:
            raise CentralError(f"batch_wait_s must be within 0..5 s, got {batch_wait_s}")
        if password is not None and username is None:
            raise CentralError("a password needs a username")
        self.host, self.port, self.prefix, self.group = host, port, prefix.rstrip("/"), group
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.batch_max, self.batch_wait_s = batch_max, batch_wait_s
        self.max_message_bytes = max_message_bytes
        self.on_line = on_line
        self.store = CentralStore(db_path)
        self.crops = CentralCrops(self.store, crop_rules) if self.store.path != ":memory:" else None
        self._inbox: queue.SimpleQueue[Received] = queue.SimpleQueue()
        self._pacers: Dict[Tuple[str, str], ResendPacer] = {}
        self._counts: Dict[str, int] = {}
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._subscribe_mid: Optional[int] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._started_at = datetime.now(timezone.utc).isoformat()
        self._client = self._make_client(username, password, tls)

    def _make_client(self, username: Optional[str], password: Optional[str], tls: Optional[TlsConfig]) -> Any:
        import paho.mqtt.client as mqtt

        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=self.worker_id, protocol=mqtt.MQTTv5, manual_ack=True
        )
        return wired(client, self, username, password, tls)

    # lifecycle -------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect in the background (retrying until close()) and start the batch thread; see wait_connected()."""
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        properties = Properties(PacketTypes.CONNECT)
        properties.ReceiveMaximum = RECEIVE_MAXIMUM
        properties.SessionExpiryInterval = 0  # a dead worker's session goes with it: nothing is queued for it
        self._thread = threading.Thread(target=self._run, name="central-worker", daemon=True)
        self._thread.start()
        self._client.connect_async(self.host, self.port, keepalive=30, clean_start=True, properties=properties)
        self._client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def close(self) -> None:
        """Finish the batch in hand (its acks go out), leave the group, close the store."""
        self._stop.set()
        try:
            if self._thread is not None:
                self._thread.join(10)
            self._client.disconnect()
        finally:
            self._client.loop_stop()
            try:
                fleet.leave(self.store, self.worker_id)
            finally:
                self.store.close()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def counts(self) -> Dict[str, int]:
        """Messages by outcome: events, duplicates, conflicts, statuses, stats, results, crops, acks, invalid,
        errors, batches; flags by kind."""
        with self._lock:
            return dict(self._counts)

    def _count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self._counts[what] = self._counts.get(what, 0) + n

    # MQTT callbacks (network thread): queue, nothing more --------------------------------------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.warning("broker %s:%s refused worker %s: %s", self.host, self.port, self.worker_id, reason_code)
            return
        topics = shared_topics(self.prefix, self.group, crops=self.crops is not None)
        _, self._subscribe_mid = client.subscribe([(t, 1) for t in topics])

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        if mid != self._subscribe_mid:
            return
        refused = [str(code) for code in reason_codes if code.is_failure]
        if refused:
            log.warning("broker %s:%s refused the subscriptions of worker %s (%s); shared subscriptions need MQTT 5 "
                        "(mosquitto 2, EMQX, VerneMQ)", self.host, self.port, self.worker_id, ", ".join(refused))  # fmt: skip
            return
        self._connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if self._connected.is_set() and not self._stop.is_set():
            log.warning("worker %s lost the broker %s:%s (%s); reconnecting", self.worker_id, self.host, self.port,
                        reason_code)  # fmt: skip
        self._connected.clear()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        self._inbox.put(Received(message.topic, bytes(message.payload), bool(message.retain), message.mid,
                                 message.qos))  # fmt: skip

    # the batch thread ------------------------------------------------------------------------------------------
    def _run(self) -> None:
        last_beat, events_then = 0.0, 0
        while True:
            batch = self._collect()
            if batch:
                self._take(batch)
            now = time.monotonic()
            if now - last_beat >= fleet.HEARTBEAT_S:
                events = self.counts().get("events", 0)
                rate = (events - events_then) / (now - last_beat) if last_beat else 0.0
                last_beat, events_then = now, events
                self._beat(rate)
            if self._stop.is_set():  # what waits unconfirmed in the inbox, the boxes send again
                return

    def _collect(self) -> List[Received]:
        try:
            first = self._inbox.get(timeout=0.2)
        except queue.Empty:
            return []
        batch, deadline = [first], time.monotonic() + self.batch_wait_s
        while len(batch) < self.batch_max:
            try:
                batch.append(self._inbox.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return batch

    def _beat(self, rate: float) -> None:
        counts = self.counts()
        row = fleet.WorkerRow(
            self.worker_id, self.group, socket.gethostname(), os.getpid(), self._started_at,
            datetime.now(timezone.utc).isoformat(), counts.get("events", 0), counts.get("duplicates", 0),
            counts.get("batches", 0), round(rate, 2),
        )  # fmt: skip
        try:
            fleet.heartbeat(self.store, row)
        except Exception as exc:  # health is never worth stopping for
            log.warning("worker %s could not record its heartbeat: %s", self.worker_id, exc)

    def _take(self, messages: List[Received]) -> None:
        """Store a batch, save its marks durably, send its acks, then PUBACK its messages. A store error leaves the
        batch unconfirmed: it is taken again (everything in it is idempotent) until it works or the worker stops."""
        while True:
            try:
                self._store_and_ack(messages)
                return
            except STORE_ERRORS as exc:
                self._count("errors")
                log.warning("worker %s could not store a batch of %d messages (%s); retrying", self.worker_id,
                            len(messages), exc)  # fmt: skip
                if self._stop.wait(1.0):
                    return  # no PUBACK: the boxes send the events again

    def _store_and_ack(self, messages: List[Received]) -> None:
        batch = Batch()
        for message in messages:
            try:
                self._handle(message, batch)
            except STORE_ERRORS:
                raise
            except Exception:  # a bad message or a bug must not hold the batch back
                log.exception("message on %s could not be handled", message.topic)
                self._count("errors")
        results = self.store.add_events([(site, payload) for site, _, payload in batch.incoming])
        for (site, device, payload), stored in zip(batch.incoming, results):
            self._took_event(site, device, payload, stored, batch)
        acks, marks, flags = settle_batch(self.store, batch, self._pacers, time.monotonic())
        self.store.save_ledgers(marks, durable=True)
        for flag in flags:
            self._flag(flag)
        for key, ack in acks:
            self._client.publish(Topics.of(self.prefix, key[0], key[1]).ack, encode(ack), qos=1)
        for message in messages:
            if message.qos > 0:
                self._client.ack(message.mid, message.qos)
        self._count("acks", len(acks))
        self._count("events", batch.events)
        self._count("duplicates", batch.duplicates)
        self._count("batches")

    def _handle(self, message: Received, batch: Batch) -> None:
        topic = message.topic
        parts = topic[len(self.prefix) + 1 :].split("/") if topic.startswith(self.prefix + "/") else []
        if len(parts) < 3:
            return
        site, device, tail = parts[0], parts[1], "/".join(parts[2:])
        camera_id = parts[3] if len(parts) == 5 and parts[2] == "cameras" and parts[4] == "status" else None
        schema = "edge.camera_status/1" if camera_id is not None else SCHEMA_OF_TAIL.get(tail)
        if schema is None:
            return
        if not message.payload and schema in ("edge.status/1", "edge.camera_status/1"):
            self.store.put_status(site, device, camera_id, None)
            return
        try:
            payload = parse(schema, message.payload, self.max_message_bytes)
            Central._check_source(payload, site, device)
        except (MessageError, RecursionError) as exc:
            log.warning("invalid message on %s: %s", topic, exc)
            self._count("invalid")
            return
        if schema == "edge.event/1":
            batch.incoming.append((site, device, payload))
        elif schema == "edge.stats/1":
            self._count("stats")
            outbox = payload["outbox"]
            fleet.save_box_stats(self.store, site, device, payload)
            if outbox.get("epoch") not in (None, NO_EPOCH):
                batch.stats[(site, device, outbox["epoch"])] = (int(outbox["last_seq"]), int(outbox["acked_up_to"]))
        elif schema == "edge.crop/1":
            self._take_crop(site, device, payload)
        elif schema == "edge.gallery_result/1":
            self.store.add_result(site, device, payload)
            self._count("results")
        else:
            self.store.put_status(site, device, camera_id, payload)
            self._count("statuses")

    def _took_event(self, site: str, device: str, payload: Dict[str, Any], stored: Stored, batch: Batch) -> None:
        key = (site, device, payload["epoch"])
        if stored.conflict:
            log.warning("event %s arrived again with different facts; kept the first, not acknowledged",
                        payload["event_id"])  # fmt: skip
            self._count("conflicts")
            batch.halts[key] = f"event {payload['event_id']} arrived again with other facts"
            return
        if stored.new:
            batch.events += 1
        else:
            batch.duplicates += 1
        batch.stored.setdefault(key, []).append(int(payload["seq"]))
        if self.on_line is not None:
            who = payload["person_id"] or "unknown"
            kind = "event" if stored.new else "duplicate"
            self.on_line(f"{kind:<9} {site}/{device} #{payload['seq']} {payload['type']} {who} at {payload['at']}")

    def _take_crop(self, site: str, device: str, payload: Dict[str, Any]) -> None:
        if self.crops is None:
            return
        try:
            if not payload["event_id"].startswith(f"{device}-"):
                raise CropRefused(f"event_id {payload['event_id']!r} is not an event of {device!r}")
            self.crops.add(site, device, payload)
        except CropRefused as exc:
            log.warning("refused a crop from %s/%s: %s", site, device, exc)
            self._count("crops_refused")
            return
        self._count("crops")

    def _flag(self, flag: Flag) -> None:
        log.warning("%s/%s %s: %s", flag.site, flag.device, flag.kind, flag.detail)
        self.store.add_flag(flag.site, flag.device, flag.epoch, flag.kind, flag.detail)
        self._count(flag.kind)
        if self.on_line is not None:
            self.on_line(f"flag      {flag.site}/{flag.device} {flag.kind}: {flag.detail}")


def stored_ids(store: CentralStore, devices: Optional[Iterable[str]] = None) -> Dict[str, Set[str]]:
    """The event ids stored per device (for comparing with what the boxes hold)."""
    wanted = set(devices) if devices is not None else None
    out: Dict[str, Set[str]] = {}
    for row in store.events():
        if wanted is None or row["device_id"] in wanted:
            out.setdefault(row["device_id"], set()).add(row["event_id"])
    return out
