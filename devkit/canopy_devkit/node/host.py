"""What a node changes on the machine, recorded before it starts and put back after it stops.

The kubelet, kube-proxy, containerd and the CNI plugins change sysctls, make iptables (nftables) tables and
chains, a bridge and veths, mounts (container root filesystems, volumes, network namespaces), cgroups and a
few well-known directories. :func:`capture` records all of that; :func:`restore` undoes what differs from a
recorded snapshot (after every process of the node has stopped); :func:`differences` says, in words, what is
still not as it was (the e2e tier's "machine left clean" test asserts it is empty).

Parsing and comparing are pure functions; only :func:`capture` and :func:`restore` touch the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

#: Sysctls the node's components are known to set (kubelet's kernel defaults, the bridge plugin's forwarding,
#: kube-proxy's conntrack and route_localnet). ``ip_forward`` comes first: writing it resets the others.
SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/forwarding",
    "net/ipv4/conf/default/forwarding",
    "net/ipv4/conf/all/route_localnet",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
    "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_tcp_timeout_established",
    "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)

#: Directories the components create whatever their configured roots are (containerd's shim sockets, the
#: CRI's network namespaces, the kubelet's log symlinks, libcni's result cache, ...).
WATCHED_DIRS = (
    "/run/containerd",
    "/run/netns",
    "/var/lib/cni",
    "/var/lib/kubelet",
    "/var/lib/containerd",
    "/var/log/containers",
    "/var/log/pods",
    "/etc/cni",
    "/opt/cni",
    "/opt/containerd",
    "/run/kubernetes",
    "/var/run/kubernetes",
)

CGROUP_ROOT = Path("/sys/fs/cgroup")
#: What :func:`restore` may remove when it was not there before: the kubelet's cgroups, the CNI bridge, veths.
NODE_CGROUPS = re.compile(r"kubepods.*")
NODE_LINKS = re.compile(r"canopy0|veth.*|cni.*|kube-.*")
#: Directories shared with other users of containerd (dockerd's shim sockets): only their empty parts go.
SHARED_DIRS = ("/run/containerd",)
IPTABLES_FAMILIES = (("ip", "iptables-save", "iptables-restore"), ("ip6", "ip6tables-save", "ip6tables-restore"))
_COUNTERS = re.compile(r"\[\d+:\d+\]")


@dataclass(frozen=True)
class Snapshot:
    """The parts of the machine a node may change, as plain data (JSON-serializable)."""

    sysctls: dict[str, str] = field(default_factory=dict)
    nft_tables: list[str] = field(default_factory=list)
    iptables: dict[str, str] = field(default_factory=dict)
    links: list[str] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)
    dirs: dict[str, list[str] | None] = field(default_factory=dict)
    cgroups: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Snapshot:
        data = json.loads(text)
        return cls(**data)


# --------------------------------------------------------------------------------------------- pure parts


def mount_points(mountinfo: str) -> list[str]:
    """Mount points listed in ``/proc/self/mountinfo`` text (octal escapes decoded), in order."""
    points: list[str] = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4:
            points.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4]))
    return points


def normalize_iptables(save: str) -> str:
    """``iptables-save`` output without comments and packet counters, and without tables that are empty.

    An empty table (built-in chains with policy ACCEPT, no rules, no other chain) has no effect; nft-backed
    iptables cannot delete one it made, so it does not count as a change.
    """
    tables: list[list[str]] = []
    for raw in save.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            tables.append([line])
        elif tables:
            tables[-1].append(_COUNTERS.sub("", line).rstrip())
    kept: list[str] = []
    for table in tables:
        body = [line for line in table[1:] if line != "COMMIT"]
        effective = [line for line in body if not re.fullmatch(r":\S+ ACCEPT ?", line)]
        if effective:
            kept.extend(table)
    return "\n".join(kept) + ("\n" if kept else "")


def iptables_tables(save: str) -> dict[str, str]:
    """Each table of an ``iptables-save`` text as its own restorable block (``*table`` ... ``COMMIT``)."""
    blocks: dict[str, str] = {}
    current: str | None = None
    lines: list[str] = []
    for raw in save.splitlines():
        line = raw.rstrip()
        if line.startswith("*"):
            current, lines = line[1:], [line]
        elif current is not None:
            lines.append(line)
            if line == "COMMIT":
                blocks[current] = "\n".join(lines) + "\n"
                current = None
    return blocks


def differences(before: Snapshot, after: Snapshot) -> list[str]:
    """What is not as it was, one sentence each (empty: the machine is as it was found)."""
    found: list[str] = []
    for key, value in before.sysctls.items():
        if after.sysctls.get(key) != value:
            found.append(f"sysctl {key} is {after.sysctls.get(key)!r}, was {value!r}")
    found += [f"nftables table {t} was added" for t in sorted(set(after.nft_tables) - set(before.nft_tables))]
    for family, rules in after.iptables.items():
        if normalize_iptables(rules) != normalize_iptables(before.iptables.get(family, "")):
            found.append(f"{family} iptables rules differ from before")
    found += [f"network link {n} was added" for n in sorted(set(after.links) - set(before.links))]
    found += [f"mount {m} was added" for m in sorted(set(after.mounts) - set(before.mounts))]
    for path, entries in after.dirs.items():
        was = before.dirs.get(path)
        if entries is not None and was is None:
            found.append(f"directory {path} was created")
        elif entries is not None and was is not None and set(entries) - set(was):
            found.append(f"{path} has new entries: {', '.join(sorted(set(entries) - set(was)))}")
    found += [f"cgroup {c} was added" for c in sorted(set(after.cgroups) - set(before.cgroups))]
    return found


# ------------------------------------------------------------------------------------------- the machine


def _run(args: Sequence[str], input: str | None = None) -> str:
    if shutil.which(args[0]) is None:
        return ""
    result = subprocess.run(list(args), input=input, capture_output=True, text=True, timeout=60, check=False)
    return result.stdout if result.returncode == 0 else ""


def _read_sysctls(names: Iterable[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for name in names:
        with contextlib.suppress(OSError):
            values[name] = (Path("/proc/sys") / name).read_text().strip()
    return values


def _dir_entries(path: str) -> list[str] | None:
    try:
        return sorted(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return None


def _cgroups() -> list[str]:
    """Second-level cgroups (``<hierarchy>/<group>``) of every v1 hierarchy."""
    found: list[str] = []
    with contextlib.suppress(OSError):
        for hierarchy in sorted(CGROUP_ROOT.iterdir()):
            if hierarchy.is_dir() and not hierarchy.is_symlink():
                found += [str(p) for p in sorted(hierarchy.iterdir()) if p.is_dir()]
    return found


def capture() -> Snapshot:
    """Record the machine's current state of everything a node may change."""
    return Snapshot(
        sysctls=_read_sysctls(SYSCTLS),
        nft_tables=sorted(line.strip() for line in _run(["nft", "list", "tables"]).splitlines() if line.strip()),
        iptables={family: _run([save]) for family, save, _ in IPTABLES_FAMILIES},
        links=sorted(os.listdir("/sys/class/net")),
        mounts=sorted(set(mount_points(Path("/proc/self/mountinfo").read_text()))),
        dirs={path: _dir_entries(path) for path in WATCHED_DIRS},
        cgroups=_cgroups(),
    )


