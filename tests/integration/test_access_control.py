"""Who may associate: peer address allow-lists (and their app options)."""

from __future__ import annotations

import ipaddress

import anyio
import pytest

from aionetdicom import AE
from aionetdicom.addresses import network, peer_allowed
from aionetdicom.apps import storescp
from aionetdicom.errors import DicomNetworkError

HOST = "127.0.0.1"


def test_peer_allowed() -> None:
    nets = [network("10.0.0.0/8"), network("192.168.1.7"), network("::1")]
    assert peer_allowed(nets, "10.200.3.4")
    assert peer_allowed(nets, "192.168.1.7")
    assert not peer_allowed(nets, "192.168.1.8")
    assert peer_allowed(nets, "::1")
    assert peer_allowed(nets, "::ffff:10.1.2.3")  # IPv4-mapped: judged as IPv4
    assert not peer_allowed(nets, "::2")
    assert not peer_allowed(nets, "not-an-address")
    assert peer_allowed(None, "203.0.113.9")
    assert network(ipaddress.ip_network("10.0.0.0/8")) == ipaddress.ip_network("10.0.0.0/8")
    with pytest.raises(ValueError, match="allowed peer address 'nonsense'"):
        network("nonsense")


async def test_a_peer_outside_the_allowed_networks_is_disconnected() -> None:
    refused_scp = AE("SCP", allowed_peer_addresses=["10.9.9.0/24"])
    with anyio.fail_after(10):
        async with refused_scp.serve(HOST, 0) as server:
            with pytest.raises(DicomNetworkError):
                async with AE("SCU").associate(HOST, server.port) as assoc:
                    await assoc.echo()
            assert server.refused_addresses == 1
        allowed_scp = AE("SCP", allowed_peer_addresses=["127.0.0.0/8", "::1"])
        async with allowed_scp.serve(HOST, 0) as server:
            async with AE("SCU").associate(HOST, server.port) as assoc:
                assert (await assoc.echo()).is_success
            assert server.refused_addresses == 0


def test_app_option() -> None:
    args = storescp.build_parser().parse_args(
        ["0", "--allowed-peer", "10.0.0.0/8", "--allowed-peer", "::1"]
    )
    assert args.allowed_peer == [network("10.0.0.0/8"), network("::1")]
    with pytest.raises(SystemExit):
        storescp.build_parser().parse_args(["0", "--allowed-peer", "10.0.0.300"])
