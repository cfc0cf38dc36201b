"""The storage account from app settings (shared/ports/azure/storage.py), as each user of it reads it:
the cluster registry, the fleet's table and queue, the forwarder's table and blobs. The connection
string paths run against Azurite in the job's own tests; here the identity-based endpoints and the
errors, which need no account (building a client opens no connection)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from shared import errors
from shared.fleet.store import OperationStore
from shared.notify.storage import Storage
from shared.ports.azure.queue import WorkQueue
from shared.ports.azure.storage import StorageAccount, storage_account
from shared.rotation.registry import Registry

AZURITE = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;TableEndpoint=http://127.0.0.1:1/devstoreaccount1;"


def test_a_connection_string_wins_and_the_own_setting_before_the_hosts():
    env = {"AzureWebJobsStorage": "host-conn", "AzureWebJobsStorage__accountName": "stfleet"}
    assert storage_account(env).connection_string == "host-conn"
    assert storage_account({**env, "REGISTRY_STORAGE_CONNECTION": " own-conn "}, "REGISTRY_STORAGE_CONNECTION",
                           ).connection_string == "own-conn"
    # the caller's own setting is not read for the host's account
    assert storage_account({"REGISTRY_STORAGE_CONNECTION": "own-conn", "AzureWebJobsStorage__accountName": "stfleet"},
                           services=("queue",)).endpoints == {"queue": "https://stfleet.queue.core.windows.net"}
    assert "own-conn" not in repr(storage_account({"X": "own-conn"}, "X"))


def test_identity_based_endpoints_per_service():
    env = {"AzureWebJobsStorage__accountName": "stfleet",
           "AzureWebJobsStorage__tableServiceUri": " https://stfleet.table.core.usgovcloudapi.net/ "}
    acct = storage_account(env, services=("blob", "queue", "table"))
    assert acct.connection_string is None
    assert acct.endpoints == {"blob": "https://stfleet.blob.core.windows.net",
                              "queue": "https://stfleet.queue.core.windows.net",
                              "table": "https://stfleet.table.core.usgovcloudapi.net/"}
    # no account name: each service needs its URI
    only_queue = {"AzureWebJobsStorage__queueServiceUri": "https://q.example"}
    assert storage_account(only_queue, services=("queue",)).endpoints == {"queue": "https://q.example"}
    with pytest.raises(errors.SettingError) as err:
        storage_account(only_queue, services=("queue", "table"))
    assert err.value.field == "AzureWebJobsStorage" and err.value.status == 500
    assert "AzureWebJobsStorage__tableServiceUri" in str(err.value)


@pytest.mark.parametrize("build, field, words", [
    (lambda env: Registry.from_settings(env), "REGISTRY_STORAGE_CONNECTION", "the registry lives in Azure Table storage"),
    (lambda env: OperationStore.from_settings(env), "AzureWebJobsStorage", "AzureWebJobsStorage__tableServiceUri"),
    (lambda env: WorkQueue.from_settings(env), "AzureWebJobsStorage", "AzureWebJobsStorage__queueServiceUri"),
    (lambda env: Storage.from_settings(env), "NOTIFY_STORAGE_CONNECTION", "AzureWebJobsStorage__accountName"),
])
def test_each_user_names_its_setting_when_no_account_is_set(build, field, words):
    with pytest.raises(errors.SettingError) as err:
        build({"AzureWebJobsStorage": "  ", "AzureWebJobsStorage__accountName": ""})
    assert err.value.field == field and words in str(err.value)


def test_identity_based_clients_reach_the_endpoints_with_one_credential():
    from azure.identity import DefaultAzureCredential

    env = {"AzureWebJobsStorage__accountName": "stfleet", "FLEET_TABLE": "fleetstate", "FLEET_QUEUE": "fleet-work",
           "REGISTRY_TABLE": "clusters"}
    registry = Registry.from_settings(env)
    assert registry._table.url.startswith("https://stfleet.table.core.windows.net")
    assert registry.table_name == "clusters" and isinstance(registry._table.credential, DefaultAzureCredential)
    store = OperationStore.from_settings(env)
    assert store._table.url.startswith("https://stfleet.table.core.windows.net") and store.table_name == "fleetstate"
    queue = WorkQueue.from_settings(env)
    assert queue._client.url == "https://stfleet.queue.core.windows.net/fleet-work"
    assert isinstance(queue._client.credential, DefaultAzureCredential)
    # the forwarder: blob and table of one account, one credential for both
    storage = Storage.from_settings({**env, "AzureWebJobsStorage__blobServiceUri": "https://blob.example"})
    table, container = storage.table_client("dedupe"), storage.container_client("flux-config")
    assert table.url.startswith("https://stfleet.table.core.windows.net") and container.url == "https://blob.example/flux-config"
    assert table.credential is container.credential
    for closable in (registry, store, queue, table, container):
        closable.close()


def test_connection_string_clients():
    acct = StorageAccount(connection_string=AZURITE)
    table = acct.table_client("fluxclusters")
    assert table.url.startswith("http://127.0.0.1:1/devstoreaccount1") and table.table_name == "fluxclusters"
    table.close()
    with pytest.raises(ValueError):
        StorageAccount()
    with pytest.raises(errors.SettingError) as err:
        Storage()
    assert err.value.field == "NOTIFY_STORAGE_CONNECTION"


def test_the_port_imports_no_sdk():
    # cold start: the storage SDKs and azure-identity load when a client is built, not on import
    code = ("import sys, shared.ports.azure.storage, shared.ports.azure.queue, shared.notify.storage, "
            "shared.rotation.registry, shared.fleet.store; "
            "print(sorted(m for m in sys.modules if m.startswith(('azure.data', 'azure.storage', 'azure.identity'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_created_once_creates_on_first_use_retries_after_a_failure_and_takes_exists_as_done():
    from azure.core.exceptions import ResourceExistsError, ServiceRequestError

    from shared.errors import UpstreamError
    from shared.ports.azure.storage import CreatedOnce

    calls, outcomes = [], [ServiceRequestError("down"), None]  # the first call fails, the second creates

    def create():
        calls.append(1)
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    once = CreatedOnce()
    with pytest.raises(UpstreamError, match="table t: create failed"):
        once.ensure(create, lambda exc: UpstreamError("table t: create failed"))
    assert once.ensure(create, lambda exc: UpstreamError("unused")) is True  # tried again, created
    assert once.ensure(create, lambda exc: UpstreamError("unused")) is False and len(calls) == 2  # not again

    def exists():
        raise ResourceExistsError("TableAlreadyExists")

    other = CreatedOnce()
    assert other.ensure(exists, lambda exc: UpstreamError("unused")) is False
    assert other.ensure(lambda: calls.append(1), lambda exc: UpstreamError("unused")) is False and len(calls) == 2
