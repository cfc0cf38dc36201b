"""Publishing to Event Hubs with the real ``EventHubProducerClient`` against the AMQP 1.0 Event Hubs test
peer on 127.0.0.1 (``tests/peers/eventhub_amqp.py``): CBS ``put-token`` with the token's audience checked,
the ``$management`` read of the partition ids, sender links to the hub and to a partition, TLS with the
test CA, and the publisher's bound."""

from __future__ import annotations

import time

import pytest

from shared.ports.azure.eventhub import EventHubPublisher
from tests.peers.entra_tokens import JwtTestCredential, make_jwt

HUB = "flux-events"


def publisher_for(peer, credential=None, **settings) -> EventHubPublisher:
    """The publisher the app settings describe, its connection sent to the peer's port."""
    environ = {"NOTIFY_EVENTHUB__fullyQualifiedNamespace": peer.namespace, "NOTIFY_EVENTHUB_NAME": HUB, **settings}
    return EventHubPublisher.from_settings(environ, credential=credential or JwtTestCredential(), **peer.client_kwargs())


class WrongAudience:
    """A managed identity's token, but for Azure DevOps instead of Event Hubs."""

    def get_token(self, *scopes, **kw):
        from azure.core.credentials import AccessToken

        exp = int(time.time()) + 3600
        return AccessToken(make_jwt(exp=exp, aud="499b84ac-1321-427f-aa17-267ca6975798"), exp)


def test_peer_answers_management_read_and_partition_sends_through_the_sdk(eventhub_peer):
    from azure.eventhub import EventData, EventHubProducerClient

    client = EventHubProducerClient(eventhub_peer.namespace, HUB, JwtTestCredential(), retry_total=0,
                                    **eventhub_peer.client_kwargs())
    with client:
        assert client.get_partition_ids() == ["0", "1"]
        props = client.get_eventhub_properties()
        client.send_event(EventData(b'{"to":"partition 1"}'), partition_id="1")
    assert props["eventhub_name"] == HUB and props["partition_ids"] == ["0", "1"]
    assert {"name": HUB, "operation": "READ", "type": "com.microsoft:eventhub"} in eventhub_peer.management_requests
    [got] = eventhub_peer.received
    assert (got.partition, got.sequence_number, got.body) == ("1", 0, b'{"to":"partition 1"}')
    sends = [lk for lk in eventhub_peer.links if lk["role"] == "client-sender" and "Partitions" in lk["address"]]
    assert sends[0]["address"] == f"amqps://{eventhub_peer.namespace}/{HUB}/Partitions/1"
    assert sends[0]["properties"]["com.microsoft:timeout"] > 0  # the SDK's send timeout, as link property
    audiences = {(t.node, t.audience, t.status) for t in eventhub_peer.token_checks}
    assert ("$cbs", f"sb://{eventhub_peer.namespace}/{HUB}", 202) in audiences
    assert ("$management", f"sb://{eventhub_peer.namespace}/{HUB}", 200) in audiences


def test_peer_refuses_a_token_with_the_wrong_audience(eventhub_peer):
    from azure.eventhub import EventHubProducerClient
    from azure.eventhub.exceptions import AuthenticationError

    client = EventHubProducerClient(eventhub_peer.namespace, HUB, WrongAudience(), retry_total=0,
                                    **eventhub_peer.client_kwargs())
    with pytest.raises(AuthenticationError) as err, client:
        client.create_batch()
    assert "401" in str(err.value) and "InvalidAudience" in str(err.value)
    [check] = eventhub_peer.token_checks
    assert (check.node, check.status) == ("$cbs", 401)
    assert all(lk["address"] in ("$cbs",) for lk in eventhub_peer.links)  # no sender link was ever opened

    # the app's publisher: the same refusal, reported, not raised
    result = publisher_for(eventhub_peer, WrongAudience()).publish([b"{}"])
    assert (result.sent, result.failed) == (0, 1) and "AuthenticationError" in result.error
    assert eventhub_peer.received == []


