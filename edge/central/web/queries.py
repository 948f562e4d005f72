"""What the console reads from the central's tables that the office does not give: boxes and cameras with their
retained statuses and last events, a day's events of some types. Read-only; all of the console's SQL on the
central's own tables is here."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from typing import Any, Dict, List, Optional, Sequence, Tuple

from edge.central.store import CentralStore


@dataclass(frozen=True)
class CameraHealth:
    camera_id: str
    state: str
    reason: str
    at: str


@dataclass(frozen=True)
class BoxHealth:
    """One box as the central knows it: its retained status (None: never seen or cleared), its last event, its
    cameras' retained statuses; outbox depth from its latest stats (None: no stats since the central started)."""

    site: str
    device_id: str
    state: Optional[str]
    status_at: Optional[str]
    reason: Optional[str]
    gallery_version: Optional[int]
    last_event_at: Optional[str]
    events: int
    cameras: Tuple[CameraHealth, ...] = field(default_factory=tuple)
    outbox_depth: Optional[int] = None
    oldest_unacked_age_s: Optional[float] = None


def boxes(store: CentralStore) -> List[BoxHealth]:
    """Every box seen (by a status or an event), by site and device id."""
    statuses = store.backend.query(
        "SELECT site, device_id, kind, camera_id, state, payload, at FROM status ORDER BY site, device_id, camera_id"
    )
    events = store.backend.query("SELECT site, device_id, MAX(at), COUNT(*) FROM events GROUP BY site, device_id")
    found: Dict[Tuple[str, str], Dict[str, Any]] = {}
    for site, device, kind, camera, state, payload, at in statuses:
        item = found.setdefault((site, device), {"cameras": []})
        body = json.loads(payload)
        if kind == "camera":
            item["cameras"].append(CameraHealth(camera, state, str(body.get("reason", "")), at))
        else:
            item.update(state=state, status_at=at, reason=body.get("reason"), gallery=body.get("gallery_version"))
    for site, device, last, count in events:
        found.setdefault((site, device), {"cameras": []}).update(last=last, events=int(count))
    return [
        BoxHealth(site, device, v.get("state"), v.get("status_at"), v.get("reason"), v.get("gallery"),
                  v.get("last"), v.get("events", 0), tuple(v["cameras"]))  # fmt: skip
        for (site, device), v in sorted(found.items())
    ]


def day_events(store: CentralStore, day: date, tz: Optional[tzinfo], types: Sequence[str]) -> List[Dict[str, Any]]:
    """The stored events of `types` whose local date (in `tz`; None: the central's zone) is `day`, by time."""
    since, until = (day - timedelta(days=1)).isoformat(), (day + timedelta(days=2)).isoformat()
    marks = ", ".join("?" for _ in types)
    rows = store.backend.query(
        f"SELECT event_id, site, device_id, type, person_id, at, payload FROM events "
        f"WHERE at >= ? AND at < ? AND type IN ({marks})",
        [since, until, *types],
    )
    out = []
    for event_id, site, device, kind, person, at, payload in rows:
        moment = datetime.fromisoformat(at)
        local = moment.astimezone(tz) if tz is not None else moment.astimezone()
        if local.date() == day:
            body = json.loads(payload)
            out.append({"event_id": event_id, "site": site, "device_id": device, "type": kind, "person_id": person,
                        "at": local, "camera_id": body.get("camera_id"), "score": body.get("score")})  # fmt: skip
    return sorted(out, key=lambda e: e["at"])


def event(store: CentralStore, event_id: str) -> Optional[Dict[str, Any]]:
    row = store.backend.one(
        "SELECT site, device_id, type, person_id, at, payload FROM events WHERE event_id = ?", [event_id]
    )
    if row is None:
        return None
    body = json.loads(row[5])
    return {"event_id": event_id, "site": row[0], "device_id": row[1], "type": row[2], "person_id": row[3],
            "at": datetime.fromisoformat(row[4]), "camera_id": body.get("camera_id")}  # fmt: skip
