"""The box side of MQTT: status, camera status, stats, the event outbox and the server's acks and gallery commands.

    link = Link(config.mqtt, config.device, db_path, LinkInfo(__version__, model_id, config_hash, gallery.version))
    link.start()                 # returns at once; connects (and reconnects) in paho's network thread
    link.notify_new_events()     # after the pipeline stored events
    command = link.commands.get_nowait()
    link.close()

SQLite is the source of truth and MQTT is an outbox over it. Three threads touch a Link:

- paho's network thread runs the callbacks. They do no heavy work (a slow callback misses keepalives): incoming
  acks and gallery commands are queued as raw bytes (bounded queues; retained copies are ignored), PUBACKs as
  message ids. It never touches SQLite, and nothing incoming can raise out of a callback (paho would stop its loop).
- the outbox thread owns one EventStore and the delivery state (`Outbox`): it parses and checks gallery commands
  (then handed to `commands`) and acks (edge/mqtt/acks.py: an ack confirming anything this box has not published is
  refused whole), and while connected sends the events the central server has not acknowledged and marks them
  published when the broker's PUBACK arrives. If it dies, `failure()` says why and the daemon stops (no watchdog
  feed), so systemd restarts the box rather than leaving it alive and delivering nothing.
- the daemon's pipeline thread calls the publish_* methods, `offer_crop`, `outbox_stats` and reads `commands`.

Delivery rules (`Outbox.step`):

- live: an event stored less than `live_window_s` ago and never published goes out at once, historical=false.
- backlog: every other unacknowledged event (stored during an outage longer than the live window, or published
  but not acknowledged for `redeliver_after_s`) goes out oldest first, historical=true, at most `backlog_rate`
  events/s. Live events are picked first in every step, so the backlog never holds them back.
- `published_at` is set when the broker's PUBACK arrives (the broker then has the message), `acked_at` only by
  the central server's ack (it has stored the event). An event is done only when acknowledged.
- at most MAX_INFLIGHT events await a PUBACK and nothing is handed to paho while disconnected, so paho never
  queues an unbounded number of messages; an outage only grows the SQLite table.
- redelivery times are monotonic: a wall clock set back never holds events back (an event published by an earlier
  run is due at most `redeliver_after_s` after this process started).
- before a seq is handed to paho the database marker's hwm is raised to cover it (store.reserve_published), so a
  database that later comes back behind it is refused at start instead of handing the seq out again.
- face crops (crops.upload, edge/crops.py) wait in a side queue of MAX_CROPS (the oldest dropped beyond it) and go
  out QoS 1 on `<root>/crop` while connected, at most MAX_CROPS_INFLIGHT awaiting a PUBACK: they never hold an
  event back, and a crop lost (queue full, a restart, a session lost) is not sent again.
"""

from __future__ import annotations

import logging
import queue
import socket
import sqlite3
import sys
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Deque, Dict, List, Optional, Set

import paho.mqtt.client as mqtt

from edge.config import DeviceConfig
from edge.crops import CropUpload
from edge.errors import ConfigError, EdgeError
from edge.jsoncheck import JsonRefused, load_json
from edge.mqtt import contract
from edge.mqtt.acks import AckRefused, check_ack, parse_ack
from edge.mqtt.contract import MessageError, MqttConfig, Topics
from edge.mqtt.outbox import IDLE_WAKE_S, MAX_INFLIGHT, Outbox
from edge.store import EventStore, StoredEvent

log = logging.getLogger("edge.mqtt.link")

MAX_QUEUED = 1000
"""paho's own queue bound: a guard, the link never lets it fill (it publishes only while connected)."""
MAX_COMMANDS = 16
"""Gallery commands waiting for the pipeline thread; more are rejected (each may hold megabytes of photos)."""
MAX_RAW_ACKS = 1000
"""Acks received and not yet checked by the outbox thread; more are dropped (the central server acks again)."""
MAX_HELD_RESULTS = 100
"""Gallery results kept while disconnected, sent after the next connect (the oldest are dropped beyond this)."""
MAX_CROPS = 32
"""Face crops waiting to be sent (crops.upload); beyond this the oldest is dropped: a crop lost is acceptable."""
MAX_CROPS_INFLIGHT = 4
"""Crops handed to paho and not yet confirmed by a PUBACK: events keep paho's in-flight window."""
CLOSE_TIMEOUT_S = 5.0
GALLERY_OPS = ("upsert", "remove", "sync")


