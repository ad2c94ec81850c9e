"""MQTT topics ``fieldgate/<site>/<node>/<kind>`` and MQTT payloads (docs/protocol.md).

Uplink kinds (node → gateway): ``readings``, ``inference``, ``status``.
Downlink kinds (gateway → node): ``ack``, ``cmd``.

A payload is a CBOR message (as on serial) or, when its first byte is ``{``, the JSON form
(gateway.protocol.json_payload). A CBOR message always starts with a map header
(0xa0..0xbf), so the two never collide.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from gateway.errors import PayloadError, TopicError
from gateway.protocol.json_payload import decode_json_message, encode_json_message, is_json_payload
from gateway.protocol.messages import (
    Ack,
    Command,
    Message,
    NodeInference,
    ReadingBatch,
    Status,
    is_valid_node_id,
)
from gateway.protocol.payload import decode_message, encode_message

TOPIC_ROOT: Final = "fieldgate"


class TopicKind(enum.StrEnum):
    READINGS = "readings"
    INFERENCE = "inference"
    STATUS = "status"
    ACK = "ack"
    CMD = "cmd"

    @property
    def is_uplink(self) -> bool:
        return self in UPLINK_KINDS


UPLINK_KINDS: Final = frozenset({TopicKind.READINGS, TopicKind.INFERENCE, TopicKind.STATUS})
DOWNLINK_KINDS: Final = frozenset({TopicKind.ACK, TopicKind.CMD})

_MESSAGE_CLASS: Final[dict[TopicKind, type]] = {
    TopicKind.READINGS: ReadingBatch,
    TopicKind.INFERENCE: NodeInference,
    TopicKind.STATUS: Status,
    TopicKind.ACK: Ack,
    TopicKind.CMD: Command,
}
_KIND_OF_CLASS: Final = {cls: kind for kind, cls in _MESSAGE_CLASS.items()}
# The same, looked up by plain string too (TopicKind is a StrEnum), without an enum call.
_CLASS_OF_KIND: Final[dict[str, type]] = {str(kind): cls for kind, cls in _MESSAGE_CLASS.items()}


@dataclass(frozen=True, slots=True)
class TopicParts:
    site: str
    node_id: str
    kind: TopicKind


def is_valid_site(site: str) -> bool:
    """Sites follow the node id rule: 1..32 characters of ``[A-Za-z0-9._-]``."""
    return is_valid_node_id(site)


def format_topic(site: str, node_id: str, kind: TopicKind | str) -> str:
    """``fieldgate/<site>/<node_id>/<kind>``; raises :class:`TopicError` for a bad part."""
    if not is_valid_site(site):
        raise TopicError(f"site {site!r} is not 1..32 characters of [A-Za-z0-9._-]")
    if not is_valid_node_id(node_id):
        raise TopicError(f"node id {node_id!r} is not 1..32 characters of [A-Za-z0-9._-]")
    try:
        kind = TopicKind(kind)
    except ValueError:
        raise TopicError(
            f"kind {kind!r} is not one of {', '.join(k.value for k in TopicKind)}"
        ) from None
    return f"{TOPIC_ROOT}/{site}/{node_id}/{kind.value}"


def topic_for(site: str, msg: Message) -> str:
    """The topic a message is published on."""
    return format_topic(site, msg.node_id, kind_of(msg))


def kind_of(msg: Message) -> TopicKind:
    return _KIND_OF_CLASS[type(msg)]


def uplink_filters(site: str = "+") -> list[str]:
    """Subscription filters for every uplink kind of every node of ``site`` (``+``: all)."""
    return [f"{TOPIC_ROOT}/{site}/+/{kind.value}" for kind in TopicKind if kind.is_uplink]


def downlink_filters(site: str, node_id: str) -> list[str]:
    """Subscription filters a node uses for its acks and commands."""
    return [format_topic(site, node_id, kind) for kind in TopicKind if not kind.is_uplink]


def node_filter(site: str, node_id: str) -> str:
    """The filter that matches every topic of one node (data and firmware)."""
    return f"{TOPIC_ROOT}/{site}/{node_id}/#"


def fw_topics(site: str, node_id: str) -> tuple[str, str]:
    """``(down, up)``: the model-transfer topics of one node (docs/protocol.md, "MQTT")."""
    base = f"{TOPIC_ROOT}/{site}/{node_id}/fw"
    return f"{base}/down", f"{base}/up"


def parse_broker_url(url: str) -> tuple[str, int]:
    """``mqtt://host:port`` (port defaults to 1883) -> (host, port)."""
    parts = urlsplit(url if "://" in url else f"mqtt://{url}")
    if parts.scheme not in ("mqtt", "tcp"):
        raise ValueError(f"broker URL {url!r}: use mqtt://host:port")
    return parts.hostname or "127.0.0.1", parts.port or 1883


