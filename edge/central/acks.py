"""The reference central's acknowledgements: an AckLedger per box epoch (edge/central_ledger.py), and one thread that
sends them in batches.

paho's network thread stores an event and tells `stored()`; it never publishes an ack. The ack thread sends each
box at most one ack per `interval` (ACK_INTERVAL_S) per epoch, covering everything stored since the previous one:
a burst of events costs a few acks, not one each. Before it publishes, it saves the ledgers' marks with an fsync,
which makes the events they cover durable too (edge/central_store.py).

Flags (each logged, counted, shown and kept in the store's `flags` table through `on_flag`):
- new_epoch: a box the central knows shows up with another epoch: its database was started again (`edge run
  --init`). The new epoch has its own ledger, so nothing is confused; the old one stays as it was.
- regression: within one epoch the box's seqs went back (its stats report a last_seq below what it had sent
  before, or an event_id arrives again with other facts). The epoch is halted: never acknowledged again.
- resend: the box took events as delivered that this copy does not have (its stats report an `acked_up_to` above
  the central's `stored_up_to` for that epoch): with the next ack goes an ack that confirms nothing
  (`up_to_seq: 0`) and carries `resend_from`, at most once a minute per box and less often while the box has
  nothing more to give (ResendPacer). A message of its own, so a box that refuses the request still takes the ack.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from edge.central.ledger import AckLedger, Marks, ResendPacer
from edge.central.store import CentralStore

log = logging.getLogger("edge.central")

ACK_INTERVAL_S = 0.25
"""At most one ack per box epoch this often."""

Box = Tuple[str, str]  # site, device id
Key = Tuple[str, str, str]  # site, device id, epoch


@dataclass(frozen=True)
class Flag:
    """Something about a box's seqs that an operator should know; kind: new_epoch, regression or resend."""

    site: str
    device: str
    epoch: str
    kind: str
    detail: str


def resend_request(epoch: str, from_seq: int) -> Dict[str, Any]:
    """An edge.ack/1 that confirms nothing and asks the box for its events of `epoch` from `from_seq` again."""
    return {"schema": "edge.ack/1", "epoch": epoch, "up_to_seq": 0, "resend_from": from_seq}