@dataclass(frozen=True)
class LinkInfo:
    """What the online status tells the central server about this box."""

    software_version: str
    model_id: str
    config_hash: str
    gallery_version: int

    def __post_init__(self) -> None:
        if isinstance(self.gallery_version, bool) or not isinstance(self.gallery_version, int):
            raise ValueError(f"gallery_version must be an int, got {self.gallery_version!r}")
        if self.gallery_version < 0:
            raise ValueError(f"gallery_version must be >= 0, got {self.gallery_version}")


NO_EPOCH = "0" * 16
"""The stats' epoch before the database could be read once."""


def read_outbox_stats(db_path: Path, now_wall: float) -> Dict[str, Any]:
    """The outbox figures of the stats message, read through a short-lived connection (any thread may call it).
    last_seq and acked_up_to count within the current epoch; depth and the age cover every epoch."""
    conn = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=rw", uri=True, timeout=5.0)  # never creates it
    try:
        current = conn.execute("SELECT epoch, first_seq FROM epochs ORDER BY first_seq DESC LIMIT 1").fetchone()
        if current is None:
            raise sqlite3.DatabaseError("the database has no epoch yet")
        epoch, since = current
        depth, oldest = conn.execute("SELECT count(*), min(seq) FROM events WHERE acked_at IS NULL").fetchone()
        first = conn.execute("SELECT min(seq) FROM events WHERE acked_at IS NULL AND seq >= ?", [since]).fetchone()[0]
        last = conn.execute(
            "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0), "
            "coalesce((SELECT max(seq) FROM events), 0))"
        ).fetchone()[0]
        age: Optional[float] = None
        if oldest is not None:
            stored = conn.execute("SELECT wall_time FROM events WHERE seq = ?", [oldest]).fetchone()[0]
            age = round(max(0.0, now_wall - float(stored)), 3)
    finally:
        conn.close()
    acked_up_to = max(int(since) - 1, int(first) - 1 if first is not None else int(last))
    return {
        "epoch": str(epoch),
        "depth": int(depth),
        "oldest_unacked_age_s": age,
        "last_seq": int(last),
        "acked_up_to": acked_up_to,
    }


# ---------------------------------------------------------------- the link


