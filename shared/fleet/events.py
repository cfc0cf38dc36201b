"""The fleet's own events: an operation or a wave finished or failed.

Every event is logged (one line, INFO for success, WARNING for failure) and handed to the app's
event publisher when the app has one (issue #15: ``shared.notify.app_events.publish(reason, payload)``),
so notification routes can forward it like a Flux event. Until that publisher exists this module is
the hook: :func:`emit` is the one place that has to call it. Publishing never raises and never holds
a credential; payloads carry names, counts and states only.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

#: event reasons, in Flux's CamelCase style
OPERATION_SUCCEEDED = "FleetOperationSucceeded"
OPERATION_FAILED = "FleetOperationFailed"
WAVE_SUCCEEDED = "FleetWaveSucceeded"
WAVE_FAILED = "FleetWaveFailed"


def _publisher():
    """The app's event publisher (``publish(reason, payload)``), or None when the app has none."""
    try:
        from shared.notify import app_events  # type: ignore[attr-defined]
    except ImportError:
        return None
    return getattr(app_events, "publish", None)


def emit(reason: str, payload: dict[str, Any]) -> None:
    """Log ``reason`` with ``payload`` (``operation``, ``kind``, ``wave``, ``counts``, ``message``) and
    publish it when the app has a publisher. Never raises."""
    failed = reason in (OPERATION_FAILED, WAVE_FAILED)
    (log.warning if failed else log.info)("fleet event %s: %s", reason, payload)
    publish = _publisher()
    if publish is None:
        return
    try:
        publish(reason, payload)
    except Exception:  # noqa: BLE001 - an event must never fail the operation
        log.warning("fleet event %s could not be published", reason, exc_info=True)


__all__ = ["OPERATION_FAILED", "OPERATION_SUCCEEDED", "WAVE_FAILED", "WAVE_SUCCEEDED", "emit"]
