"""Test hosts on one machine: Linux network namespaces on a private bridge, each with its own
address, so the gateway, Valkey and workers talk over a real (virtual) network that a test can cut.

Needs root and `ip` (iproute2); `available()` says why not otherwise, for a skip. Every name made
here carries a per-run suffix and is removed by `Network.close()`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field

IP = shutil.which("ip") or "/usr/sbin/ip"


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run([IP, *args], check=check, capture_output=True, text=True)


def available() -> str | None:
    """None when namespaces can be made here; otherwise the reason."""
    if not os.path.exists(IP):
        return "`ip` (iproute2) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"hp{secrets.token_hex(3)}"
    try:
        _ip("netns", "add", probe)
    except subprocess.CalledProcessError as exc:
        return f"`ip netns add` is not permitted here: {exc.stderr.strip()}"
    _ip("netns", "del", probe)
    return None


@dataclass
class Host:
    name: str  # the namespace
    address: str
    link: str  # the host's cable, as seen from the bridge side (root namespace)

    def command(self, *argv: str) -> list[str]:
        """`argv` run inside this host's namespace."""
        return [IP, "netns", "exec", self.name, *argv]

    def cut(self) -> None:
        """Pull the cable: packets to and from this host are dropped, connections hang."""
        _ip("link", "set", self.link, "down")


@dataclass
class Network:
    """A /24 on a bridge in the root namespace; the test process itself is `.254` on it."""

    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    hosts: dict[str, Host] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.prefix = f"10.{200 + int(self.tag[:2], 16) % 50}.{int(self.tag[2:], 16)}"
        self.bridge = f"hbr{self.tag}"
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.prefix}.254/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def host(self, name: str) -> Host:
        index = len(self.hosts) + 1
        ns, link, inner = f"h{self.tag}{name}", f"hv{self.tag}{index}", f"hi{self.tag}{index}"
        _ip("netns", "add", ns)
        _ip("link", "add", link, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", ns)
        _ip("link", "set", link, "master", self.bridge)
        _ip("link", "set", link, "up")
        address = f"{self.prefix}.{index}"
        for args in (
            ("addr", "add", f"{address}/24", "dev", inner),
            ("link", "set", inner, "up"),
            ("link", "set", "lo", "up"),
        ):
            _ip("-n", ns, *args)
        host = self.hosts[name] = Host(ns, address, link)
        return host

    def close(self) -> None:
        for host in self.hosts.values():
            _ip("netns", "del", host.name, check=False)
            _ip("link", "del", host.link, check=False)
        _ip("link", "del", self.bridge, check=False)
