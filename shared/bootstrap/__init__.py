"""The bootstrap job: what ``flux bootstrap git`` does, as a service.

:mod:`.options` decodes and checks the flags or request fields; :mod:`.runner` runs the steps
(components, source secret, sync, health) over the git and cluster ports in :mod:`shared.ports`,
with the pure generators of :mod:`shared.flux`.
"""

from .options import (
    AZURE_DEVOPS_SCOPE,
    HTTP_BUDGET_SECONDS,
    MAX_TIMEOUT_SECONDS,
    BootstrapOptions,
    Credentials,
    options_from_request,
)
from .runner import BootstrapResult, Bootstrapper, Commit, Progress, load_objects, prepare

__all__ = [
    "AZURE_DEVOPS_SCOPE",
    "HTTP_BUDGET_SECONDS",
    "MAX_TIMEOUT_SECONDS",
    "BootstrapOptions",
    "BootstrapResult",
    "Bootstrapper",
    "Commit",
    "Credentials",
    "Progress",
    "load_objects",
    "options_from_request",
    "prepare",
]
