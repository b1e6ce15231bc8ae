"""Where a master listening on every address is reached: here, and from other machines."""

from __future__ import annotations

from corral.master.api import _loopback_hint
from corral.master.ca import machine_names
from corral.master.control import Master, MasterConfig, route_address
from corral.transport.addresses import from_here, join_hostport, split_hostport


def test_a_wildcard_is_dialled_on_loopback_here() -> None:
    assert from_here("0.0.0.0") == "127.0.0.1"
    assert from_here("::") == "::1"
    assert from_here("10.0.0.5") == "10.0.0.5"
    assert from_here("node1.example") == "node1.example"


def test_join_reads_back_with_split() -> None:
    for host in ("10.0.0.5", "::1", "fe80::1", "node1"):
        assert split_hostport(join_hostport(host, 7070), None) == (host, 7070)


def test_the_route_to_etcd_picks_the_source_address() -> None:
    assert route_address(["http://127.0.0.1:2379"]) == "127.0.0.1"
    guessed = route_address([])  # toward the outside, else loopback
    assert guessed in machine_names()


def test_only_a_wildcard_is_advertised(tmp_path) -> None:  # type: ignore[no-untyped-def]
    master = Master(MasterConfig(state_dir=tmp_path, advertise="10.9.8.7"))
    assert master.reachable("0.0.0.0:7070") == "10.9.8.7:7070"
    assert master.reachable("[::]:7071") == "10.9.8.7:7071"
    assert master.reachable("127.0.0.1:7071") == "127.0.0.1:7071"
    assert master.reachable("10.0.0.1:7070") == "10.0.0.1:7070"


def test_a_loopback_api_on_another_machine_is_explained() -> None:
    assert "listens on loopback on its own machine" in _loopback_hint(
        "http", "m2", "192.0.2.77:7070"
    )
    assert _loopback_hint("http", "m2", "127.0.0.1:7070") == ""  # the same machine
    assert _loopback_hint("https", "m2", "192.0.2.77:7070") == ""  # reachable over TLS
