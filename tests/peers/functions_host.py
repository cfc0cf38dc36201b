"""The part of the Azure Functions host that runs a queue trigger, for tests and benchmarks (the host
itself cannot be installed here).

:class:`QueueListener` does for one indexed queue-trigger function what the host's queue listener does
(WebJobs Storage Queues extension, ``QueueListener``/``QueueProcessor``, with host.json
``extensions.queues``): it receives up to ``batchSize`` messages from the real queue (Azurite) and
keeps them invisible while they run; messages already past ``maxDequeueCount`` go to
``<queue>-poison`` without a call; each message is base64-decoded (``messageEncoding``) and turned
into a real ``func.QueueMessage`` by the library's own converter from the trigger metadata the host
sends (``Id``, ``DequeueCount``, ``InsertionTime``, ``ExpirationTime``, ``NextVisibleTime``,
``PopReceipt``); the user function runs on a thread pool, at most ``batchSize + newBatchThreshold``
at once; a message whose call returned is deleted; one whose call raised is made visible again after
``visibilityTimeout``, or, at ``maxDequeueCount``, copied to the poison queue and deleted.

:meth:`QueueListener.kill` stops it the way a lost instance stops: calls in flight are abandoned
(their messages are neither deleted nor released, so they reappear when their visibility ends).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]


def host_queue_settings() -> dict:
    """host.json's ``extensions.queues`` with the host's defaults for what it does not set."""
    settings = {"maxDequeueCount": 5, "visibilityTimeout": "00:00:00", "batchSize": 16, "newBatchThreshold": None,
                "maxPollingInterval": "00:01:00", "messageEncoding": "base64"}
    settings.update(json.loads((ROOT / "host.json").read_text()).get("extensions", {}).get("queues", {}))
    return settings


def _seconds(span: str) -> float:
    h, m, s = span.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


class _Killed(BaseException):
    """Raised in an abandoned call's thread when it next touches the listener (never caught by user code
    that catches Exception)."""


class QueueListener:
    """Runs ``function`` (an indexed ``azure.functions`` function: ``fn.get_user_function()``) for the
    messages of ``queue_client`` (an ``azure.storage.queue.QueueClient`` with no message policies:
    the text as stored). ``visibility_timeout`` overrides host.json's (tests use 0 so a retry comes
    at once); ``processing_visibility`` is how long a received message stays invisible while it runs
    (the host: 10 minutes, renewed)."""

    def __init__(self, function, queue_client, poison_client, *, visibility_timeout: float | None = None,
                 processing_visibility: int = 600, settings: dict | None = None):
        self.settings = settings or host_queue_settings()
        self.function = function
        self.queue = queue_client
        self.poison = poison_client
        self.max_dequeue = int(self.settings["maxDequeueCount"])
        self.batch_size = int(self.settings["batchSize"])
        threshold = self.settings.get("newBatchThreshold")
        self.new_batch_threshold = int(threshold) if threshold is not None else self.batch_size // 2
        self.visibility_timeout = (_seconds(self.settings["visibilityTimeout"]) if visibility_timeout is None
                                   else visibility_timeout)
        self.processing_visibility = processing_visibility
        self.calls: list[dict] = []  # one entry per call: id, dequeueCount, outcome
        self._pool = ThreadPoolExecutor(self.batch_size + self.new_batch_threshold, thread_name_prefix="queue-trigger")
        self._in_flight = 0
        self._lock = threading.Lock()
        self._killed = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- one message ------------------------------------------------------------------------------

    def _message(self, m):
        import azure.functions as func
        from azure.functions import meta
        from azure.functions.queue import QueueMessageInConverter

        text = m.content
        body = base64.b64decode(text) if self.settings.get("messageEncoding", "base64") == "base64" else text.encode()

        def when(value):
            return meta.Datum(value.isoformat().replace("+00:00", "Z") if value else None, "string" if value else None)

        metadata = {"Id": meta.Datum(m.id, "string"), "DequeueCount": meta.Datum(str(m.dequeue_count), "json"),
                    "InsertionTime": when(m.inserted_on), "ExpirationTime": when(m.expires_on),
                    "NextVisibleTime": when(m.next_visible_on), "PopReceipt": meta.Datum(m.pop_receipt, "string")}
        msg = QueueMessageInConverter.decode(meta.Datum(body, "bytes"), trigger_metadata=metadata)
        assert isinstance(msg, func.QueueMessage)
        return msg

    def _to_poison(self, m) -> None:
        self.poison.send_message(m.content)
        self.queue.delete_message(m.id, m.pop_receipt)

    def _invoke(self, m) -> None:
        outcome = "ok"
        try:
            self.function(self._message(m))
        except _Killed:
            return
        except Exception as exc:  # noqa: BLE001 - the host logs and releases the message
            outcome = f"{type(exc).__name__}: {exc}"
        finally:
            with self._lock:
                self._in_flight -= 1
        if self._killed.is_set():
            return  # the instance is gone: nothing is deleted or released
        self.calls.append({"id": m.id, "dequeueCount": m.dequeue_count, "outcome": outcome})
        try:
            if outcome == "ok":
                self.queue.delete_message(m.id, m.pop_receipt)
            elif m.dequeue_count >= self.max_dequeue:
                self._to_poison(m)
            else:
                self.queue.update_message(m.id, m.pop_receipt, visibility_timeout=int(self.visibility_timeout))
        except Exception:  # noqa: BLE001 - e.g. the pop receipt moved: the message reappears by itself
            log.warning("queue listener: could not complete message %s", m.id, exc_info=True)

    # -- polling ---------------------------------------------------------------------------------

    def poll_once(self) -> int:
        """Receive one batch (if there is room) and start its calls; the number started."""
        with self._lock:
            room = self.batch_size + self.new_batch_threshold - self._in_flight
        if room < self.batch_size or self._killed.is_set():
            return 0
        started = 0
        for m in self.queue.receive_messages(messages_per_page=self.batch_size, max_messages=self.batch_size,
                                             visibility_timeout=self.processing_visibility):
            if m.dequeue_count > self.max_dequeue:
                self._to_poison(m)
                continue
            with self._lock:
                self._in_flight += 1
            self._pool.submit(self._invoke, m)
            started += 1
        return started

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def start(self, poll_interval: float = 0.05) -> "QueueListener":
        def loop():
            while not self._stop.is_set() and not self._killed.is_set():
                try:
                    if not self.poll_once():
                        self._stop.wait(poll_interval)
                except Exception:  # noqa: BLE001 - storage hiccup: poll again
                    log.warning("queue listener: poll failed", exc_info=True)
                    self._stop.wait(poll_interval)

        self._thread = threading.Thread(target=loop, name="queue-listener", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """A clean stop: no new message; calls in flight finish and complete their messages."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        self._pool.shutdown(wait=True)

    def kill(self) -> None:
        """A lost instance: stop receiving, and abandon the calls in flight (their results are never
        reported: the messages stay invisible until their visibility ends, then come back)."""
        self._killed.set()
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def step(self, timeout: float = 60.0) -> int:
        """One poll, then wait until its calls are over; the number of calls made."""
        started = self.poll_once()
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.in_flight:
            raise TimeoutError(f"{self.in_flight} call(s) still running after {timeout:g} s")
        return started

    def drain(self, done, timeout: float = 60.0, interval: float = 0.05) -> None:
        """Poll until ``done()`` is true and nothing is in flight (or raise TimeoutError)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._thread is None:
                self.poll_once()
            if self.in_flight == 0 and done():
                return
            time.sleep(interval)
        raise TimeoutError(f"queue not drained in {timeout:g} s ({self.in_flight} call(s) in flight)")
