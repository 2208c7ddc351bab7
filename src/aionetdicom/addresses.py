"""Peer address allow-lists: which hosts may connect to an SCP."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Union

__all__ = ["IPNetwork", "network", "peer_allowed"]

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


def network(value: str | IPNetwork) -> IPNetwork:
    """An allowed network from ``"10.1.0.0/16"``, ``"10.1.2.3"``, ``"::1"`` or a network."""
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return value
    try:
        return ipaddress.ip_network(str(value).strip(), strict=False)
    except ValueError as exc:
        raise ValueError(f"allowed peer address {value!r}: {exc}") from None


def peer_allowed(networks: Sequence[IPNetwork] | None, host: str) -> bool:
    """Whether ``host`` (an address; IPv4-mapped IPv6 counts as its IPv4 address) lies
    in one of ``networks``; None allows every host."""
    if networks is None:
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [address]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        candidates.append(address.ipv4_mapped)
    return any(
        candidate in each
        for candidate in candidates
        for each in networks
        if candidate.version == each.version
    )
