"""Separate hosts on one machine: network namespaces joined by a bridge.

Each host is a namespace with one veth cable into a "switch" namespace that
holds a bridge.  `Lab.cut(host)` takes the switch's end of that host's cable
down: the host's own end stays up (no carrier), so its packets are dropped
without a word, and the bridge drops what others send it.  Neither side
gets an error; the connection just goes silent, as on a real partition.
`Lab.heal(host)` puts the cable back.

Needs root and iproute2 (`ip`).  Names carry the creating process's pid so
parallel runs never collide; `close` removes everything it made.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from dataclasses import dataclass, field


def available() -> str:
    """Why namespaces cannot be used here, or "" when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    return ""


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@dataclass
class Lab:
    """A switch and the hosts plugged into it, on the subnet 10.``net``.0.0/24."""

    net: int = 77
    tag: str = field(default_factory=lambda: f"c{os.getpid() % 100000}")
    hosts: dict[str, str] = field(default_factory=dict)  # host -> its address

    @property
    def switch(self) -> str:
        return f"{self.tag}-sw"

    def ns(self, host: str) -> str:
        return f"{self.tag}-{host}"

    def start(self) -> None:
        _ip("netns", "add", self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")

    def add(self, host: str) -> str:
        """A new host plugged into the switch; returns its address."""
        ns, n = self.ns(host), len(self.hosts) + 1
        address = f"10.{self.net}.0.{n}"
        inner, outer = f"{self.tag}h{n}", f"{self.tag}p{n}"
        _ip("netns", "add", ns)
        _ip("link", "add", inner, "netns", ns, "type", "veth", "peer", outer, "netns", self.switch)
        _ip("-n", ns, "addr", "add", f"{address}/24", "dev", inner)
        _ip("-n", ns, "link", "set", inner, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", self.switch, "link", "set", outer, "master", "br0")
        _ip("-n", self.switch, "link", "set", outer, "up")
        self.hosts[host] = address
        return address

    def _port(self, host: str) -> str:
        return f"{self.tag}p{list(self.hosts).index(host) + 1}"

    def cut(self, host: str) -> None:
        """Silently drop everything to and from ``host``."""
        _ip("-n", self.switch, "link", "set", self._port(host), "down")

    def heal(self, host: str) -> None:
        _ip("-n", self.switch, "link", "set", self._port(host), "up")

    def run_in(self, host: str, argv: list[str]) -> list[str]:
        """``argv`` as it is run inside ``host``."""
        return ["ip", "netns", "exec", self.ns(host), *argv]

    def close(self) -> None:
        for ns in [*(self.ns(h) for h in self.hosts), self.switch]:
            with contextlib.suppress(OSError):
                _ip("netns", "del", ns)
        self.hosts.clear()
