"""Pytest wiring: each local peer (git server, Kubernetes API test server, Key Vault, OCI
registry) lives in ``tests/peers`` with its own fixtures, registered here as plugins."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

pytest_plugins = [
    "tests.peers.git_server",
    "tests.peers.kube_api",
    "tests.peers.keyvault",
    "tests.peers.oci_registry",
]
