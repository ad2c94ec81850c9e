"""The exception tree. Catch by type, never by message text."""

from __future__ import annotations


class FieldgateError(Exception):
    """Base of every error fieldgate raises on purpose."""


class ConfigError(FieldgateError):
    """The configuration is invalid; ``key`` is the dotted path of the bad value."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"config: {key}: {reason}")
        self.key = key
        self.reason = reason


class CodecError(FieldgateError):
    """Bytes that do not decode. Carries the offending bytes and where it went wrong."""

    def __init__(self, reason: str, raw: bytes = b"", offset: int = 0) -> None:
        preview = raw[:32].hex()
        more = "..." if len(raw) > 32 else ""
        super().__init__(f"{reason} (at byte {offset} of {len(raw)}: {preview}{more})")
        self.reason = reason
        self.raw = bytes(raw)
        self.offset = offset


class FrameError(CodecError):
    """A serial frame is damaged: bad COBS, bad CRC, too long or too short."""


class PayloadError(CodecError):
    """A frame or MQTT/BLE payload is intact but its content is not a valid message."""


class TopicError(CodecError):
    """An MQTT topic does not follow ``fieldgate/<site>/<node>/<kind>``."""


class TransportError(FieldgateError):
    """A link to a node or a server failed; the adapter decides whether to retry."""

    def __init__(self, message: str, *, node_id: str | None = None) -> None:
        super().__init__(message)
        self.node_id = node_id


class StoreError(FieldgateError):
    """The journal or outbox could not do what was asked."""


class StorageFault(StoreError):
    """The disk refused a write (full, or an I/O error): retry later, nothing was committed.

    Unlike other store errors this is an operational condition, not a bug: the writer stops
    acknowledging, keeps the data where it is (at the nodes, at the broker) and retries.
    """


class FlashError(FieldgateError):
    """Provisioning a node with a model failed."""

    def __init__(self, message: str, *, node_id: str | None = None) -> None:
        super().__init__(f"{node_id}: {message}" if node_id else message)
        self.node_id = node_id


class ModelError(FieldgateError):
    """A model artifact or manifest is invalid, unsupported or fails verification."""
