"""The ``[nodes]`` section: how many nodes, how fast new ones, and where each may speak from."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

# The channel a message came over, as pins name it: "serial:<port path>", "ble:<ADDRESS>",
# or "mqtt" (the broker authenticates the publisher of a node's topic).
CHANNEL_KINDS = ("serial:", "ble:", "mqtt")


def ble_channel(address: str) -> str:
    return f"ble:{address.upper()}"


def serial_channel(path: str) -> str:
    return f"serial:{path}"


MQTT_CHANNEL = "mqtt"


class NodesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    max_nodes: int = Field(2000, ge=1)
    """most node ids the gateway keeps state for (journal registry, alerting, per-node
    metrics); messages from further new ids are refused, not acknowledged, and counted together"""
    new_per_minute: int = Field(600, ge=1)
    """new node ids admitted per minute (up to this many at once); messages from the rest are
    refused and not acknowledged, so a real node is admitted when it sends again"""
    pins: dict[str, str] = {}
    """node id -> the only channel its messages are accepted from: "serial:<port path as
    configured>", "ble:<address>" or "mqtt" (pinned before first contact)"""
    learn_pins: bool = True
    """pin each node to the channel it is first heard on (trust on first use; kept in
    <data_dir>/node_pins.json); a message for it from elsewhere is refused, counted and alerted"""
    unpin: tuple[str, ...] = ()
    """node ids whose learned pin is forgotten at start-up, so their next contact pins them
    again (a node moved to another port); `fieldgate nodes unpin NODE` does it at run time"""

    @field_validator("pins")
    @classmethod
    def _channels(cls, value: dict[str, str]) -> dict[str, str]:
        out = {}
        for node, channel in value.items():
            if not channel.startswith(CHANNEL_KINDS[:2]) and channel != MQTT_CHANNEL:
                raise ValueError(
                    f"{node}: {channel!r} must be serial:<path>, ble:<address> or mqtt"
                )
            out[node] = ble_channel(channel[4:]) if channel.startswith("ble:") else channel
        return out
