"""The rotation job: keeps every registered cluster's Git and Event Hub credentials fresh.

:mod:`.registry` is the cluster registry (Azure Table storage); :mod:`.rotator` is the run over it
(the timer's work), through the cluster port (:mod:`shared.ports.kube`), the git port (credential
checks) and Key Vault (:mod:`shared.ports.azure.keyvault`).
"""

from .rotator import (
    ADO_SCOPE,
    EVENTHUB_AUDIENCE,
    EVENTHUB_SCOPE,
    REQUESTED_AT,
    ClusterResult,
    RotationSettings,
    RotationSummary,
    Rotator,
    digest,
    jwt_expiry,
    rfc3339nano,
    rotate,
    rotate_all,
    rotate_cluster,
)

__all__ = [
    "ADO_SCOPE",
    "EVENTHUB_AUDIENCE",
    "EVENTHUB_SCOPE",
    "REQUESTED_AT",
    "ClusterResult",
    "RotationSettings",
    "RotationSummary",
    "Rotator",
    "digest",
    "jwt_expiry",
    "rfc3339nano",
    "rotate",
    "rotate_all",
    "rotate_cluster",
]
