"""The listening TCP sockets of this network namespace, and those another machine could reach.

A socket is reachable from outside when it is bound to a non-loopback address, or to the
wildcard (0.0.0.0, ::) while the namespace has any non-loopback address. Run as a script it
prints ``{"listening": [...], "exposed": [...]}`` for the processes whose name or command line
contains one of its arguments (every process without arguments).
"""

from __future__ import annotations

import ipaddress
import json
import socket
import sys

import psutil


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def outside_addresses() -> list[str]:
    """This namespace's interface addresses other than loopback."""
    return sorted({a.address.split("%")[0] for nic in psutil.net_if_addrs().values() for a in nic
                   if a.family in (socket.AF_INET, socket.AF_INET6)
                   and not _loopback(a.address)})


def _owner(pid: int | None) -> str:
    try:
        p = psutil.Process(pid) if pid else None
        return f"{p.name()} {' '.join(p.cmdline())[:200]}" if p else "?"
    except psutil.Error:
        return "?"


def listeners(*names: str) -> dict[str, list[str]]:
    """``listening``: every listener of the processes matching ``names``, as ``ip:port owner``;
    ``exposed``: those of them that a non-loopback address reaches."""
    outside = outside_addresses()
    listening, exposed = [], []
    for c in psutil.net_connections(kind="tcp"):
        if c.status != psutil.CONN_LISTEN:
            continue
        owner = _owner(c.pid)
        if names and not any(n in owner for n in names):
            continue
        line = f"{c.laddr.ip}:{c.laddr.port} {owner}"
        listening.append(line)
        wildcard = ipaddress.ip_address(c.laddr.ip.split("%")[0]).is_unspecified
        if (wildcard and outside) or (not wildcard and not _loopback(c.laddr.ip)):
            exposed.append(line)
    return {"listening": listening, "exposed": exposed, "outside_addresses": outside}


if __name__ == "__main__":
    print(json.dumps(listeners(*sys.argv[1:])))
