"""The central's ack rule for one box epoch, and when to ask a box to send its events again. Pure: no I/O, no clock.

Per (site, device, epoch) an AckLedger knows which seqs are accounted for: stored here, or never used by the box
(an event's `prev_seq` jumps over them; the first event of an epoch has `prev_seq: null`, so the seqs below it
were never used in that epoch). Each stored event covers the range prev_seq + 1 .. seq.

- `stored_up_to`: the highest N such that every seq 1..N is accounted for here. Below the box's own
  `acked_up_to` (its stats) it means this copy lost events the box took as delivered: ask for them again.
- `up_to`: the same counted from the floor, the highest `acked_up_to` a box reported (those are done on the box; a
  central that joins late acknowledges from there, never from the lowest seq it happens to receive first: a box
  sends live events before its older backlog). The ack says `up_to_seq: up_to` and lists the stored seqs above it
  (at most ACK_MAX_SEQS, those received since the previous ack first).
- A seq regression (the box reports a last_seq below what it had before, or an event_id arrives again with other
  facts) halts the ledger: the seqs are being reused, so "everything up to N" would confirm events this copy never
  stored. A halted epoch is never acknowledged again; the box keeps its events (it must start a new epoch).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Set

ACK_MAX_SEQS = 1000
"""Most seqs listed in one ack beyond up_to_seq (the schema allows 10,000)."""
MAX_SEQ = 2**53 - 1
"""The largest seq the schemas allow."""
RESEND_MIN_S = 60.0
"""A box is asked to send its events again at most once a minute..."""
RESEND_MAX_S = 3600.0
"""...and, while its answers bring nothing new, less and less often, down to once an hour."""


class Coverage:
    """Disjoint ranges of seqs [lo, hi], merged when they touch."""

    def __init__(self) -> None:
        self._ranges: List[List[int]] = []

    def add(self, lo: int, hi: int) -> None:
        lo, hi = min(lo, hi), max(lo, hi)
        i = bisect.bisect_left(self._ranges, [lo])
        if i > 0 and self._ranges[i - 1][1] >= lo - 1:
            i -= 1
        j = i
        while j < len(self._ranges) and self._ranges[j][0] <= hi + 1:
            lo, hi = min(lo, self._ranges[j][0]), max(hi, self._ranges[j][1])
            j += 1
        self._ranges[i:j] = [[lo, hi]]

    def run_end(self, after: int) -> int:
        """The highest N such that every seq after + 1 .. N is covered; `after` when after + 1 is not."""
        i = bisect.bisect_right(self._ranges, [after + 1, MAX_SEQ]) - 1
        if i >= 0 and self._ranges[i][0] <= after + 1 <= self._ranges[i][1]:
            return self._ranges[i][1]
        return after

    def __len__(self) -> int:
        return len(self._ranges)


@dataclass(frozen=True)
class Marks:
    """What is kept of a ledger across restarts (the rest is replayed from the stored events above stored_up_to)."""

    floor: int = 0
    acked_up_to: int = 0
    stored_up_to: int = 0
    halted: Optional[str] = None
    reported: int = 0
    """The last seq the box last reported in its stats."""


class AckLedger:
    """Which seqs of one box epoch are stored here, what may be acknowledged, and whether its seqs went back."""

    def __init__(self, marks: Marks = Marks()) -> None:
        self.floor = max(marks.floor, marks.acked_up_to)
        self.halted = marks.halted
        self._covered = Coverage()
        if marks.stored_up_to:
            self._covered.add(1, marks.stored_up_to)
        self._listed: Set[int] = set()
        self.up_to = self._covered.run_end(self.floor)
        self.max_seq = max(self.up_to, marks.stored_up_to)
        self.checkpoint = self.max_seq
        """What the box had surely sent when its previous stats arrived: a later last_seq below it is a regression."""
        self.reported = marks.reported

    def settle(self) -> None:
        """Everything added so far was sent before the next stats message was made (after a restart's replay)."""
        self.checkpoint = max(self.checkpoint, self.up_to, self.max_seq)

    @property
    def stored_up_to(self) -> int:
        return self._covered.run_end(0)

    def marks(self) -> Marks:
        return Marks(self.floor, self.up_to, self.stored_up_to, self.halted, self.reported)

    def add(self, seq: int, prev_seq: Optional[int]) -> None:
        """A stored event."""
        first = (prev_seq or 0) + 1
        self._covered.add(first if first <= seq else seq, seq)
        self.max_seq = max(self.max_seq, seq)
        if seq > self.up_to:
            self._listed.add(seq)
        self._advance()

    def raise_floor(self, floor: int) -> None:
        """The box says every seq <= floor is done on its side."""
        if floor > self.floor:
            self.floor = floor
            self._advance()

    def _advance(self) -> None:
        up_to = self._covered.run_end(self.floor)
        if up_to != self.up_to:
            self.up_to = up_to
            self._listed = {s for s in self._listed if s > up_to}

    def check_stats(self, last_seq: int) -> Optional[str]:
        """The box's stats say its highest seq is last_seq: a description of the regression, or None. Call before
        raise_floor with the same stats. A box's last seq never goes down. Nor does it fall below a seq it had sent
        before: events that arrived before a stats message may have been sent after its figures were read, so the
        comparison is with what was here when the previous stats arrived; and a box that cannot read its database
        repeats its last figures, so a repeat is not compared."""
        regression = None
        if last_seq < self.reported:
            regression = f"its last seq is {last_seq}, below the {self.reported} it reported before"
        elif last_seq != self.reported and last_seq < self.checkpoint:
            regression = f"its last seq is {last_seq}, below seq {self.checkpoint} it had sent before"
        self.reported = max(self.reported, last_seq)
        self.settle()
        return regression

    def ack(self, epoch: str, recent: Iterable[int] = ()) -> Dict[str, Any]:
        """The edge.ack/1 payload; the seqs in `recent` (received since the previous ack) are listed first."""
        listed = sorted(self._listed)
        if len(listed) > ACK_MAX_SEQS:
            first = set(sorted({s for s in recent if s in self._listed})[-ACK_MAX_SEQS:])
            others = [s for s in listed if s not in first]
            room = ACK_MAX_SEQS - len(first)
            listed = sorted(first.union(others[len(others) - room :] if room else ()))
        payload: Dict[str, Any] = {"schema": "edge.ack/1", "epoch": epoch, "up_to_seq": self.up_to}
        if listed:
            payload["seqs"] = listed
        return payload


class ResendPacer:
    """When to ask one box to send again what this copy lost: at most every RESEND_MIN_S; when the previous
    request brought nothing new (the box had nothing more, or never got it), twice as long each time up to
    RESEND_MAX_S. Time comes in as arguments (monotonic seconds)."""

    def __init__(self) -> None:
        self.last_at: Optional[float] = None
        self.wait = RESEND_MIN_S
        self._stored_then = -1

    def due(self, now: float, stored_up_to: int) -> bool:
        """Whether to ask now (and if so, the request is taken as made)."""
        if self.last_at is not None:
            wait = RESEND_MIN_S if stored_up_to > self._stored_then else min(RESEND_MAX_S, self.wait * 2)
            if now - self.last_at < wait:
                return False
            self.wait = wait
        self.last_at, self._stored_then = now, stored_up_to
        return True