class Link:
    """The box's MQTT client: statuses, stats, gallery results, the event outbox, acks and gallery commands."""

    def __init__(self, config: MqttConfig, device: DeviceConfig, db_path: Path, info: LinkInfo) -> None:
        if not config.host:
            raise ValueError("mqtt.host is not set: the box keeps its events in SQLite and starts no link")
        self.config, self.device, self.db_path = config, device, Path(db_path)
        self.info = info
        self.topics = Topics.of(config.prefix, device.site, device.id)
        self.boot_id = str(uuid.uuid4())
        self.commands: queue.Queue[Dict[str, Any]] = queue.Queue(MAX_COMMANDS)
        self.rejected: Counter[str] = Counter()
        """Refused incoming messages by topic kind ("ack", "gallery_command")."""
        self.subscription_refused: Optional[str] = None
        """Why the broker refused a subscription (also the online status' reason), None when all were granted."""
        self.connected = False
        self._lock = threading.Lock()
        self._cameras: Dict[str, Dict[str, Any]] = {}
        self._held_results: Deque[Dict[str, Any]] = deque(maxlen=MAX_HELD_RESULTS)
        self._crops: Deque[CropUpload] = deque()
        self._crop_mids: Set[int] = set()
        self.crops_sent = 0
        self.crops_dropped = 0
        """Crops handed to the broker, and crops dropped (the side queue was full)."""
        self._acks: queue.Queue[bytes] = queue.Queue(MAX_RAW_ACKS)
        self._raw_commands: queue.Queue[bytes] = queue.Queue(MAX_COMMANDS)
        self._told: Set[str] = set()
        self._confirmed: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._closing = False
        self._connects = 0
        self._state = "starting"
        self._thread: Optional[threading.Thread] = None
        self._died: Optional[str] = None
        self._started = time.monotonic()
        self._last_stats: Dict[str, Any] = {
            "epoch": NO_EPOCH,
            "depth": 0,
            "oldest_unacked_age_s": None,
            "last_seq": 0,
            "acked_up_to": 0,
        }
        self.client = self._make_client()

    # setup ---------------------------------------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        c = self.config
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=c.client_id or f"edge-{self.device.id}",
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        client.reconnect_delay_set(c.reconnect_min_s, c.reconnect_max_s)  # type: ignore[arg-type]
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.max_queued_messages_set(MAX_QUEUED)
        if c.username is not None:
            client.username_pw_set(c.username, c.password)
        if c.tls is not None:
            try:
                client.tls_set(ca_certs=c.tls.ca_file, certfile=c.tls.cert_file, keyfile=c.tls.key_file)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                files = ", ".join(f for f in (c.tls.ca_file, c.tls.cert_file, c.tls.key_file) if f)
                raise ConfigError(f"mqtt.tls: cannot load the TLS files ({files or 'system CAs'}): {exc}") from None
            client.tls_insecure_set(c.tls.insecure)
        will = self._status("offline", reason="lost")
        client.will_set(self.topics.status, contract.encode(will), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def start(self) -> None:
        """Connect in the background (paho retries with back-off) and start the outbox thread; returns at once."""
        self._thread = threading.Thread(target=self._outbox_thread, name="edge-outbox", daemon=True)
        self._thread.start()
        self.client.connect_async(self.config.host or "", self.config.port, self.config.keepalive_s)
        self.client.loop_start()

    def close(self, clean: bool = True) -> None:
        """Stop. clean: publish the retained offline status (reason "shutdown") and disconnect; otherwise drop the
        connection without a DISCONNECT, so the broker publishes the last will (reason "lost") as after a crash."""
        if self._closing:
            return
        self._closing = True
        if clean and self.connected:
            info = self._publish(self.topics.status, self._status("offline", reason="shutdown"), qos=1, retain=True)
            if info is not None:
                try:
                    info.wait_for_publish(CLOSE_TIMEOUT_S)
                except (RuntimeError, ValueError) as exc:
                    log.warning("offline status not confirmed by the broker: %s", exc)
        if clean:
            self.client.disconnect()
            self.client.loop_stop()
        else:
            self.client.loop_stop()
            sock = self.client.socket()
            if isinstance(sock, socket.socket):
                sock.close()
        self.connected = False
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(CLOSE_TIMEOUT_S)
            if self._thread.is_alive():
                log.warning("the outbox thread did not stop within %.0f s", CLOSE_TIMEOUT_S)

    def failure(self) -> Optional[str]:
        """Why the link can no longer deliver (its outbox thread died), None while it works. The daemon checks it
        before feeding the watchdog and stops with this reason: a restart is better than a box delivering nothing."""
        if self._thread is None or self._closing or self._thread.is_alive():
            return None
        return self._died or "the outbox thread stopped"

    # publishing (any thread) ---------------------------------------------------------------------------------
    def notify_new_events(self) -> None:
        self._wake.set()

    def publish_camera_status(self, camera_id: str, state: str, reason: str) -> None:
        payload = contract.camera_status_payload(self.device.id, camera_id, state, reason)
        with self._lock:
            self._cameras[camera_id] = payload
        if self.connected:
            self._publish(self.topics.camera_status(camera_id), payload, qos=1, retain=True)

    def offer_crop(self, upload: CropUpload) -> None:
        """Queue a face crop for the central (any thread; never blocks): sent while connected, after no event."""
        with self._lock:
            if len(self._crops) >= MAX_CROPS:
                self._crops.popleft()
                self.crops_dropped += 1
            self._crops.append(upload)
        self._wake.set()

    def publish_stats(self, payload: Dict[str, Any]) -> None:
        if self.connected:
            self._publish(self.topics.stats, payload, qos=0, retain=False)

    def publish_result(self, payload: Dict[str, Any]) -> None:
        if self.connected and self._publish(self.topics.gallery_result, payload, qos=1) is not None:
            return
        with self._lock:
            self._held_results.append(payload)

    def set_gallery_version(self, version: int) -> None:
        with self._lock:
            changed = version != self.info.gallery_version
            self.info = replace(self.info, gallery_version=version)
        if changed and self.connected:
            self._publish(self.topics.status, self._status("online"), qos=1, retain=True)

    def set_config_hash(self, config_hash: str) -> None:
        """After a reload: the retained online status names the config now running."""
        with self._lock:
            changed = config_hash != self.info.config_hash
            self.info = replace(self.info, config_hash=config_hash)
        if changed and self.connected:
            self._publish(self.topics.status, self._status("online"), qos=1, retain=True)

    def outbox_stats(self) -> Dict[str, Any]:
        """depth, oldest_unacked_age_s, last_seq and acked_up_to for the stats message (any thread). When the file
        cannot be read, the last figures read (zeros before the first) and one warning: stats never stop the daemon."""
        try:
            self._last_stats = read_outbox_stats(self.db_path, time.time())
        except sqlite3.Error as exc:
            log.warning("outbox figures unreadable from %s: %s", self.db_path, exc)
        return dict(self._last_stats)

    def _status(self, state: str, reason: Optional[str] = None) -> Dict[str, Any]:
        info = self.info
        if reason is None and state == "online":
            reason = self.subscription_refused
        return contract.status_payload(
            self.device.id,
            self.device.site,
            state,
            self.boot_id,
            software_version=info.software_version,
            gallery_version=info.gallery_version,
            model_id=info.model_id,
            config_hash=info.config_hash,
            reason=reason,
        )

    def _publish(self, topic: str, payload: Dict[str, Any], qos: int, retain: bool = False) -> Optional[Any]:
        return self._publish_raw(topic, contract.encode(payload), qos, retain)

    def _publish_raw(self, topic: str, raw: bytes, qos: int, retain: bool = False) -> Optional[Any]:
        info = self.client.publish(topic, raw, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            log.debug("publish to %s not handed over: %s", topic, mqtt.error_string(info.rc))
            return None
        return info

    # paho callbacks (network thread) -------------------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self._change_state("refused", f"broker refused the connection: {reason}")
            return
        self._connects += 1
        self._publish(self.topics.status, self._status("online"), qos=1, retain=True)
        with self._lock:
            cameras = list(self._cameras.items())
            results = list(self._held_results)
            self._held_results.clear()
        for camera_id, payload in cameras:
            self._publish(self.topics.camera_status(camera_id), payload, qos=1, retain=True)
        client.subscribe([(self.topics.ack, 1), (self.topics.gallery_command, 1)])
        for result in results:
            self._publish(self.topics.gallery_result, result, qos=1)
        self.connected = True
        where = f"{self.config.host}:{self.config.port}"
        self._change_state(
            "connected", f"connected to the broker at {where} (session present: {flags.session_present})"
        )
        self._wake.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        error = sys.exc_info()[1]  # paho calls this inside its `except OSError` (an ssl.SSLError is one)
        why = f" ({error})" if error is not None else ""
        self._change_state(
            "unreachable",
            f"broker {self.config.host}:{self.config.port} unreachable{why}; events are kept in SQLite, retrying",
        )

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        was_connected, self.connected = self.connected, False
        if self._closing:
            return
        if was_connected:
            self._change_state("disconnected", f"disconnected from the broker ({reason}); events are kept in SQLite")
        elif self._state != "refused":  # after a refusal the broker closes the connection: nothing new to say
            self._change_state(
                "dropped",
                f"the broker {self.config.host}:{self.config.port} closed the connection before accepting it "
                f"({reason}; a client certificate it does not accept?); events are kept in SQLite, retrying",
            )

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        self._confirmed.put(mid)
        self._wake.set()

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, codes: Any, properties: Any) -> None:
        topics = (self.topics.ack, self.topics.gallery_command)
        refused = [f"{topic} ({code})" for topic, code in zip(topics, codes) if code.is_failure]
        why = f"subscription refused by the broker: {', '.join(refused)}" if refused else None
        if why != self.subscription_refused:
            self.subscription_refused = why
            if why is not None:
                log.error("%s; acks and gallery commands cannot arrive (check the broker's ACL for this box)", why)
            else:
                log.warning("subscriptions granted by the broker")
            if self.connected:
                self._publish(self.topics.status, self._status("online"), qos=1, retain=True)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        """Network thread: queue the raw bytes, nothing more (the outbox thread parses and checks them)."""
        try:
            if message.topic == self.topics.ack:
                kind, inbox = "ack", self._acks
            elif message.topic == self.topics.gallery_command:
                kind, inbox = "gallery_command", self._raw_commands
            else:
                return
            if message.retain:  # only the central server sends these, never retained: someone else's copy
                self._reject_once(kind, "retained", "a retained message on an inbound topic is ignored")
                return
            try:
                inbox.put_nowait(bytes(message.payload))
            except queue.Full:
                self._reject_once(kind, "busy", f"{inbox.maxsize} messages already wait; dropped")
                return
            self._wake.set()
        except Exception:  # nothing incoming may stop the network thread
            log.exception("incoming message on %s could not be handled", message.topic)

    def _change_state(self, state: str, message: str) -> None:
        if state != self._state:
            self._state = state
            log.warning("%s", message)

    def _take_command(self, raw: bytes) -> None:
        try:
            command = contract.parse("edge.gallery_command/1", raw, self.config.max_message_bytes)
            self.commands.put_nowait(command)
            return
        except MessageError as exc:
            reason = str(exc)
        except queue.Full:
            reason = f"busy: {MAX_COMMANDS} gallery commands are already waiting"
        self._reject("gallery_command", reason)
        request_id, op = command_ids(raw, self.config.max_message_bytes)
        result = contract.gallery_result_payload(request_id, op, "rejected", reason, self.info.gallery_version)
        self.publish_result(result)

    def _reject(self, kind: str, reason: object) -> None:
        self.rejected[kind] += 1
        log.warning("rejected a message on %s: %s", kind, reason)

    def _reject_once(self, topic_kind: str, why: str, detail: str) -> None:
        """Count a refused message; log the first of each kind only (a flood of forgeries must not flood the log)."""
        self.rejected[topic_kind] += 1
        key = f"{topic_kind}/{why}"
        if key in self._told:
            log.debug("rejected a message on %s: %s (%s)", topic_kind, detail, why)
            return
        self._told.add(key)
        log.warning("rejected a message on %s: %s (%s; further ones of this kind are only counted)", topic_kind,
                    detail, why)  # fmt: skip

    # the outbox thread ---------------------------------------------------------------------------------------
    def _outbox_thread(self) -> None:
        try:
            self._run_outbox()
        except BaseException as exc:  # a bug: say so, and let failure() take the daemon down
            self._died = f"the outbox thread died: {type(exc).__name__}: {str(exc)[:300]}"
            log.exception("%s", self._died)

    def _run_outbox(self) -> None:
        store: Optional[EventStore] = None
        outbox: Optional[Outbox] = None
        seen_connects = 0
        failing = False
        wait = 0.0
        while not self._stop.is_set():
            self._wake.wait(wait)
            self._wake.clear()
            self._take_commands()
            try:
                if store is None or outbox is None:
                    store = EventStore(self.db_path, self.device.id)
                    outbox = Outbox(store, self.config, self._send_event, self._started)
                if self._connects != seen_connects:
                    seen_connects = self._connects
                    outbox.reconnected()
                    self._crop_mids.clear()  # a crop without its PUBACK is not sent again (paho's session may)
                wait = self._outbox_step(outbox)
                if failing:
                    failing = False
                    log.warning("the outbox works again")
            except (EdgeError, sqlite3.Error) as exc:
                if not failing:
                    failing = True
                    log.warning("the outbox cannot work on %s (%s); retrying", self.db_path, exc)
                wait = IDLE_WAKE_S
        if store is not None:
            if outbox is not None:
                try:
                    self._drain(outbox)
                except (EdgeError, sqlite3.Error) as exc:
                    log.warning("last confirmations not recorded: %s", exc)
            store.close()

    def _outbox_step(self, outbox: Outbox) -> float:
        self._drain(outbox)
        if not self.connected or self._closing:
            return IDLE_WAKE_S
        wait = outbox.step(time.monotonic(), time.time())
        self._send_crops()
        return wait

    def _drain(self, outbox: Outbox) -> None:
        """Record the PUBACKs (one transaction), then check and apply the acks the network thread queued."""
        now = datetime.now(timezone.utc)
        mids: List[int] = []
        while True:
            try:
                mids.append(self._confirmed.get_nowait())
            except queue.Empty:
                break
        self._crop_mids.difference_update(mids)
        outbox.confirm(mids, now)
        for _ in range(MAX_RAW_ACKS):
            try:
                raw = self._acks.get_nowait()
            except queue.Empty:
                break
            self._take_ack(outbox, raw, now)

    def _take_ack(self, outbox: Outbox, raw: bytes, now: datetime) -> None:
        try:
            checked = check_ack(parse_ack(raw, self.config.max_message_bytes), outbox.store, outbox.sent)
        except AckRefused as refused:
            self._reject_once("ack", refused.kind, refused.detail)
            return
        outbox.acknowledge(checked, now)
        try:
            resent = outbox.resend(checked, time.monotonic())
        except AckRefused as refused:
            self._reject_once("ack", refused.kind, refused.detail)
            return
        if resent:
            log.warning("the central server asked for epoch %s from seq %d again: %d events re-queued",
                        checked.ack.epoch, checked.ack.resend_from, resent)  # fmt: skip

    def _take_commands(self) -> None:
        while True:
            try:
                raw = self._raw_commands.get_nowait()
            except queue.Empty:
                return
            try:
                self._take_command(raw)
            except Exception:  # a command must not stop the outbox
                log.exception("a gallery command could not be handled")

    def _send_crops(self) -> None:
        """Hand queued crops to paho (outbox thread, after the events of this step), a few in flight at most."""
        while len(self._crop_mids) < MAX_CROPS_INFLIGHT and self.connected and not self._closing:
            with self._lock:
                if not self._crops:
                    return
                upload = self._crops.popleft()
            payload = contract.crop_payload(
                self.device.id, self.device.site, upload.event_id, upload.event_type, upload.at, upload.jpeg
            )
            info = self._publish(self.topics.crop, payload, qos=1)
            if info is None:  # not handed over (disconnected meanwhile): dropped, a crop lost is acceptable
                self.crops_dropped += 1
                return
            self._crop_mids.add(int(info.mid))
            self.crops_sent += 1

    def _send_event(self, stored: StoredEvent, historical: bool) -> Optional[int]:
        if not self.connected or self._closing:
            return None
        prev_seq = None if stored.first_of_epoch else stored.seq - 1  # seqs are contiguous (store.py: no gaps)
        payload = contract.event_payload(stored, self.device.site, prev_seq, historical)
        info = self._publish(self.topics.events, payload, qos=1)
        return None if info is None else int(info.mid)


def command_ids(raw: bytes, max_bytes: int) -> tuple[Optional[str], Optional[str]]:
    """request_id and op of a refused gallery command, when they can be read (else None)."""
    if len(raw) > max_bytes:
        return None, None
    try:
        body = load_json(raw)  # bounded nesting: a deep command must still get its answer, not a RecursionError
    except JsonRefused:
        return None, None
    if not isinstance(body, dict):
        return None, None
    request_id = body.get("request_id")
    op = body.get("op")
    valid_id = isinstance(request_id, str) and 1 <= len(request_id) <= 128
    return (request_id if valid_id else None), (op if op in GALLERY_OPS else None)
