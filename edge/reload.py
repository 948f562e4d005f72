"""SIGHUP: a new config for the running daemon, applied between two frames on the pipeline thread.

What changes live: `attendance` (schedule, windows, cooldowns, gates), `matcher` (threshold, margin), `quality`,
`tracker`, and `cameras` (added, removed, changed: only those are opened or closed; the others keep streaming).
What needs a restart (the identity, storage, models, broker, crops, liveness and ops): the new value is reported and
the running one kept. A file that does not load or validate is refused whole; the running config stays.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Tuple

from edge.config import Config

LIVE = ("attendance", "matcher", "quality", "tracker", "cameras")
RESTART = ("device", "storage", "detector", "embedder", "mqtt", "crops", "liveness", "ops")


@dataclass(frozen=True)
class ReloadPlan:
    config: Config
    """The config in force after the reload: the live sections from the new file, the others as they were."""
    applied: Tuple[str, ...]
    """Live sections that changed."""
    needs_restart: Tuple[str, ...]
    """Sections that changed in the file but only take effect at the next start."""
    cameras_changed: Tuple[str, ...]
    """Camera ids added, removed or changed (only these are reopened or closed)."""


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    applied = tuple(name for name in LIVE if getattr(old, name) != getattr(new, name))
    needs_restart = tuple(name for name in RESTART if getattr(old, name) != getattr(new, name))
    before = {c.id: c for c in old.cameras}
    after = {c.id: c for c in new.cameras}
    changed = tuple(sorted(i for i in before.keys() | after.keys() if before.get(i) != after.get(i)))
    live = {name: getattr(new, name) for name in LIVE}
    return ReloadPlan(dataclasses.replace(old, **live), applied, needs_restart, changed)