# Topics repeat per node and kind: remember the parsed form of valid ones (bounded).
_PARSED: dict[str, TopicParts] = {}
_PARSED_MAX: Final = 4096


def parse_topic(topic: str) -> TopicParts:
    """Split a topic into its parts; raises :class:`TopicError` naming the bad level."""
    parts = _PARSED.get(topic)
    if parts is None:
        parts = _parse_topic(topic)
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[topic] = parts
    return parts


def _parse_topic(topic: str) -> TopicParts:
    raw = topic.encode("utf-8", "surrogatepass")
    levels = topic.split("/")
    if len(levels) != 4:
        raise TopicError(
            f"topic {topic[:80]!r} has {len(levels)} levels, expected "
            f"{TOPIC_ROOT}/<site>/<node>/<kind>",
            raw,
            0,
        )
    root, site, node_id, kind = levels
    offsets = [0]
    for level in levels[:-1]:
        offsets.append(offsets[-1] + len(level.encode("utf-8", "surrogatepass")) + 1)
    if root != TOPIC_ROOT:
        raise TopicError(f"topic root is {root[:40]!r}, expected {TOPIC_ROOT!r}", raw, 0)
    if not is_valid_site(site):
        raise TopicError(
            f"site {site[:40]!r} is not 1..32 characters of [A-Za-z0-9._-]", raw, offsets[1]
        )
    if not is_valid_node_id(node_id):
        raise TopicError(
            f"node id {node_id[:40]!r} is not 1..32 characters of [A-Za-z0-9._-]",
            raw,
            offsets[2],
        )
    try:
        parsed_kind = TopicKind(kind)
    except ValueError:
        raise TopicError(
            f"kind {kind[:40]!r} is not one of {', '.join(k.value for k in TopicKind)}",
            raw,
            offsets[3],
        ) from None
    return TopicParts(site, node_id, parsed_kind)


def decode_mqtt_payload(
    kind: TopicKind | str, payload: bytes | bytearray | memoryview, node_id_from_topic: str
) -> Message:
    """Decode a payload received on a topic of ``kind`` for ``node_id_from_topic``.

    JSON when the first byte is ``{``, CBOR otherwise. Raises :class:`PayloadError` when
    the payload does not decode, is not the message type the topic names, or names
    another node than the topic.
    """
    raw = bytes(payload)
    expected = _CLASS_OF_KIND.get(kind)
    if expected is None:
        raise PayloadError(f"unknown topic kind {kind!r}", raw, 0)
    msg = decode_json_message(raw) if is_json_payload(raw) else decode_message(raw)
    if type(msg) is not expected:
        raise PayloadError(
            f"a {type(msg).__name__} was published on a {str(kind)!r} topic, "
            f"which carries {expected.__name__} messages",
            raw,
            0,
        )
    if msg.node_id != node_id_from_topic:
        raise PayloadError(
            f"payload node_id {msg.node_id!r} does not match the topic's node "
            f"{node_id_from_topic!r}",
            raw,
            0,
        )
    return msg


def encode_mqtt_payload(msg: Message, *, json: bool = False) -> bytes:
    """The payload to publish for ``msg``: CBOR, or the JSON form when ``json``."""
    return encode_json_message(msg) if json else encode_message(msg)
