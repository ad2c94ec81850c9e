"""Local alert outputs and durable offline outboxes (docs/outputs.md)."""

from gateway.outputs.bus import AlertBus, BusItem, Gap, Subscription
from gateway.outputs.config import OutputsConfig
from gateway.outputs.dispatch import AlertOutputs, OutputsStatus
from gateway.outputs.node_action import CommandSender

__all__ = [
    "AlertBus",
    "AlertOutputs",
    "BusItem",
    "CommandSender",
    "Gap",
    "OutputsConfig",
    "OutputsStatus",
    "Subscription",
]
