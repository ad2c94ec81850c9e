"""A buffered, corked paho socket against a real broker: nothing is held back, nothing reordered."""

from __future__ import annotations

import asyncio

import aiomqtt

from gateway.sources.mqtt_socket import BufferedSocket, install_socket_buffering
from tests.fixtures.servers import Mosquitto

N = 2000


def buffered_client(broker: Mosquitto, identifier: str, **kwargs: object) -> aiomqtt.Client:
    client = aiomqtt.Client(broker.host, broker.port, identifier=identifier, **kwargs)  # type: ignore[arg-type]
    install_socket_buffering(client._client)  # noqa: SLF001 - replaced by the mqtt public-API rework
    return client


async def test_a_backlog_and_the_quiet_message_after_it_all_arrive_in_order(
    mosquitto: Mosquitto, mqtt_prefix: str
) -> None:
    topic = f"{mqtt_prefix}/burst"
    sub_id = f"{mqtt_prefix}-sub"
    # A persistent session collects the backlog while the subscriber is away, so on
    # reconnect the broker floods it: many packets per kernel read.
    async with buffered_client(mosquitto, sub_id, clean_session=False) as sub:
        await sub.subscribe(topic, qos=1)
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as pub:
        await asyncio.gather(*(pub.publish(topic, i.to_bytes(4, "big"), qos=1) for i in range(N)))
        async with buffered_client(mosquitto, sub_id, clean_session=False) as sub:
            assert isinstance(sub._client.socket(), BufferedSocket)  # noqa: SLF001 - replaced by the mqtt public-API rework
            got: list[int] = []
            async with asyncio.timeout(20):
                async for message in sub.messages:
                    assert isinstance(message.payload, bytes)
                    got.append(int.from_bytes(message.payload, "big"))
                    if len(got) == N:
                        break
                assert got == list(range(N))
                # After the backlog the buffer is empty; a single late message must still
                # wake the reader (bytes left in user space would not).
                await asyncio.sleep(0.2)
                await pub.publish(topic, b"late", qos=1)
                message = await anext(aiter(sub.messages))
                assert message.payload == b"late"


async def test_a_burst_published_through_corked_writes_arrives_whole(
    mosquitto: Mosquitto, mqtt_prefix: str
) -> None:
    topic = f"{mqtt_prefix}/corked"
    async with (
        aiomqtt.Client(mosquitto.host, mosquitto.port) as sub,
        buffered_client(mosquitto, f"{mqtt_prefix}-pub") as pub,
    ):
        await sub.subscribe(topic, qos=1)
        # QoS 1 publishes wait for their PUBACKs, so these write rounds interleave with reads.
        await asyncio.gather(
            *(pub.publish(topic, i.to_bytes(4, "big") * 64, qos=1) for i in range(N))
        )
        got = []
        async with asyncio.timeout(20):
            async for message in sub.messages:
                assert isinstance(message.payload, bytes)
                got.append(int.from_bytes(message.payload[:4], "big"))
                if len(got) == N:
                    break
        assert sorted(got) == list(range(N))
