"""The fleet's own events: an operation or an upgrade wave finished or failed.

Each is logged (INFO when it succeeded, WARNING when it failed) and published as one of the app's own
Flux events (:func:`shared.notify.app_events.fleet_operation`, kind ``FleetCluster``, name ``fleet``),
so notification routes forward it like any Flux event (``eventSources: [{kind: FleetCluster, name:
"*"}]``). Reasons: ``FleetBootstrapSucceeded``/``FleetBootstrapFailed``,
``FleetUpgradeSucceeded``/``FleetUpgradeFailed`` for the operation, ``UpgradeWaveSucceeded``/
``UpgradeWaveFailed`` for a wave of an upgrade; ``metadata`` holds ``operationId``, ``kind``, the
``wave`` and ``waves``, the ``version`` and the counts (``succeededClusters``, ``failedClusters``...). Each cluster's own bootstrap is announced as ``POST /api/bootstrap`` announces it
(:func:`shared.notify.app_events.announce_bootstrap`). Publishing is best effort: it never raises and
never fails an operation.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

_OPERATIONS = {"bootstrap": "FleetBootstrap", "upgrade": "FleetUpgrade"}


def emit(op, *, succeeded: bool, message: str, counts: dict, wave: int | None = None) -> None:
    """Announce that operation ``op`` (a :class:`shared.fleet.store.Operation`) or its ``wave`` (0-based)
    finished (``succeeded``) or failed, with ``message`` and the item ``counts``. Never raises."""
    name = "UpgradeWave" if wave is not None else _OPERATIONS.get(op.kind, "FleetOperation")
    metadata = {"operationId": op.id, "kind": op.kind, **{f"{k}Clusters": str(v) for k, v in counts.items() if v}}
    if wave is not None:
        metadata["wave"] = str(wave + 1)
        metadata["waves"] = str(op.waves)
    if op.spec.get("version"):
        metadata["version"] = str(op.spec["version"])
    (log.info if succeeded else log.warning)("fleet %s %s %s: %s", name, op.id, "succeeded" if succeeded else "failed",
                                             message)
    try:
        from shared.notify import app_events

        app_events.publish([app_events.fleet_operation(name, succeeded=succeeded, message=message, **metadata)],
                           what="fleet event")
    except Exception:  # noqa: BLE001 - an event never fails the operation
        log.warning("fleet event of operation %s could not be published", op.id, exc_info=True)


def announce_cluster(request, result=None, error: str | None = None) -> None:
    """One cluster of a fleet bootstrap, announced as ``POST /api/bootstrap`` announces a bootstrap
    (``BootstrapSucceeded``/``BootstrapFailed``). ``request``: the checked
    :class:`shared.bootstrap.service.Request`. Never raises."""
    try:
        from shared.notify import app_events

        opts = request.opts
        app_events.announce_bootstrap(request.refs["clusterName"], namespace=opts.namespace, url=opts.sync_url,
                                      branch=opts.branch, path=opts.path, result=result, error=error)
    except Exception:  # noqa: BLE001
        log.warning("bootstrap event could not be published", exc_info=True)


__all__ = ["announce_cluster", "emit"]
