"""The central's timetable on the box: its JSON document <-> ScheduleConfig, and which schedule a box follows.

The central keeps one timetable (sessions, holidays, one-off changes) and sends it to each box in a signed
gallery command (op `timetable`, edge/gallery/sync.py); the box keeps it in its gallery database. While one is stored,
the box follows it instead of the YAML `attendance.schedule`; a box that never got one (no central) follows its
YAML, and a `timetable` command with a null document hands the box back to its YAML.

The document is the YAML schedule's own tree as JSON (the same keys, the same checks, the same error messages):

    {"grace_min": 5, "sessions": [{"name": "morning", "start": "09:00", "end": "12:00"}],
     "closures": [{"start": "2025-03-03", "reason": "holiday"}], "changes": []}
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from dataclasses import replace
from typing import Any, Dict, Optional

from edge.attendance import AttendanceConfig
from edge.config.tree import load_yaml_tree
from edge.errors import ConfigError
from edge.gallery.store import Gallery
from edge.schedule import ScheduleConfig

log = logging.getLogger("edge.timetable")


def schedule_document(schedule: ScheduleConfig) -> Dict[str, Any]:
    """The JSON document of a schedule (tuples become lists; every key written, defaults included)."""
    return json.loads(json.dumps(dataclasses.asdict(schedule)))  # type: ignore[no-any-return]


def schedule_from_document(document: Any, source: str = "timetable") -> ScheduleConfig:
    """A schedule from its JSON document, checked like the YAML one; ConfigError names the key path."""
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: a timetable must be a JSON object, got {type(document).__name__}")
    try:
        return load_yaml_tree(ScheduleConfig, json.dumps(document), source)
    except ConfigError as exc:  # the document is one line of JSON: its line numbers say nothing
        raise ConfigError(re.sub(r" \(line \d+\)", "", str(exc))) from None


def effective_attendance(attendance: AttendanceConfig, central: Optional[ScheduleConfig]) -> AttendanceConfig:
    """The attendance config a box runs: its YAML one, with the central's timetable when it has one."""
    return attendance if central is None else replace(attendance, schedule=central)


def central_schedule(gallery: Gallery) -> Optional[ScheduleConfig]:
    """The central's timetable stored in the gallery (None: none, or unreadable, then the YAML one is followed)."""
    document = gallery.timetable_document()
    if document is None:
        return None
    try:
        return schedule_from_document(document, "the central's timetable")
    except ConfigError as exc:  # checked when it arrived; a newer edge may have stored keys this one does not know
        log.warning("%s; following the YAML schedule", exc)
        return None
