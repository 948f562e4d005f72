"""The delivery state of the event outbox: what was sent when, what awaits a PUBACK, the backlog's pace, and how acks
and resend requests (checked by edge/mqtt/acks.py) change it. It runs on the link's outbox thread only (edge/mqtt/link.py has
the delivery rules); time comes in as arguments.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Callable, Dict, List, Optional, Set

from edge.mqtt.acks import RESEND_INTERVAL_S, RESEND_MAX, AckRefused, CheckedAck
from edge.mqtt.contract import MqttConfig
from edge.store import EventStore, StoredEvent

MAX_INFLIGHT = 100
"""Events handed to paho and not yet confirmed by a PUBACK (also paho's in-flight window)."""
SCAN_ROWS = 500
IDLE_WAKE_S = 1.0


Send = Callable[[StoredEvent, bool], Optional[int]]
"""Publish one event (historical or not); returns paho's message id, or None when it was not handed over."""


class Outbox:
    """What was sent when, what awaits a PUBACK and the backlog's pace. Time comes in as arguments."""

    def __init__(self, store: EventStore, config: MqttConfig, send: Send, started: float) -> None:
        self.store, self.config, self.send = store, config, send
        self.started = started
        """Monotonic time the process started: events published by an earlier run are due from it on."""
        self.last_resend = -math.inf
        self.requeued: Set[int] = set()
        """Seqs the central server asked for again (resend_from): backlog, due now."""
        self.inflight: Dict[int, int] = {}
        """paho mid -> seq, handed to paho and not yet confirmed by a PUBACK."""
        self.sent: Dict[int, float] = {}
        """seq -> monotonic time of its last send by this process, until acknowledged."""
        self.live_cursor = 0
        self.backlog_cursor = 0
        self.next_pass = 0.0
        self.pass_due = math.inf
        self.burst = max(1.0, config.backlog_rate * 0.05)
        self.tokens = self.burst
        self.last_refill: Optional[float] = None
        self.delivered = 0

    def reconnected(self) -> None:
        """A new connection: look at the whole backlog again (events stored while away have aged meanwhile)."""
        self.backlog_cursor, self.next_pass, self.pass_due = 0, 0.0, math.inf

    def confirm(self, mids: List[int], when: datetime) -> None:
        seqs = [self.inflight.pop(mid) for mid in mids if mid in self.inflight]
        if seqs:
            self.store.mark_published(seqs, when)
            self.delivered += len(seqs)

    def acknowledge(self, checked: CheckedAck, when: datetime) -> None:
        """Apply an ack that `acks.check_ack` accepted (its epoch's span only)."""
        ack, first = checked.ack, checked.first
        if ack.up_to_seq >= first:
            self.store.ack_up_to(ack.up_to_seq, when, since=first)
        extra = {s for s in ack.seqs if s > ack.up_to_seq}
        if extra:
            self.store.ack_seqs(extra, when)
        for seq in [s for s in self.sent if first <= s <= ack.up_to_seq or s in extra]:
            del self.sent[seq]

    def resend(self, checked: CheckedAck, now: float) -> int:
        """The central server lost its copies from `resend_from` on: make up to RESEND_MAX of them unacknowledged
        and unpublished, so they go out again as backlog; at most one request per RESEND_INTERVAL_S (AckRefused)."""
        start = checked.ack.resend_from
        if start is None:
            return 0
        if now - self.last_resend < RESEND_INTERVAL_S:
            raise AckRefused("resend too soon", f"one resend request per {RESEND_INTERVAL_S:.0f} s")
        self.last_resend = now
        seqs = self.store.unacknowledge(start, checked.last, RESEND_MAX)
        for seq in seqs:
            self.sent.pop(seq, None)
        self.requeued.update(seqs)
        self.reconnected()
        return len(seqs)

    def step(self, now: float, now_wall: float) -> float:
        """Send what is due (the caller is connected); returns the seconds until the next step is needed."""
        self._refill(now)
        for mid, seq in list(self.inflight.items()):
            if now - self.sent.get(seq, now) > self.config.redeliver_after_s:
                del self.inflight[mid]  # no PUBACK for that long: stop counting it; it is redelivered when due
        self._send_live(now, now_wall)
        self._send_backlog(now, now_wall)
        if len(self.inflight) >= MAX_INFLIGHT:
            return IDLE_WAKE_S  # a PUBACK wakes the thread
        if now < self.next_pass:
            wait = self.next_pass - now
        elif self.tokens < 1:
            wait = (1 - self.tokens) / self.config.backlog_rate
        else:
            wait = IDLE_WAKE_S
        return min(max(wait, 0.02), IDLE_WAKE_S)

    def _refill(self, now: float) -> None:
        if self.last_refill is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.last_refill) * self.config.backlog_rate)
        self.last_refill = now

    def _is_live(self, stored: StoredEvent, now_wall: float) -> bool:
        fresh = now_wall - stored.context.wall_time < self.config.live_window_s
        return fresh and stored.published_at is None and stored.seq not in self.sent and stored.seq not in self.requeued

    def _send_live(self, now: float, now_wall: float) -> None:
        while len(self.inflight) < MAX_INFLIGHT:
            limit = min(SCAN_ROWS, max(32, MAX_INFLIGHT - len(self.inflight)))
            rows = self.store.unacked_after(self.live_cursor, limit)
            for stored in rows:
                if len(self.inflight) >= MAX_INFLIGHT:
                    return
                if self._is_live(stored, now_wall) and not self._send(stored, False, now):
                    return
                self.live_cursor = stored.seq
            if len(rows) < limit:
                return

    def _send_backlog(self, now: float, now_wall: float) -> None:
        if now < self.next_pass:
            return
        while self.tokens >= 1 and len(self.inflight) < MAX_INFLIGHT:
            rows = self.store.unacked_after(self.backlog_cursor, max(16, min(SCAN_ROWS, int(self.tokens) * 2)))
            if not rows:  # a pass over the whole backlog is done: the next when the first skipped one is due
                self.backlog_cursor = 0
                self.next_pass = min(self.pass_due, now + self.config.redeliver_after_s)
                self.pass_due = math.inf
                return
            for stored in rows:
                if self.tokens < 1 or len(self.inflight) >= MAX_INFLIGHT:
                    return
                due = self._due(stored, now, now_wall)
                if due is None:
                    pass  # live: the live path sends it
                elif due > now:
                    self.pass_due = min(self.pass_due, due)
                elif self._send(stored, True, now):
                    self.tokens -= 1
                else:
                    return
                self.backlog_cursor = stored.seq

    def _due(self, stored: StoredEvent, now: float, now_wall: float) -> Optional[float]:
        """When this unacknowledged event may go out as backlog (monotonic); None while it is live."""
        if self._is_live(stored, now_wall):
            return None
        redeliver = self.config.redeliver_after_s
        if stored.seq in self.sent:
            return self.sent[stored.seq] + redeliver
        if stored.published_at is not None:  # by an earlier run; its wall clock may be ahead of ours (set back)
            return min(now + (stored.published_at.timestamp() + redeliver - now_wall), self.started + redeliver)
        return now

    def _send(self, stored: StoredEvent, historical: bool, now: float) -> bool:
        self.store.reserve_published(stored.seq)
        mid = self.send(stored, historical)
        if mid is None:
            return False
        self.inflight[mid] = stored.seq
        self.sent[stored.seq] = now
        self.requeued.discard(stored.seq)
        return True
