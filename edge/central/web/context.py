"""What every page of the console works with: the central's store and the parts over it, the clock, and (when the
console runs its own central) the MQTT side that pushes signed gallery commands and knows each box's stats."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timezone, tzinfo
from typing import Any, Callable, Dict, Optional, Protocol

from edge.central.office import Office
from edge.central.store import CentralStore
from edge.central.users import Users
from edge.central.web.records import Records
from edge.central.web.records import migrations as console_migrations


class Pusher(Protocol):
    """The central's MQTT side as the console uses it (edge.central.server.Central)."""

    def push(self, site: str, device: str, command: Dict[str, Any], timeout: float = 30.0) -> Dict[str, Any]: ...

    def stats_of(self, site: str, device: str) -> Optional[Dict[str, Any]]: ...


class CropSource(Protocol):
    """The central's crop store as the console uses it (edge.central.crops.CentralCrops)."""

    def read(self, event_id: str) -> Optional[bytes]: ...


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Console:
    """The console's dependencies. `central`: None for a console that only reads (no pushes, no box stats);
    `crops`: None when the central keeps no crops; `clock`: aware UTC now (tests move it)."""

    store: CentralStore
    central: Optional[Pusher] = None
    crops: Optional[CropSource] = None
    clock: Callable[[], datetime] = utc_now
    secure: bool = False
    """Served over HTTPS: cookies are Secure, and HSTS is sent."""
    push_timeout: float = 30.0
    office: Office = field(init=False)
    users: Users = field(init=False)
    records: Records = field(init=False)

    def __post_init__(self) -> None:
        self.store.backend.apply(console_migrations)
        self.office = Office(self.store)
        self.users = Users(self.store.backend)
        self.records = Records(self.store.backend)

    def zone(self) -> tzinfo:
        """The site's zone (the timetable's; else the central's own)."""
        tz = self.office.timetable().tz
        if tz is not None:
            return tz
        local = datetime.now().astimezone().tzinfo
        assert local is not None
        return local

    def today(self) -> date:
        return self.clock().astimezone(self.zone()).date()
