"""TLS contexts for DICOM (PS3.15 B.12, the BCP 195 profile): TLS 1.2 or newer, 1.3
preferred, forward-secret AEAD cipher suites only, no compression, no renegotiation.

Pass the context to ``AE.serve(..., ssl_context=)`` or ``AE.associate(...,
ssl_context=)``. Mutual authentication: give the server a ``ca`` (client certificates
are then required, unless ``require_client_certificate=False``) and the client a
``cert``/``key``. Clients verify the server's certificate against ``ca`` (or the
system's trust store); DICOM peers are often addressed by IP and identified by their
certificate and AE title, so the host name is checked only with ``check_hostname``.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["CIPHERS", "TLSInfo", "client_context", "server_context"]

#: TLS 1.2 suites allowed (TLS 1.3 suites are all AEAD and forward secret): ECDHE or
#: DHE key exchange with AES-GCM or ChaCha20-Poly1305; nothing NULL, anonymous, export,
#: RC4, 3DES, CBC or MD5/SHA-1 based.
CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-AES128-GCM-SHA256",
    ]
)

Path = str | os.PathLike[str]


@dataclass(frozen=True)
class TLSInfo:
    """What an association's TLS layer negotiated."""

    version: str
    cipher: str
    #: The peer's certificate as ``ssl.SSLSocket.getpeercert()`` gives it (empty dict
    #: when the peer sent none).
    peer_certificate: dict[str, Any]


def _base(purpose: ssl.Purpose) -> ssl.SSLContext:
    context = ssl.create_default_context(purpose)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    return context


def _load_ca(context: ssl.SSLContext, ca: Path | Sequence[Path]) -> None:
    """Trust the CA certificates in ``ca``: a PEM file or a hashed folder, or several."""
    for each in [ca] if isinstance(ca, (str, os.PathLike)) else ca:
        if os.path.isdir(each):
            context.load_verify_locations(capath=os.fspath(each))
        else:
            context.load_verify_locations(cafile=os.fspath(each))


def server_context(
    cert: Path,
    key: Path | None = None,
    *,
    ca: Path | Sequence[Path] | None = None,
    require_client_certificate: bool = True,
    password: str | None = None,
) -> ssl.SSLContext:
    """An SCP's context: its certificate chain and key (PEM); with ``ca`` (one path or
    several) it verifies client certificates (required unless
    ``require_client_certificate=False``)."""
    context = _base(ssl.Purpose.CLIENT_AUTH)
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    context.load_cert_chain(os.fspath(cert), None if key is None else os.fspath(key), password)
    if ca is not None:
        _load_ca(context, ca)
        context.verify_mode = ssl.CERT_REQUIRED if require_client_certificate else ssl.CERT_OPTIONAL
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def client_context(
    *,
    ca: Path | Sequence[Path] | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    verify: bool = True,
    check_hostname: bool = False,
    password: str | None = None,
) -> ssl.SSLContext:
    """An SCU's context: verifies the server against ``ca`` (one path or several;
    default: the system's trust store) unless ``verify=False``; presents
    ``cert``/``key`` when given."""
    context = _base(ssl.Purpose.SERVER_AUTH)
    if cert is not None:
        context.load_cert_chain(os.fspath(cert), None if key is None else os.fspath(key), password)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if ca is not None:
        _load_ca(context, ca)
    context.check_hostname = check_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    return context
