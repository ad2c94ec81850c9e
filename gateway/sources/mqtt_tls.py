"""The TLS context of the gateway's broker connection (``mqtts://``), from ``[mqtt]``."""

from __future__ import annotations

import ssl

from gateway.config import MqttConfig


def client_context(config: MqttConfig) -> ssl.SSLContext | None:
    """A verifying client context for an ``mqtts://`` URL; None for plain MQTT.

    The broker's certificate is always checked (chain and host name): against
    ``tls_ca_file`` when given, else the system's CAs. A client certificate is presented
    when the broker authenticates clients that way.
    """
    if not config.tls:
        return None
    cafile = str(config.tls_ca_file) if config.tls_ca_file is not None else None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if config.tls_cert_file is not None and config.tls_key_file is not None:
        context.load_cert_chain(str(config.tls_cert_file), str(config.tls_key_file))
    return context
