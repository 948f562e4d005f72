"""The `ops:` config section: where the daemon writes its status, when disk space counts as low, the optional local
metrics endpoint. A leaf module: edge.config imports it, it imports nothing of edge."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional


@dataclass(frozen=True)
class OpsConfig:
    """How a box can be looked into: `edge status`, `edge doctor`, /healthz and /metrics."""

    status_file: Optional[Path] = None
    """JSON file the daemon rewrites atomically once a second (cameras, outbox, last event...); read by
    `edge status`. null = beside the database: <database>.status.json."""
    min_free_mb: float = 200.0
    """Less free disk than this (MB) where the database lives is a problem for `edge status` and `edge doctor`."""
    max_unacked_age_s: float = 3600.0
    """An event the central has not acknowledged for this long is a problem for `edge status` (broker or central
    down)."""
    metrics_port: int = 0
    """Port of the local HTTP endpoint with /healthz and Prometheus /metrics; 0 = off (the default)."""
    metrics_host: str = "127.0.0.1"
    """Address the endpoint binds to: keep it on loopback unless a firewall guards the box."""

    def __post_init__(self) -> None:
        if self.min_free_mb < 0:
            raise ValueError(f"min_free_mb must be >= 0, got {self.min_free_mb}")
        if self.max_unacked_age_s <= 0:
            raise ValueError(f"max_unacked_age_s must be > 0, got {self.max_unacked_age_s}")
        if not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port must be within 0..65535 (0 = off), got {self.metrics_port}")
        if not self.metrics_host.strip():
            raise ValueError("metrics_host must be an address such as 127.0.0.1")


def status_path(ops: OpsConfig, database: Path) -> Path:
    """Where the daemon writes its status: ops.status_file, else beside the database."""
    return ops.status_file if ops.status_file is not None else database.with_name(database.name + ".status.json")
