"""The central's health as Prometheus metrics (`edge central run --metrics-port`), read from the fleet tables in its
store (edge/central/fleet.py) at each scrape, so it shows every worker of the store, wherever they run:

- edge_central_workers: workers whose heartbeat is recent; edge_central_worker_events_total and
  edge_central_events_per_second per worker (the sum is the central's rate);
- per box: edge_central_box_outbox_depth and edge_central_box_oldest_unacked_seconds (the box's lag, from its latest
  stats), edge_central_box_unacked_seqs (its last seq minus what the central acknowledged contiguously) and
  edge_central_box_stats_age_seconds (how old those stats are: a box that stopped reporting shows here).

/healthz answers 200 "ok" while at least one worker is alive, else 503.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterator, Tuple

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from edge.central import fleet
from edge.central.store import CentralStore
from edge.ops.metrics import MetricsHttpServer


class FleetCollector(Collector):
    """Prometheus metrics from the store's fleet tables, read at each scrape."""

    def __init__(self, store: CentralStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Any]:
        now = datetime.now(timezone.utc)
        rows = fleet.workers(self.store)
        alive = [w for w in rows if w.alive(now)]
        yield GaugeMetricFamily("edge_central_workers", "Central workers with a recent heartbeat", value=len(alive))
        events = CounterMetricFamily("edge_central_worker_events", "Events stored by each worker", labels=["worker"])
        rate = GaugeMetricFamily(
            "edge_central_events_per_second", "Events stored per second by each worker", labels=["worker"]
        )
        for w in alive:
            events.add_metric([w.worker_id], w.events)
            rate.add_metric([w.worker_id], w.events_per_s)
        yield events
        yield rate
        labels = ["site", "device"]
        depth = GaugeMetricFamily("edge_central_box_outbox_depth", "Events a box holds unacknowledged", labels=labels)
        oldest = GaugeMetricFamily(
            "edge_central_box_oldest_unacked_seconds", "Age of a box's oldest unacknowledged event", labels=labels
        )
        behind = GaugeMetricFamily(
            "edge_central_box_unacked_seqs", "A box's last seq minus the central's contiguous ack", labels=labels
        )
        age = GaugeMetricFamily("edge_central_box_stats_age_seconds", "Age of a box's latest stats", labels=labels)
        for box in fleet.box_lags(self.store):
            label = [box.site, box.device_id]
            depth.add_metric(label, box.depth)
            oldest.add_metric(label, box.oldest_unacked_age_s or 0.0)
            behind.add_metric(label, max(0, box.last_seq - box.central_acked_up_to))
            received = datetime.fromisoformat(box.received_at)
            age.add_metric(label, max(0.0, (now - received).total_seconds()))
        yield from (depth, oldest, behind, age)


class HealthServer(MetricsHttpServer):
    """The central's /metrics (the fleet's figures from the store) and /healthz (a worker is running)."""

    label = "central metrics"

    def __init__(self, store: CentralStore, host: str = "127.0.0.1", port: int = 0) -> None:
        self.store = store
        registry = CollectorRegistry(auto_describe=False)
        registry.register(FleetCollector(store))
        super().__init__(registry, host, port, "central-metrics")

    def health(self) -> Tuple[int, str]:
        alive = [w for w in fleet.workers(self.store) if w.alive()]
        return (200, "ok\n") if alive else (503, "no central worker is running\n")
