"""A memo for one run's look-ups, shared by its worker threads (rotation, fleet status)."""

from __future__ import annotations

import threading
from typing import Any, Callable


class Memo:
    """``get(key, fn)`` runs ``fn`` once per key; concurrent callers of the same key wait for it, and
    every caller gets its result or its exception (raised again), so a PAT shared by 500 clusters is
    read and checked once. Entries live as long as the memo: make one per run."""

    def __init__(self):
        self._lock = threading.Lock()
        self._entries: dict[Any, tuple[threading.Event, list]] = {}

    def get(self, key: Any, fn: Callable[[], Any]) -> Any:
        with self._lock:
            entry = self._entries.get(key)
            owner = entry is None
            if owner:
                entry = self._entries[key] = (threading.Event(), [])
        event, box = entry
        if owner:
            try:
                box.append((True, fn()))
            except BaseException as exc:  # noqa: BLE001 - re-raised for every caller
                box.append((False, exc))
            finally:
                event.set()
        else:
            event.wait()
        ok, value = box[0]
        if ok:
            return value
        raise value

    def results(self) -> list:
        """The values of the calls that have returned (not the errors), e.g. to close them."""
        with self._lock:
            boxes = [box for _, box in self._entries.values()]
        return [box[0][1] for box in boxes if box and box[0][0]]


__all__ = ["Memo"]