def unmount_under(prefixes: Sequence[str]) -> None:
    """Lazily unmount every mount point at or under one of ``prefixes``, deepest first."""
    points = mount_points(Path("/proc/self/mountinfo").read_text())
    inside = [p for p in points if any(p == pre or p.startswith(pre.rstrip("/") + "/") for pre in prefixes)]
    for point in sorted(set(inside), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=30, check=False)


def _remove_cgroup_tree(path: Path) -> None:
    """rmdir a cgroup and its children, deepest first (a cgroup with live processes stays)."""
    for child in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            child.rmdir()
    with contextlib.suppress(OSError):
        path.rmdir()


def kill_cgroup_tree(path: Path) -> int:
    """SIGKILL every process in a cgroup tree; returns how many were signalled."""
    killed = 0
    for procs in [path / "cgroup.procs", *path.rglob("cgroup.procs")]:
        with contextlib.suppress(OSError):
            for pid in procs.read_text().split():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(pid), 9)
                    killed += 1
    return killed


def _restore_iptables(before: Snapshot) -> None:
    for family, save, restore_cmd in IPTABLES_FAMILIES:
        now = iptables_tables(_run([save]))
        was = iptables_tables(before.iptables.get(family, ""))
        for table in now:
            if table in was:
                _run([restore_cmd], input=was[table])
            else:
                # A table that was not there: flush its rules, delete its chains.
                binary = restore_cmd.replace("-restore", "")
                subprocess.run([binary, "-t", table, "-F"], capture_output=True, timeout=30, check=False)
                subprocess.run([binary, "-t", table, "-X"], capture_output=True, timeout=30, check=False)
    for table in set(_run(["nft", "list", "tables"]).splitlines()) - set(before.nft_tables):
        if table.strip():
            subprocess.run(["nft", "delete", *table.split()], capture_output=True, timeout=30, check=False)


def restore(before: Snapshot, extra_dirs: Sequence[str] = ()) -> list[str]:
    """Put the machine back as ``before`` recorded it; returns :func:`differences` that remain.

    Call it only after every process of the node has stopped. ``extra_dirs`` are the node's own directories
    (their mounts are removed too).
    """
    now = capture()
    new_dirs = [p for p, entries in now.dirs.items() if entries is not None and before.dirs.get(p) is None]
    unmount_under([*extra_dirs, "/run/netns", "/var/run/netns", "/run/containerd", *new_dirs])
    for point in sorted(set(capture().mounts) - set(before.mounts), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=30, check=False)
    for cgroup in sorted(set(now.cgroups) - set(before.cgroups)):
        if NODE_CGROUPS.fullmatch(Path(cgroup).name):
            kill_cgroup_tree(Path(cgroup))
            _remove_cgroup_tree(Path(cgroup))
    for link in sorted(set(now.links) - set(before.links)):
        if NODE_LINKS.fullmatch(link):
            subprocess.run(["ip", "link", "delete", link], capture_output=True, timeout=30, check=False)
    _restore_iptables(before)
    for path, entries in now.dirs.items():
        was = before.dirs.get(path)
        if entries is None:
            continue
        if was is None and path in SHARED_DIRS:
            _remove_empty_dirs(Path(path))
        elif was is None:
            shutil.rmtree(path, ignore_errors=True)
        else:
            for name in set(entries) - set(was):
                target = Path(path) / name
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        target.unlink()
    _write_sysctls(before.sysctls)
    return differences(before, capture())


def _remove_empty_dirs(path: Path) -> None:
    for child in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            child.rmdir()
    with contextlib.suppress(OSError):
        path.rmdir()


def _write_sysctls(values: Mapping[str, str]) -> None:
    for name in SYSCTLS:
        if name in values:
            with contextlib.suppress(OSError):
                current = (Path("/proc/sys") / name).read_text().strip()
                if current != values[name]:
                    (Path("/proc/sys") / name).write_text(values[name] + "\n")
