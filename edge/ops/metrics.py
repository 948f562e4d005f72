"""The optional local HTTP endpoint (`ops.metrics_port`, off by default, bound to `ops.metrics_host`, 127.0.0.1):
`/healthz` (200 "ok", or 503 with one line per problem, the same problems as `edge status`) and `/metrics` in the
Prometheus text format, made with the official client library (prometheus_client).

The daemon hands `MetricsServer.update` the status document it writes each tick; a scrape reads the latest one
(under a lock: the HTTP server has its own thread), so serving metrics never touches the pipeline's objects.
"""

from __future__ import annotations

import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Iterator, Optional, Tuple, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from edge.ops.settings import OpsConfig
from edge.ops.status import problems

log = logging.getLogger("edge.metrics")


class StatusCollector(Collector):
    """Prometheus metrics from the latest status document."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._status: Optional[Dict[str, Any]] = None

    def update(self, status: Dict[str, Any]) -> None:
        with self._lock:
            self._status = status

    def latest(self) -> Optional[Dict[str, Any]]:
        with self._lock:
            return self._status

    def collect(self) -> Iterator[Any]:
        status = self.latest()
        if status is None:
            return
        info = GaugeMetricFamily(
            "edge_info", "This box: device, software version, model", labels=["device", "version", "model"]
        )
        info.add_metric(
            [str(status.get("device_id")), str(status.get("software_version")), str(status.get("model_id"))], 1
        )
        yield info
        yield GaugeMetricFamily(
            "edge_uptime_seconds", "Seconds since the daemon started", value=status.get("uptime_s", 0)
        )
        yield GaugeMetricFamily(
            "edge_gallery_version", "Gallery version in use", value=status.get("gallery_version", 0)
        )
        yield from self._cameras(status)
        events = CounterMetricFamily("edge_events", "Events stored since start, by type", labels=["type"])
        for kind, count in sorted((status.get("events_by_type") or {}).items()):
            events.add_metric([kind], count)
        yield events
        outbox = status.get("outbox") or {}
        if outbox.get("depth") is not None:
            yield GaugeMetricFamily(
                "edge_outbox_depth", "Events not yet acknowledged by the central", value=outbox["depth"]
            )
        oldest = outbox.get("oldest_unacked_age_s")
        yield GaugeMetricFamily(
            "edge_outbox_oldest_unacked_seconds", "Age of the oldest unacknowledged event (0: none)", value=oldest or 0
        )
        queues = status.get("queues") or {}
        depth = GaugeMetricFamily("edge_queue_depth", "Items waiting in the daemon's queues", labels=["queue"])
        for name, value in sorted(queues.items()):
            depth.add_metric([name], value)
        yield depth
        broker = status.get("broker") or {}
        yield GaugeMetricFamily(
            "edge_broker_connected", "1 when connected to the broker", value=int(bool(broker.get("connected")))
        )
        free = (status.get("disk") or {}).get("free_bytes")
        if free is not None:
            yield GaugeMetricFamily("edge_disk_free_bytes", "Free disk where the database lives", value=free)

    def _cameras(self, status: Dict[str, Any]) -> Iterator[Any]:
        gauges = {
            "fps": GaugeMetricFamily("edge_camera_fps", "Frames processed per second", labels=["camera"]),
            "online": GaugeMetricFamily("edge_camera_online", "1 when the camera is online", labels=["camera"]),
            "detect": GaugeMetricFamily("edge_detect_ms", "Mean detection time per frame, ms", labels=["camera"]),
            "embed": GaugeMetricFamily("edge_embed_ms", "Mean embedding time per face, ms", labels=["camera"]),
        }
        counters = {
            "frames_read": CounterMetricFamily(
                "edge_camera_frames_read", "Frames read from the camera", labels=["camera"]
            ),
            "frames_dropped": CounterMetricFamily(
                "edge_camera_frames_dropped",
                "Frames read but never processed (pushed out of the buffer, or skipped by max_fps)",
                labels=["camera"],
            ),
            "frames_processed": CounterMetricFamily(
                "edge_frames_processed", "Frames run through the pipeline", labels=["camera"]
            ),
            "embeddings": CounterMetricFamily("edge_embeddings", "Faces embedded", labels=["camera"]),
            "reconnects": CounterMetricFamily(
                "edge_camera_reconnects", "Times the camera was reopened", labels=["camera"]
            ),
        }
        for cam in status.get("cameras", []):
            label = [str(cam["camera_id"])]
            gauges["fps"].add_metric(label, cam.get("fps", 0.0))
            gauges["online"].add_metric(label, int(cam.get("state") == "online"))
            gauges["detect"].add_metric(label, cam.get("detect_ms", 0.0))
            gauges["embed"].add_metric(label, cam.get("embed_ms", 0.0))
            for key, family in counters.items():
                family.add_metric(label, cam.get(key, 0))
        yield from gauges.values()
        yield from counters.values()


class MetricsHttpServer:
    """/metrics (a Prometheus registry) and /healthz (`health()`) on a thread of their own; `close` stops it. The
    box's MetricsServer and the central's HealthServer (edge.central.health) are this with their own collector."""

    label = "metrics and health"

    def __init__(self, registry: CollectorRegistry, host: str, port: int, thread_name: str) -> None:
        self.registry = registry
        self.httpd = ThreadingHTTPServer((host, port), self._handler())
        self.httpd.daemon_threads = True
        self.host, self.port = host, int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, name=thread_name, daemon=True)

    def start(self: S) -> S:
        self._thread.start()
        log.info("%s on http://%s:%d/metrics and /healthz", self.label, self.host, self.port)
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)

    def health(self) -> Tuple[int, str]:
        raise NotImplementedError

    def _handler(self) -> type:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                try:
                    if self.path == "/metrics":
                        code, body, kind = 200, generate_latest(server.registry), CONTENT_TYPE_LATEST
                    elif self.path == "/healthz":
                        code, text = server.health()
                        body, kind = text.encode(), "text/plain; charset=utf-8"
                    else:
                        code, body, kind = 404, b"not found: /metrics or /healthz\n", "text/plain; charset=utf-8"
                except Exception as exc:  # what the figures come from is unreadable (a store): say so, keep serving
                    code, body, kind = 503, f"unreadable: {exc}\n".encode(), "text/plain; charset=utf-8"
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the http.server API
                log.debug("metrics: " + format, *args)

        return Handler


S = TypeVar("S", bound=MetricsHttpServer)


class MetricsServer(MetricsHttpServer):
    """The box's /healthz and /metrics, from the status the daemon hands it."""

    def __init__(self, ops: OpsConfig) -> None:
        self.ops = ops
        self.collector = StatusCollector()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self.collector)
        super().__init__(registry, ops.metrics_host, ops.metrics_port, "edge-metrics")

    def update(self, status: Dict[str, Any]) -> None:
        self.collector.update(status)

    def health(self) -> Tuple[int, str]:
        status = self.collector.latest()
        if status is None:
            return 503, "starting\n"
        found = problems(status, time.time(), self.ops.min_free_mb, self.ops.max_unacked_age_s)
        if found:
            return 503, "".join(f"{p.what}: {p.detail}\n" for p in found)
        return 200, "ok\n"
