"""Gallery commands from the central server, applied on a thread of their own: a big sync (hundreds of photos to
decode, detect and embed) must not hold up the pipeline, nor the systemd watchdog the pipeline loop feeds.

    worker = GalleryWorker(link.commands, link, make_sync, version=gallery.version).start()
    ...
    if not worker.alive: ...    # checked by the pipeline loop before it feeds the watchdog
    worker.close()

`make_sync(stack)` runs on the worker thread at the first command: it opens the worker's own gallery connection and
its own detector and embedder (entered on `stack`, closed when the thread ends) and returns the GallerySync that
applies commands. The pipeline keeps its own connection: it sees the new gallery version between frames
(`Gallery.index` checks the version on every frame). Each command's result is published as soon as it is done.
"""

from __future__ import annotations

import logging
import queue
import threading
from contextlib import ExitStack
from typing import Any, Callable, Dict, Optional, Protocol

from edge.mqtt.contract import gallery_result_payload

log = logging.getLogger("edge.daemon")

CLOSE_TIMEOUT_S = 10.0
"""How long `close` waits for a command being applied (well within systemd's TimeoutStopSec=30). A sync cut short
by the exit writes nothing (it is one transaction) and sends no result."""


class Applier(Protocol):
    def apply(self, command: Dict[str, Any]) -> Dict[str, Any]: ...


class ResultSink(Protocol):
    """Where results go (the MQTT link)."""

    def publish_result(self, result: Dict[str, Any]) -> None: ...

    def set_gallery_version(self, version: int) -> None: ...


SyncFactory = Callable[[ExitStack], Applier]


class GalleryWorker:
    """One thread that takes gallery commands from `commands`, applies them and hands each result to `sink`."""

    def __init__(self, commands: queue.Queue, sink: ResultSink, make_sync: SyncFactory, version: int = 0) -> None:  # type: ignore[type-arg]
        self._commands = commands
        self._sink = sink
        self._make_sync = make_sync
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.version = version
        """The gallery version of the last result."""
        self.applied = 0

    def start(self) -> GalleryWorker:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="gallery", daemon=True)
            self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        """False once the thread has ended without being asked to."""
        return self._stop.is_set() or self._thread is None or self._thread.is_alive()

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the gallery worker is still applying a command after %g s; leaving it", timeout)

    def _run(self) -> None:
        try:
            self._serve()
        except Exception:  # the thread ends: `alive` turns False and the pipeline loop stops the daemon
            log.exception("the gallery worker failed and stopped")

    def _serve(self) -> None:
        with ExitStack() as stack:
            sync: Optional[Applier] = None
            while not self._stop.is_set():
                try:
                    command = self._commands.get(timeout=0.2)
                except queue.Empty:
                    continue
                try:
                    if sync is None:
                        sync = self._make_sync(stack)
                    result = sync.apply(command)
                except Exception as exc:  # apply() never raises; opening the models might: refuse, keep serving
                    log.exception("gallery command could not be applied")
                    result = refusal(command, f"internal error: {type(exc).__name__}: {exc}", self.version)
                self._finish(result)

    def _finish(self, result: Dict[str, Any]) -> None:
        self.applied += 1
        self.version = int(result.get("gallery_version") or self.version)
        log.info("gallery %s %s: %s %s", result.get("op"), result.get("request_id"), result["status"], result["reason"])
        self._sink.publish_result(result)
        self._sink.set_gallery_version(self.version)


def refusal(command: Any, reason: str, version: int) -> Dict[str, Any]:
    """A `rejected` result for a command that could not be handled at all."""
    fields = command if isinstance(command, dict) else {}
    request_id, op = fields.get("request_id"), fields.get("op")
    return gallery_result_payload(
        request_id if isinstance(request_id, str) else None,
        op if isinstance(op, str) else None,
        "rejected",
        reason,
        version,
    )
