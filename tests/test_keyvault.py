"""shared.ports.azure.keyvault through the real SecretClient against the Key Vault test server (tests/peers/keyvault.py)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from itertools import count

import pytest

from shared import errors
from shared.ports.azure.keyvault import KeyVault, KeyVaultError, SecretNotFound
from tests.peers.keyvault import SCOPE, KeyVaultTestCredential

SECRET = "pat-Zq9-very-secret-value"


def connect(server, credential=None) -> KeyVault:
    return KeyVault(server.vault_url, credential or server.credential(), connection_verify=server.ca_file,
                    verify_challenge_resource=False)


def secret_client(server, credential=None):
    from azure.keyvault.secrets import SecretClient

    return SecretClient(server.vault_url, credential or server.credential(), connection_verify=server.ca_file,
                        verify_challenge_resource=False)


def ticking_clock(start: int = 1_800_000_000):
    ticks = count(start)
    return lambda: next(ticks)


# --- authentication -------------------------------------------------------------------------------


def test_challenge_round_trip_then_bearer(keyvault_server):
    cred = keyvault_server.credential()
    with connect(keyvault_server, cred) as kv:
        kv.set_secret("pat", SECRET)
        kv.get_secret("pat")

    log = keyvault_server.request_log
    assert len(log) == 3, [(r.method, r.path, r.status, r.authorization is not None) for r in log]  # says why, if ever not
    first, second, third = log
    # 1. the SDK elicits the challenge: no Authorization, no body
    assert (first.method, first.path, first.authorization, first.content_length, first.status) == (
        "PUT", "/secrets/pat", None, 0, 401)
    # 2. token for the challenge's resource and tenant, then the original request with its body
    assert cred.requests[0].scopes == (SCOPE,)
    assert cred.requests[0].tenant_id == keyvault_server.tenant_id
    assert second.method == "PUT" and second.status == 200 and second.content_length > 0
    assert second.authorization == f"Bearer {cred.tokens[0]}"
    # 3. later calls reuse the cached challenge and token
    assert (third.method, third.path, third.status) == ("GET", "/secrets/pat/", 200)
    assert third.authorization == second.authorization
    assert len(cred.requests) == 1
    assert all(r.query.get("api-version") for r in keyvault_server.request_log)


def test_wrong_token_is_authentication_failed(keyvault_server):
    keyvault_server.seed("pat", SECRET)
    with connect(keyvault_server, KeyVaultTestCredential()) as kv:  # tokens the server never issued
        with pytest.raises(errors.AuthenticationFailed) as info:
            kv.get_secret("pat")
    assert keyvault_server.vault_url in str(info.value)
    assert '"pat"' in str(info.value)
    assert SECRET not in str(info.value)
    # the challenge, then the refused bearer token (the SDK does not retry a refused token)
    log = keyvault_server.request_log
    assert [(r.status, r.authorization is None) for r in log] == [(401, True), (401, False)]


def test_credential_failure_is_authentication_failed(keyvault_server):
    from azure.core.exceptions import ClientAuthenticationError

    class Broken:
        def get_token(self, *scopes, **kwargs):
            raise ClientAuthenticationError("ManagedIdentityCredential: no identity endpoint")

    with connect(keyvault_server, Broken()) as kv:
        with pytest.raises(errors.AuthenticationFailed, match="no identity endpoint"):
            kv.get_secret("pat")


def test_default_credential_created_lazily_once(keyvault_server, monkeypatch):
    import azure.identity

    made = []

    def fake_default_credential():
        made.append(keyvault_server.credential())
        return made[-1]

    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", fake_default_credential)
    keyvault_server.seed("pat", SECRET)
    kv = KeyVault(keyvault_server.vault_url, connection_verify=keyvault_server.ca_file,
                  verify_challenge_resource=False)
    assert made == []
    assert kv.get_secret("pat").value == SECRET
    assert kv.get_secret("pat").value == SECRET
    assert len(made) == 1
    kv.close()


# --- reading --------------------------------------------------------------------------------------


def test_get_latest_and_specific_version(keyvault_server, keyvault):
    v1 = keyvault_server.seed("pat", "first")
    v2 = keyvault_server.seed("pat", "second", content_type="text/plain")
    latest = keyvault.get_secret("pat")
    assert (latest.name, latest.value, latest.version, latest.content_type, latest.enabled) == (
        "pat", "second", v2, "text/plain", True)
    old = keyvault.get_secret("pat", v1)
    assert (old.value, old.version, old.content_type) == ("first", v1, None)
    assert len(v1) == 32 and int(v1, 16) >= 0 and v1 != v2
    assert [r.path for r in keyvault_server.request_log if r.status == 200] == [
        "/secrets/pat/", f"/secrets/pat/{v1}"]


def test_list_versions_newest_first_without_values(keyvault_server, keyvault):
    keyvault_server.clock = ticking_clock()
    exp = datetime(2031, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    made = [keyvault_server.seed("pat", f"value-{i}", expires_on=exp if i == 1 else None, enabled=i != 2)
            for i in range(4)]
    versions = keyvault.list_versions("pat")
    assert [v.version for v in versions] == made[::-1]
    assert {v.value for v in versions} == {""}
    assert [v.enabled for v in versions] == [True, False, True, True]
    assert [v.expires_on for v in versions] == [None, None, exp, None]
    assert all(v.created_on.tzinfo == timezone.utc for v in versions)


def test_list_versions_pages(keyvault_server, keyvault):
    keyvault_server.clock = ticking_clock()
    made = [keyvault_server.seed("pat", f"v{i}") for i in range(30)]
    versions = keyvault.list_versions("pat")
    assert [v.version for v in versions] == made[::-1]
    pages = [r for r in keyvault_server.request_log if r.path == "/secrets/pat/versions" and r.status == 200]
    assert len(pages) == 2  # 25 + 5: the SDK followed nextLink
    assert pages[1].query["$skiptoken"] == "25"


def test_server_pages_secret_list_for_sdk(keyvault_server):
    names = {f"s{i:02d}" for i in range(30)}
    for name in names:
        keyvault_server.seed(name, "x")
    with secret_client(keyvault_server) as client:
        assert {p.name for p in client.list_properties_of_secrets(max_page_size=10)} == names
        assert {p.name for p in client.list_properties_of_secrets()} == names
    pages = [r for r in keyvault_server.request_log if r.path == "/secrets" and r.status == 200]
    assert len(pages) == 3 + 2


def test_expires_on_round_trip(keyvault_server, keyvault):
    expires = datetime(2030, 6, 1, 14, 30, 15, 999_999, tzinfo=timezone(timedelta(hours=2)))
    written = keyvault.set_secret("pat", SECRET, content_type="application/vnd.ado-pat", expires_on=expires)
    assert keyvault_server.stored("pat")["exp"] == int(expires.timestamp())
    assert keyvault_server.stored("pat")["contentType"] == "application/vnd.ado-pat"
    read = keyvault.get_secret("pat")
    want = datetime(2030, 6, 1, 12, 30, 15, tzinfo=timezone.utc)
    assert read.expires_on == want and read.expires_on.tzinfo == timezone.utc
    assert written.expires_on == want
    assert (read.value, read.version, read.content_type) == (SECRET, written.version, "application/vnd.ado-pat")
    # seeded expiry, no expiry
    keyvault_server.seed("other", "x", expires_on=want)
    assert keyvault.get_secret("other").expires_on == want
    keyvault_server.seed("forever", "x")
    assert keyvault.get_secret("forever").expires_on is None


def test_naive_expires_on_rejected(keyvault_server, keyvault):
    with pytest.raises(errors.InvalidInput) as info:
        keyvault.set_secret("pat", SECRET, expires_on=datetime(2030, 1, 1))
    assert info.value.field == "expires_on"
    assert keyvault_server.request_log == []


# --- errors ---------------------------------------------------------------------------------------


def test_not_found(keyvault_server, keyvault):
    with pytest.raises(SecretNotFound) as info:
        keyvault.get_secret("missing")
    assert str(info.value) == f'Key Vault secret "missing" not found in {keyvault_server.vault_url}'
    assert isinstance(info.value, errors.NotFound)

    keyvault_server.seed("pat", SECRET)
    with pytest.raises(SecretNotFound, match="version 0123456789abcdef0123456789abcdef"):
        keyvault.get_secret("pat", "0123456789abcdef0123456789abcdef")
    with pytest.raises(SecretNotFound):
        keyvault.list_versions("missing")


def test_disabled_secret(keyvault_server, keyvault):
    keyvault_server.seed("pat", SECRET, enabled=False)
    with pytest.raises(KeyVaultError) as info:
        keyvault.get_secret("pat")
    assert isinstance(info.value, errors.UpstreamError) and not isinstance(info.value, errors.NotFound)
    assert '"pat"' in str(info.value) and "disabled" in str(info.value)
    assert SECRET not in str(info.value)
    assert keyvault_server.request_log[-1].status == 403


@pytest.mark.parametrize("bad", ["", "a_b", "a/b", "../pat", "x" * 128, "pät", None])
def test_bad_name_names_the_field(keyvault_server, keyvault, bad):
    with pytest.raises(errors.InvalidInput) as info:
        keyvault.get_secret(bad, field="passwordSecret")
    assert info.value.field == "passwordSecret"
    assert str(info.value).startswith("passwordSecret: ")
    assert keyvault_server.request_log == []  # rejected before any request


def test_longest_name_and_bad_version(keyvault_server, keyvault):
    name = "a-" + "x" * 125
    keyvault_server.seed(name, SECRET)
    assert keyvault.get_secret(name).value == SECRET
    with pytest.raises(errors.InvalidInput) as info:
        keyvault.get_secret(name, "../../secrets/other")
    assert info.value.field == "version"


def test_value_never_in_repr_errors_or_logs(keyvault_server, keyvault, caplog):
    caplog.set_level(logging.DEBUG)
    written = keyvault.set_secret("pat", SECRET)
    read = keyvault.get_secret("pat")
    assert read == written and read.value == SECRET
    for shown in (repr(read), str(read), repr(written)):
        assert SECRET not in shown and "value" not in shown
    # 409: a deleted, not purged name cannot be set; the error names the secret, not the value
    with secret_client(keyvault_server) as client:
        client.begin_delete_secret("pat").result()
    with pytest.raises(KeyVaultError) as info:
        keyvault.set_secret("pat", SECRET)
    assert "409" in str(info.value) and '"pat"' in str(info.value)
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)
    assert SECRET not in caplog.text
    assert "pat" in caplog.text  # the logs did record the operations


def test_value_size_limit(keyvault_server, keyvault):
    with pytest.raises(errors.InvalidInput) as info:
        keyvault.set_secret("big", "x" * (25 * 1024 + 1))
    assert info.value.field == "value" and "x" * 20 not in str(info.value)
    assert keyvault.set_secret("big", "x" * (25 * 1024)).version


# --- settings, laziness ---------------------------------------------------------------------------


def test_from_settings(keyvault_server, monkeypatch):
    with pytest.raises(errors.InvalidInput) as info:
        KeyVault.from_settings({})
    assert info.value.field == "KEY_VAULT_URL"
    with pytest.raises(errors.InvalidInput) as info:
        KeyVault.from_settings({"KEY_VAULT_URL": "http://vault.example"})
    assert info.value.field == "KEY_VAULT_URL"
    with pytest.raises(errors.InvalidInput) as info:
        KeyVault.from_settings({"KEY_VAULT_URL": "https://v.vault.azure.net", "KEY_VAULT_CA_FILE": "/nope.pem"})
    assert info.value.field == "KEY_VAULT_CA_FILE"

    import azure.identity

    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", keyvault_server.credential)
    keyvault_server.seed("pat", SECRET)
    kv = KeyVault.from_settings({"KEY_VAULT_URL": keyvault_server.vault_url + "/",
                                 "KEY_VAULT_CA_FILE": keyvault_server.ca_file})
    with kv:
        assert kv.vault_url == keyvault_server.vault_url
        assert kv.get_secret("pat").value == SECRET


def test_import_is_lazy():
    code = ("import sys, shared.ports.azure.keyvault; "
            "bad = [m for m in sys.modules if m.startswith(('azure', 'requests'))]; "
            "assert not bad, bad")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)


# --- the test server itself -----------------------------------------------------------------------


def test_server_update_delete_purge_with_sdk(keyvault_server):
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

    keyvault_server.clock = ticking_clock()
    with secret_client(keyvault_server) as client:
        s = client.set_secret("pat", SECRET)
        props = client.update_secret_properties("pat", s.properties.version, enabled=False,
                                                expires_on=datetime(2030, 1, 1, tzinfo=timezone.utc))
        assert props.enabled is False and props.updated_on > props.created_on
        with pytest.raises(HttpResponseError) as info:
            client.get_secret("pat")
        assert info.value.status_code == 403
        deleted = client.begin_delete_secret("pat").result()
        assert deleted.recovery_id == f"{keyvault_server.vault_url}/deletedsecrets/pat"
        with pytest.raises(ResourceNotFoundError):
            client.get_secret("pat")
        assert client.get_deleted_secret("pat").name == "pat"
        client.purge_deleted_secret("pat")
        with pytest.raises(ResourceNotFoundError):
            client.get_deleted_secret("pat")
        assert client.set_secret("PAT", "again").value == "again"  # name free again


def test_server_requires_api_version_and_token(keyvault_server):
    import requests

    keyvault_server.seed("pat", SECRET)
    url = f"{keyvault_server.vault_url}/secrets/pat"
    token = keyvault_server.credential().get_token(SCOPE, tenant_id=keyvault_server.tenant_id).token
    auth = {"Authorization": f"Bearer {token}"}
    r = requests.get(url, headers=auth, verify=keyvault_server.ca_file, timeout=5)
    assert r.status_code == 400 and r.json()["error"]["code"] == "BadParameter"
    r = requests.get(url, params={"api-version": "7.4"}, headers=auth, verify=keyvault_server.ca_file, timeout=5)
    assert r.status_code == 200 and r.json()["value"] == SECRET  # no trailing slash: latest, as the service
    r = requests.get(url, params={"api-version": "7.4"}, verify=keyvault_server.ca_file, timeout=5)
    assert r.status_code == 401 and 'resource="https://vault.azure.net"' in r.headers["WWW-Authenticate"]
    wrong_scope = keyvault_server.credential().get_token("https://management.azure.com/.default").token
    r = requests.get(url, params={"api-version": "7.4"}, headers={"Authorization": f"Bearer {wrong_scope}"},
                     verify=keyvault_server.ca_file, timeout=5)
    assert r.status_code == 401
