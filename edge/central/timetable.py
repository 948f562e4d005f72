"""The office's timetable (pure): the sessions per weekday and group, holidays and closures, one-off changes, the
tolerances, and the site's time zone.

The sessions, closures and changes are the box's own schedule model (edge.schedule.ScheduleConfig): the central
sends exactly that to each box (edge/timetable.py), so a box's `late` / `early_leave` and the office's report
follow the same rules on the same data. The time zone is the central's only addition: the report turns event
times into the site's local dates and session times with it (each box has it in its config, site.timezone).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, tzinfo
from typing import Any, Dict, List, Optional
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from edge.config.tree import load_yaml_tree
from edge.errors import ConfigError
from edge.schedule import ScheduleConfig, SessionSpan, sessions_for
from edge.timetable import schedule_document, schedule_from_document


@dataclass(frozen=True)
class Timetable:
    """The office's timetable: the schedule every box follows, and the site's IANA time zone (None: the central's
    own local zone)."""

    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    timezone: Optional[str] = None

    def __post_init__(self) -> None:
        if self.timezone is not None:
            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"timezone must be an IANA zone such as Asia/Seoul, got {self.timezone!r}") from None

    @property
    def tz(self) -> Optional[tzinfo]:
        """The site's zone (None: the central's local zone, as datetime.astimezone() picks it)."""
        return ZoneInfo(self.timezone) if self.timezone is not None else None

    def sessions(self, group: Optional[str], day: date) -> List[SessionSpan]:
        """The sessions a person of `group` follows on `day` (none on a closure), in start order."""
        tz = self.tz if self.tz is not None else _local_zone()
        return sessions_for(self.schedule, group, day, tz)

    def document(self) -> Dict[str, Any]:
        """The JSON form: {"timezone": ..., "schedule": {...}} (the schedule part is what boxes receive)."""
        return {"timezone": self.timezone, "schedule": schedule_document(self.schedule)}


def _local_zone() -> tzinfo:
    from datetime import datetime

    zone = datetime.now().astimezone().tzinfo
    assert zone is not None
    return zone


def timetable_from_document(document: Any, source: str = "timetable") -> Timetable:
    """A Timetable from its JSON form; ConfigError names what is wrong."""
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: expected an object with 'schedule' and 'timezone'")
    unknown = sorted(set(document) - {"schedule", "timezone"})
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r}; known keys here: schedule, timezone")
    schedule = schedule_from_document(document.get("schedule", {}), f"{source}: schedule")
    try:
        return Timetable(schedule, document.get("timezone"))
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_timetable(text: str, source: str) -> Timetable:
    """A timetable file (YAML or JSON) with `timezone` and the schedule's keys at the top level (the YAML
    config's `attendance.schedule` section plus a `timezone` line)."""
    try:
        raw = json.loads(text)
        tz = raw.pop("timezone", None) if isinstance(raw, dict) else None
        return timetable_from_document({"schedule": raw, "timezone": tz}, source)
    except json.JSONDecodeError:
        pass
    import yaml

    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({exc})") from None
    tz = loaded.get("timezone") if isinstance(loaded, dict) else None
    # the schedule's own loader checks the rest; the timezone line is blanked, so error line numbers still match
    body = "\n".join("" if line.startswith("timezone:") else line for line in text.splitlines())
    schedule = load_yaml_tree(ScheduleConfig, body, source)
    try:
        return Timetable(schedule, tz)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
