"""The machine's own address: the IPv4 address of the interface that holds the default route.

Pods reach the API server and the cluster DNS there (127.0.0.1 inside a pod is the pod itself).
``CANOPY_NODE_IP`` overrides it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


class NoNodeAddress(RuntimeError):
    """The machine has no default route with an IPv4 address, and CANOPY_NODE_IP is not set."""


def default_route_interface(route_table: str) -> str | None:
    """The interface of the default route in ``/proc/net/route`` text (destination 00000000)."""
    for line in route_table.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 2 and fields[1] == "00000000":
            return fields[0]
    return None


def first_ipv4(ip_addr_output: str) -> str | None:
    """The first address in ``ip -4 -o addr show dev X`` output."""
    for line in ip_addr_output.splitlines():
        fields = line.split()
        if "inet" in fields:
            return fields[fields.index("inet") + 1].split("/")[0]
    return None


def node_ip() -> str:
    if explicit := os.environ.get("CANOPY_NODE_IP"):
        return explicit
    interface = default_route_interface(Path("/proc/net/route").read_text())
    if interface is None:
        raise NoNodeAddress("no default route: set CANOPY_NODE_IP to the machine's own IPv4 address")
    out = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "dev", interface], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    address = first_ipv4(out)
    if address is None:
        raise NoNodeAddress(f"{interface} has no IPv4 address: set CANOPY_NODE_IP")
    return address
