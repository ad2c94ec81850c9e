"""A self-signed certificate for the dashboard, made once and kept in ``<data_dir>/web/``."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_LOGGER = logging.getLogger(__name__)


def fingerprint(cert_path: Path) -> str:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def ensure_certificate(directory: Path, hosts: tuple[str, ...]) -> tuple[Path, Path]:
    """``(cert, key)`` paths, creating a 10-year self-signed P-256 certificate if absent.

    The SHA-256 fingerprint is logged every start so people can check what their browser shows.
    """
    cert_path, key_path = directory / "dashboard.crt", directory / "dashboard.key"
    if not (cert_path.exists() and key_path.exists()):
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = []
        for host in (*hosts, socket.gethostname()):
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                if host and host != "*":
                    names.append(x509.DNSName(host))
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fieldgate dashboard")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName(list(dict.fromkeys(names))), critical=False)
            .sign(key, hashes.SHA256())
        )
        key_path.touch(mode=0o600)
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _LOGGER.warning("dashboard: created a self-signed TLS certificate %s", cert_path)
    _LOGGER.warning("dashboard: TLS certificate SHA-256 fingerprint %s", fingerprint(cert_path))
    return cert_path, key_path
