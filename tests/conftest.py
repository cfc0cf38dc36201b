"""Pytest wiring: each local peer (git server, Kubernetes API test server, Key Vault, OCI
registry, Event Hubs over AMQP) lives in ``tests/peers`` with its own fixtures, registered here as plugins."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

pytest_plugins = [
    "tests.peers.git_server",
    "tests.peers.ssh_git_server",
    "tests.peers.kube_api",
    "tests.peers.keyvault",
    "tests.peers.arm",
    "tests.peers.oci_registry",
    "tests.peers.azurite",
    "tests.peers.http_targets",
    "tests.peers.raw_listener",
    "tests.peers.eventhub_amqp",
]


@pytest.fixture(scope="session")
def functions_by_name():
    """function_app indexed once per process, as the Functions worker does (``get_functions()``
    refuses a second call on the same app): ``{function name: Function}``."""
    from function_app import app

    return {fn.get_function_name(): fn for fn in app.get_functions()}
