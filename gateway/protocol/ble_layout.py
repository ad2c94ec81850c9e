"""The GATT layout of a fieldgate node and its advertisement identifiers.

Shared by the gateway's BLE source, the node simulator and docs/protocol.md.
Readings and inference results travel as the same CBOR payloads as on serial and
MQTT (gateway.protocol.payload); the standard Environmental Sensing Service is
exposed alongside for generic BLE tools.
"""

from __future__ import annotations

# 128-bit base for fieldgate's own service: f1e1dxxxx-...; the xxxx part names the role.
_BASE = "f1e1d{:03x}-6a7e-4c1a-9b7e-0f1e1d9a7e00"

FIELDGATE_SERVICE_UUID = _BASE.format(0x000)
# notify: CBOR uplink messages (ReadingBatch, NodeInference, Status), one per notification.
UPLINK_CHAR_UUID = _BASE.format(0x001)
# read: the latest Status as CBOR.
STATUS_CHAR_UUID = _BASE.format(0x002)
# write (with response): CBOR downlink messages (Ack, Command).
DOWNLINK_CHAR_UUID = _BASE.format(0x003)

# Bluetooth SIG assigned numbers (Environmental Sensing Service and characteristics).
ESS_SERVICE_UUID = "0000181a-0000-1000-8000-00805f9b34fb"
ESS_TEMPERATURE_UUID = "00002a6e-0000-1000-8000-00805f9b34fb"  # sint16, 0.01 degC
ESS_HUMIDITY_UUID = "00002a6f-0000-1000-8000-00805f9b34fb"  # uint16, 0.01 %
ESS_PRESSURE_UUID = "00002a6d-0000-1000-8000-00805f9b34fb"  # uint32, 0.1 Pa

# Manufacturer-specific advertisement data for beacon-only nodes. 0xFFFF is the SIG's
# "reserved for internal use / testing" company id; a product would register its own.
ADV_COMPANY_ID = 0xFFFF
