"""Acks from the central server, checked on the outbox thread before they change anything.

An ack marks events delivered, and a delivered event is never sent again: a forged or mistaken ack loses events.
So an ack is applied only when every part of it is believable:

- it parses strictly: at most `max_bytes`, UTF-8 JSON without NaN/Infinity, valid edge.ack/1, and every integer
  a JSON integer (jsonschema counts 1.0 and 1e300 as integers; Python would then overflow on them);
- its epoch is this database's current epoch, or an older one that still holds unacknowledged events (or is asked
  for again with `resend_from`);
- every seq it confirms lies within that epoch, at most the last seq stored, and has been published: handed to
  paho by this process (`sent`) or recorded as published (`published_at`) by an earlier run. (An older epoch ended
  where the box went on in a new one, maybe after losing rows the central server still has: what an ack says
  beyond that end is left aside.)

Anything else is refused whole (`AckRefused`, with a kind for logging once per kind) and changes nothing.
`resend_from` (the central server lost its copies) is answered boundedly by the outbox: at most RESEND_MAX events
per request and one request per RESEND_INTERVAL_S.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Collection, Dict, Optional, Tuple

from edge.mqtt import contract
from edge.mqtt.contract import MessageError
from edge.store import EventStore
from edge.store_marker import MAX_SEQ

MAX_SEQS = 10_000
"""The most seqs one ack may list (the schema's maxItems)."""
RESEND_MAX = 10_000
RESEND_INTERVAL_S = 60.0


class AckRefused(Exception):
    """An ack that must not be applied; `kind` groups refusals for the log (one warning per kind)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail = kind, detail


@dataclass(frozen=True)
class Ack:
    epoch: str
    up_to_seq: int
    seqs: Tuple[int, ...] = ()
    resend_from: Optional[int] = None


@dataclass(frozen=True)
class CheckedAck:
    """An ack found believable, with the span of its epoch it may change (first..last seq)."""

    ack: Ack
    first: int
    last: int


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def parse_ack(raw: bytes, max_bytes: int) -> Ack:
    """Decode and validate one ack (no database needed); AckRefused on anything malformed."""
    if len(raw) > max_bytes:
        raise AckRefused("too large", f"message of {len(raw):,} bytes is over the {max_bytes:,} byte limit")
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise AckRefused("not JSON", f"not UTF-8 JSON ({str(exc)[:200]})") from None
    if not isinstance(body, dict):
        raise AckRefused("not JSON", "not a JSON object")
    seqs = _seqs(body)  # by hand: jsonschema takes ~10 ms for 1,000 items, and a flood of them would stall the box
    try:
        contract.validate("edge.ack/1", {k: v for k, v in body.items() if k != "seqs"})
    except MessageError as exc:
        raise AckRefused("invalid", str(exc)) from None
    except RecursionError:
        raise AckRefused("invalid", "nested too deeply") from None
    return Ack(body["epoch"], _integer(body, "up_to_seq"), seqs, _optional_integer(body, "resend_from"))


def _integer(body: Dict[str, Any], key: str) -> int:
    value = body[key]
    if type(value) is not int:
        raise AckRefused("invalid", f"edge.ack/1: {key}: not a JSON integer")
    return value


def _optional_integer(body: Dict[str, Any], key: str) -> Optional[int]:
    return _integer(body, key) if key in body else None


def _seqs(body: Dict[str, Any]) -> Tuple[int, ...]:
    """`seqs` as the schema has it: an array of at most MAX_SEQS JSON integers within 1..MAX_SEQ."""
    seqs = body.get("seqs", [])
    if not isinstance(seqs, list) or len(seqs) > MAX_SEQS:
        raise AckRefused("invalid", f"edge.ack/1: seqs: not an array of at most {MAX_SEQS} items")
    if not all(type(s) is int and 1 <= s <= MAX_SEQ for s in seqs):
        raise AckRefused("invalid", f"edge.ack/1: seqs: not all JSON integers within 1..{MAX_SEQ}")
    return tuple(sorted(set(seqs)))


def check_ack(ack: Ack, store: EventStore, sent: Collection[int]) -> CheckedAck:
    """Refuse (AckRefused) an ack that confirms anything this box has not published in that epoch."""
    span = store.epoch_span(ack.epoch)
    if span is None:
        raise AckRefused("unknown epoch", f"epoch {ack.epoch} is not this box's (current: {store.epoch})")
    high = store.last_seq()
    first, last = span[0], min(span[1], high)
    if ack.epoch != store.epoch:
        if ack.resend_from is None and not store.has_unacked(first, last):
            raise AckRefused("old epoch", f"epoch {ack.epoch} has no unacknowledged events left")
        ack = _within_closed_epoch(ack, last)
    if ack.resend_from is not None and ack.resend_from < first:
        # a central that lost its copy cannot know where this epoch began: "from 1" means from its first seq
        ack = replace(ack, resend_from=first)
    top = max([ack.up_to_seq, *ack.seqs, ack.resend_from or 0])
    if top > last:
        raise AckRefused("future seq", f"seq {top} was never stored in epoch {ack.epoch} (last: {last})")
    if any(s < first for s in ack.seqs):
        raise AckRefused("other epoch", f"a seq below {first}, the first of epoch {ack.epoch}")
    if ack.up_to_seq >= first:
        missing = store.never_published(first, ack.up_to_seq, limit=len(sent) + 1)
        _refuse_unpublished([s for s in missing if s not in sent], ack)
    if ack.seqs:
        _refuse_unpublished([s for s in store.never_published_among(ack.seqs) if s not in sent], ack)
    return CheckedAck(ack, first, last)


def _within_closed_epoch(ack: Ack, last: int) -> Ack:
    """An epoch that ended (the database lost rows, `--init` went on in a new epoch): the central server may hold
    seqs of it beyond the box's last, the lost ones. What the ack says about those is moot; the rest is checked."""
    resend_from = ack.resend_from if ack.resend_from is None or ack.resend_from <= last else None
    return replace(
        ack, up_to_seq=min(ack.up_to_seq, last), seqs=tuple(s for s in ack.seqs if s <= last), resend_from=resend_from
    )


def _refuse_unpublished(unpublished: Collection[int], ack: Ack) -> None:
    if unpublished:
        seq = min(unpublished)
        raise AckRefused("unpublished seq", f"seq {seq} of epoch {ack.epoch} was never published by this box")