class Acks:
    """The ledgers of every box epoch and the thread that acknowledges them. `publish(site, device, ack)` sends an
    ack; `on_flag` hears of every flag. stored(), conflict() and stats() may be called from any thread."""

    def __init__(
        self,
        store: CentralStore,
        publish: Callable[[str, str, Dict[str, Any]], None],
        on_flag: Callable[[Flag], None],
        *,
        interval: float = ACK_INTERVAL_S,
        auto_resend: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.publish, self.on_flag = store, publish, on_flag
        self.interval, self.auto_resend, self.clock = interval, auto_resend, clock
        self._cond = threading.Condition()
        self._ledgers: Dict[Key, AckLedger] = {}
        self._recent: Dict[Key, List[int]] = {}  # epochs to acknowledge: the seqs stored since their previous ack
        self._resend: Dict[Key, int] = {}
        self._sent_at: Dict[Key, float] = {}
        self._pacers: Dict[Box, ResendPacer] = {}
        self._closing = False
        self._thread: Optional[threading.Thread] = None
        for key, marks in store.ledger_marks().items():
            ledger = AckLedger(marks)
            for seq, prev in store.seqs_above(*key, marks.stored_up_to):
                ledger.add(seq, prev)
            ledger.settle()
            self._ledgers[key] = ledger

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="central-acks", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._closing

    def close(self, timeout: float = 5.0) -> None:
        """Send what is still due, then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    # what the network thread reports -------------------------------------------------------------------------------
    def stored(self, site: str, device: str, epoch: str, seq: int, prev_seq: Optional[int]) -> None:
        """The event is in the store (committed)."""
        flags: List[Flag] = []
        with self._cond:
            ledger = self._ledger((site, device, epoch), flags)
            ledger.add(seq, prev_seq)
            recent = self._recent.get((site, device, epoch))
            if ledger.halted is not None:
                pass
            elif recent is not None:  # already due: the ack thread is waiting for its time
                recent.append(seq)
            else:
                self._recent[(site, device, epoch)] = [seq]
                self._cond.notify_all()
        self._raise(flags)

    def conflict(self, site: str, device: str, epoch: str, event_id: str) -> None:
        """An event_id arrived again with other facts: its seq is being reused."""
        flags: List[Flag] = []
        with self._cond:
            self._halt((site, device, epoch), f"event {event_id} arrived again with other facts", flags)
        self._raise(flags)

    def stats(self, site: str, device: str, epoch: str, last_seq: int, acked_up_to: int) -> None:
        """A box's stats for its current epoch: its highest seq and the seq up to which all are done there."""
        key, flags = (site, device, epoch), list[Flag]()
        with self._cond:
            ledger = self._ledger(key, flags)
            regression = ledger.check_stats(last_seq)
            if regression is not None:
                self._halt(key, regression, flags)
            ledger.raise_floor(acked_up_to)
            stored_up_to = ledger.stored_up_to
            pacer = self._pacers.setdefault((site, device), ResendPacer())
            if (
                self.auto_resend
                and ledger.halted is None
                and acked_up_to > stored_up_to
                and pacer.due(self.clock(), stored_up_to)
            ):
                self._ask_resend(key, stored_up_to + 1)
                have = f"1..{stored_up_to}" if stored_up_to else "none of them"
                detail = (f"it took seqs up to {acked_up_to} as delivered, this copy has {have}: "
                          f"asked for them again from {stored_up_to + 1}")  # fmt: skip
                flags.append(Flag(site, device, epoch, "resend", detail))
            marks = ledger.marks()
        self.store.save_ledgers([(key, marks)])
        self._raise(flags)

    def request_resend(self, site: str, device: str, epoch: str, from_seq: int) -> None:
        """Ask a box for its events of `epoch` from `from_seq` again, in the next ack."""
        with self._cond:
            self._ask_resend((site, device, epoch), from_seq)

    # bookkeeping (under the lock) ---------------------------------------------------------------------------------
    def _ledger(self, key: Key, flags: List[Flag]) -> AckLedger:
        ledger = self._ledgers.get(key)
        if ledger is None:
            others = [k[2] for k in self._ledgers if k[:2] == key[:2]]
            ledger = self._ledgers[key] = AckLedger()
            self.store.save_ledgers([(key, ledger.marks())])
            if others:
                detail = (f"new epoch {key[2]} (before: {', '.join(others)}): its event database was started again; "
                          "the new epoch is acknowledged on its own")  # fmt: skip
                flags.append(Flag(*key, "new_epoch", detail))
        return ledger

    def _halt(self, key: Key, why: str, flags: List[Flag]) -> None:
        ledger = self._ledger(key, flags)
        if ledger.halted is None:
            ledger.halted = why
            self._recent.pop(key, None)
            self.store.save_ledgers([(key, ledger.marks())])
            detail = f"seqs went back ({why}): epoch {key[2]} is no longer acknowledged; the box keeps its events"
            flags.append(Flag(*key, "regression", detail))

    def _ask_resend(self, key: Key, from_seq: int) -> None:
        self._resend[key] = from_seq
        self._recent.setdefault(key, [])
        self._cond.notify_all()

    def _raise(self, flags: List[Flag]) -> None:
        for flag in flags:
            self.on_flag(flag)

    # the ack thread -----------------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                batch, wait = self._take_due(self.clock())
                if not batch:
                    if self._closing:
                        return
                    self._cond.wait(wait)
                    continue
            try:
                self.store.save_ledgers([(key, marks) for key, _, marks in batch if marks is not None], durable=True)
                for key, ack, _ in batch:
                    self.publish(key[0], key[1], ack)
            except Exception:  # the store or the client failed: the box sends the events again, nothing is lost
                log.exception("acknowledgements could not be sent")

    def _take_due(self, now: float) -> Tuple[List[Tuple[Key, Dict[str, Any], Optional[Marks]]], Optional[float]]:
        """The acks due now (with the marks to save first), and how long until the next one is due (None: nothing
        waits)."""
        batch: List[Tuple[Key, Dict[str, Any], Optional[Marks]]] = []
        wait: Optional[float] = None
        for key in list(self._recent):
            ready_in = self._sent_at.get(key, -self.interval) + self.interval - now
            if ready_in > 0 and not self._closing:
                wait = ready_in if wait is None else min(wait, ready_in)
                continue
            recent, ledger = self._recent.pop(key), self._ledgers.get(key)
            resend = self._resend.pop(key, None)
            if ledger is not None and ledger.halted is None:
                batch.append((key, ledger.ack(key[2], recent), ledger.marks()))
            if resend is not None:  # a message of its own: a box that refuses it still takes the ack
                batch.append((key, resend_request(key[2], resend), None))
            self._sent_at[key] = now
        return batch, wait