def test_publisher_sends_every_event_in_one_batch_over_tls_with_the_test_ca(eventhub_peer_tls):
    peer = eventhub_peer_tls
    result = publisher_for(peer).publish([b'{"n":1}', b'{"n":2}', b'{"n":3}'])
    assert (result.sent, result.failed, result.batches) == (3, 0, 1), result
    got = peer.received
    assert [r.body for r in got] == [b'{"n":1}', b'{"n":2}', b'{"n":3}']
    assert all(r.batched for r in got) and len({(r.connection, r.partition) for r in got}) == 1
    assert [r.sequence_number for r in got] == [0, 1, 2]

    # without the CA, TLS fails: reported within the bound, nothing sent
    plain = EventHubPublisher(peer.namespace, HUB, JwtTestCredential(), timeout=5,
                              client_kwargs={k: v for k, v in peer.client_kwargs().items() if k != "connection_verify"})
    bad = plain.publish([b"{}"])
    assert bad.failed == 1 and "certificate" in bad.error.lower(), bad.error


def test_publish_is_bounded_when_the_hub_never_answers(raw_listener):
    from azure.eventhub import TransportType

    pub = EventHubPublisher("fleet-events.servicebus.windows.net", HUB, JwtTestCredential(), timeout=2,
                            client_kwargs={"custom_endpoint_address": f"sb://127.0.0.1:{raw_listener.port}",
                                           "transport_type": TransportType.Amqp, "use_tls": False})
    t0 = time.monotonic()
    result = pub.publish([b"{}", b"{}"])
    took = time.monotonic() - t0
    assert raw_listener.connections >= 1 and raw_listener.received.startswith(b"AMQP")  # it did try
    assert 1.9 < took < 2.6 and result.failed == 2 and result.sent == 0, (took, result)
    assert "no confirmation from fleet-events.servicebus.windows.net within 2 s" in result.error


def test_a_hub_that_never_answers_leaves_no_worker_or_socket_behind(raw_listener):
    """An instance runs for hours: each publish to a dead hub must end its worker and close its connection
    itself (not leave the socket to the garbage collector: that is a ResourceWarning), soon after the timeout."""
    import gc
    import threading
    import warnings

    from azure.eventhub import TransportType

    pub = EventHubPublisher("fleet-events.servicebus.windows.net", HUB, JwtTestCredential(), timeout=1,
                            client_kwargs={"custom_endpoint_address": f"sb://127.0.0.1:{raw_listener.port}",
                                           "transport_type": TransportType.Amqp, "use_tls": False})
    before = set(threading.enumerate())

    def workers():
        return [t for t in threading.enumerate() if t not in before and t.name == "eventhub-publish" and t.is_alive()]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for _ in range(3):
            result = pub.publish([b"{}"])
            assert result.failed == 1 and "within 1 s" in result.error, result
        end = time.monotonic() + 3
        while workers() and time.monotonic() < end:
            time.sleep(0.05)
        assert workers() == []
        gc.collect()
    assert raw_listener.connections == 3
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_publisher_settings():
    from shared.errors import SettingError

    assert EventHubPublisher.from_settings({}) is None  # publishing off
    base = {"NOTIFY_EVENTHUB__fullyQualifiedNamespace": "fleet-events.servicebus.windows.net"}
    with pytest.raises(SettingError) as err:
        EventHubPublisher.from_settings(base, credential=object())
    assert err.value.field == "NOTIFY_EVENTHUB_NAME"
    with pytest.raises(SettingError) as err:
        EventHubPublisher.from_settings({**base, "NOTIFY_EVENTHUB__fullyQualifiedNamespace": "sb://x/"},
                                        credential=object())
    assert err.value.field == "NOTIFY_EVENTHUB__fullyQualifiedNamespace"
    with pytest.raises(SettingError) as err:
        EventHubPublisher.from_settings({**base, "NOTIFY_EVENTHUB_NAME": HUB, "NOTIFY_PUBLISH_TIMEOUT_SECONDS": "0"},
                                        credential=object())
    assert err.value.field == "NOTIFY_PUBLISH_TIMEOUT_SECONDS"
    pub = EventHubPublisher.from_settings({**base, "NOTIFY_EVENTHUB_NAME": HUB,
                                           "NOTIFY_EVENTHUB__clientId": "11111111-2222-3333-4444-555555555555"})
    assert type(pub.credential).__name__ == "ManagedIdentityCredential" and pub.timeout == 10.0
