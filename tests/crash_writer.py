"""Appends groups of 3 events to an event store until killed (test_store's crash test SIGKILLs it at random).

    python tests/crash_writer.py DB_PATH RUN_TAG

Every group is one `append` (one transaction); its 3 events share track_id f"{RUN_TAG}-{n}". `mono_time` is the
system-wide monotonic clock, so it must never decrease along seq. Prints "ready" once the first group is
committed. Stops on its own after MAX_SECONDS, so a failed test never leaves it running.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime, timedelta, timezone

from edge.attendance import AttendanceEvent, EventType
from edge.store import EventContext, EventStore

MAX_SECONDS = 30.0
GROUP = (EventType.OUTING_START, EventType.EXIT, EventType.EARLY_LEAVE)


def main(path: str, tag: str) -> None:
    started = time.monotonic()
    base = datetime(2024, 3, 4, 8, 0, tzinfo=timezone(timedelta(hours=1)))
    with EventStore(path, device_id="crash-box") as store:
        n = 0
        while time.monotonic() - started < MAX_SECONDS:
            at = base + timedelta(seconds=n)
            events = [
                AttendanceEvent(kind, f"p{n % 7}", "door", at, at, None, f"{tag}-{n}", 0.8, 0.2, 5, 0.9)
                for kind in GROUP
            ]
            store.append(events, EventContext(1, "model", time.monotonic(), time.time()))
            if n == 0:
                print("ready", flush=True)
            n += 1


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
