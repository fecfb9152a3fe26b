"""A throw-away network test bed: Linux network namespaces on one bridge, with nftables faults.

Used by the chaos suite (``tests/chaos``). Everything it makes carries one tag, ``hnc<pid>``
(the pid of the process that made it), so a run only ever touches its own namespaces, links and
nft tables, and a later run can sweep the leftovers of a run that died (its pid is gone):

    bed = NetBed(3)            # hnc1234-1 .. hnc1234-3 on bridge hnc1234br, 10.213.N.0/24
    bed.up()
    try:
        bed.partition(1, [bed.addr(2), bed.addr(3)])   # node 1 cut off from 2 and 3
        bed.heal(1)
    finally:
        bed.down()

The root namespace holds the bridge and the ``.1`` address of the /24, so clients in the root
namespace reach every namespace directly. Needs root, ``ip`` (iproute2) and ``nft``
(nftables). ``tc netem`` is not used (not available on every kernel): loss is an nftables rule,
``numgen random mod 100 < P drop``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

PREFIX = "hnc"  # every name this module makes starts with it


class NetBedError(RuntimeError):
    pass


def _run(argv: Sequence[str], *, stdin: str | None = None, check: bool = True) -> str:
    done = subprocess.run(
        list(argv),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    if check and done.returncode != 0:
        raise NetBedError(f"{' '.join(argv)} -> rc={done.returncode}: {done.stderr.strip()}")
    return done.stdout


def unavailable_reason() -> str | None:
    """Why a test bed cannot be made here (None when it can)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, veth pairs, nftables)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"needs '{tool}' (Debian packages iproute2, nftables)"
    probe = f"{PREFIX}probe{os.getpid()}"
    try:
        _run(["ip", "netns", "add", probe])
    except (NetBedError, OSError, subprocess.SubprocessError) as exc:
        return f"'ip netns add' does not work here: {exc}"
    try:
        _run(["ip", "netns", "exec", probe, "nft", "list", "tables"])
    except (NetBedError, OSError, subprocess.SubprocessError) as exc:
        return f"nftables does not work inside a namespace here: {exc}"
    finally:
        _run(["ip", "netns", "del", probe], check=False)
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_pid(name: str) -> int | None:
    """The pid in a name made by this module (``hnc<pid>...``), or None."""
    if not name.startswith(PREFIX):
        return None
    digits = ""
    for ch in name[len(PREFIX) :]:
        if not ch.isdigit():
            break
        digits += ch
    return int(digits) if digits else None


def namespaces() -> list[str]:
    out = _run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def links() -> list[str]:
    out = _run(["ip", "-o", "link", "show"], check=False)
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@")[0])
    return names


def namespace_pids(ns: str) -> list[int]:
    out = _run(["ip", "netns", "pids", ns], check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def sweep_leftovers() -> list[str]:
    """Remove what an earlier run that died left behind (its owner pid is gone); returns it.

    Processes still inside such a namespace were started by that run: they are killed by pid.
    """
    removed: list[str] = []
    for ns in namespaces():
        owner = _owner_pid(ns)
        if owner is None or owner == os.getpid() or _pid_alive(owner):
            continue
        for pid in namespace_pids(ns):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        _run(["ip", "netns", "del", ns], check=False)
        removed.append(f"netns {ns}")
    for link in links():
        owner = _owner_pid(link)
        if owner is None or owner == os.getpid() or _pid_alive(owner):
            continue
        _run(["ip", "link", "del", link], check=False)
        removed.append(f"link {link}")
    return removed


@dataclass
class NetBed:
    """``count`` namespaces (numbered from 1) on one bridge in a private /24."""

    count: int
    tag: str = field(default_factory=lambda: f"{PREFIX}{os.getpid()}")
    subnet: str = ""
    created: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.tag) > 10:  # interface names: at most 15 bytes, "<tag>br", "<tag>h9"
            raise NetBedError(f"tag {self.tag!r} is too long for interface names")
        if not self.subnet:
            self.subnet = self._free_subnet()

    # -- names and addresses ---------------------------------------------------------------
    def ns(self, i: int) -> str:
        return f"{self.tag}-{i}"

    @property
    def bridge(self) -> str:
        return f"{self.tag}br"

    def _veth(self, i: int) -> tuple[str, str]:
        return f"{self.tag}h{i}", f"{self.tag}p{i}"  # root side, namespace side

    def addr(self, i: int) -> str:
        """The address of namespace ``i`` (``.1`` is the root namespace's, on the bridge)."""
        net = ipaddress.ip_network(self.subnet)
        return str(net.network_address + 10 + i)

    @property
    def root_addr(self) -> str:
        return str(ipaddress.ip_network(self.subnet).network_address + 1)

    def table(self, what: str) -> str:
        return f"{self.tag}_{what}"

    @staticmethod
    def _free_subnet() -> str:
        """A 10.213.N.0/24 that no route of this host covers (N from the pid)."""
        routes = _run(["ip", "-4", "route", "show", "table", "all"], check=False)
        used = []
        for line in routes.split("\n"):
            word = line.split(" ", 1)[0]
            with contextlib.suppress(ValueError):
                if word and word != "default" and not word[0].isalpha():
                    used.append(ipaddress.ip_network(word, strict=False))
        start = os.getpid() % 200
        for k in range(200):
            net = ipaddress.ip_network(f"10.213.{20 + (start + k) % 200}.0/24")
            if not any(net.overlaps(u) for u in used):
                return str(net)
        raise NetBedError("no free 10.213.x.0/24")

    def exec_argv(self, i: int, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside namespace ``i`` (``ip netns exec`` execs it: same pid)."""
        return ["ip", "netns", "exec", self.ns(i), *argv]

    def run_in(self, i: int, argv: Sequence[str], stdin: str | None = None) -> str:
        return _run(self.exec_argv(i, argv), stdin=stdin)

    # -- lifetime ----------------------------------------------------------------------------
    def up(self) -> None:
        prefix = ipaddress.ip_network(self.subnet).prefixlen
        _run(["ip", "link", "add", self.bridge, "type", "bridge"])
        self.created.append(f"link {self.bridge}")
        _run(["ip", "addr", "add", f"{self.root_addr}/{prefix}", "dev", self.bridge])
        _run(["ip", "link", "set", self.bridge, "up"])
        for i in range(1, self.count + 1):
            ns = self.ns(i)
            host, peer = self._veth(i)
            _run(["ip", "netns", "add", ns])
            self.created.append(f"netns {ns}")
            _run(["ip", "link", "add", host, "type", "veth", "peer", "name", peer])
            self.created.append(f"link {host}")
            _run(["ip", "link", "set", peer, "netns", ns])
            _run(["ip", "link", "set", host, "master", self.bridge, "up"])
            _run(["ip", "-n", ns, "addr", "add", f"{self.addr(i)}/{prefix}", "dev", peer])
            _run(["ip", "-n", ns, "link", "set", peer, "up"])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])

    def down(self) -> list[str]:
        """Remove everything this bed made; returns what could not be removed."""
        for i in range(1, self.count + 1):
            if self.ns(i) in namespaces():
                for table in self.tables(i):
                    self.run_in_quiet(i, ["nft", "delete", "table", "inet", table])
                for pid in namespace_pids(self.ns(i)):  # only ours can be in there
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                _run(["ip", "netns", "del", self.ns(i)], check=False)
            host, _ = self._veth(i)
            if host in links():
                _run(["ip", "link", "del", host], check=False)
        if self.bridge in links():
            _run(["ip", "link", "del", self.bridge], check=False)
        return self.leftovers()

    def run_in_quiet(self, i: int, argv: Sequence[str]) -> None:
        _run(self.exec_argv(i, argv), check=False)

    def leftovers(self) -> list[str]:
        """Namespaces and links with this bed's tag that still exist."""
        out = [f"netns {n}" for n in namespaces() if n.startswith(self.tag)]
        out += [f"link {n}" for n in links() if n.startswith(self.tag)]
        return out

    # -- faults ------------------------------------------------------------------------------
    def tables(self, i: int) -> list[str]:
        """nft tables with this bed's tag inside namespace ``i``."""
        out = _run(self.exec_argv(i, ["nft", "list", "tables"]), check=False)
        names = [line.split()[-1] for line in out.splitlines() if line.startswith("table")]
        return [n for n in names if n.startswith(self.tag)]

    def _load(self, i: int, what: str, body: str) -> None:
        table = self.table(what)
        if table in self.tables(i):
            self.run_in(i, ["nft", "delete", "table", "inet", table])
        self.run_in(i, ["nft", "-f", "-"], stdin=f"table inet {table} {{\n{body}\n}}\n")

    def partition(self, i: int, peers: Sequence[str]) -> None:
        """Drop every packet between namespace ``i`` and ``peers`` (both directions)."""
        addrs = ", ".join(peers)
        self._load(
            i,
            "partition",
            f"  chain input {{ type filter hook input priority -10; policy accept;\n"
            f"    ip saddr {{ {addrs} }} drop\n  }}\n"
            f"  chain output {{ type filter hook output priority -10; policy accept;\n"
            f"    ip daddr {{ {addrs} }} drop\n  }}",
        )

    def loss(self, i: int, percent: int) -> None:
        """Drop ``percent`` % of the packets namespace ``i`` sends and receives (not loopback)."""
        if not 0 < percent < 100:
            raise NetBedError(f"loss percent must be in 1..99, got {percent}")
        self._load(
            i,
            "loss",
            f"  chain input {{ type filter hook input priority -10; policy accept;\n"
            f'    iifname != "lo" numgen random mod 100 < {percent} drop\n  }}\n'
            f"  chain output {{ type filter hook output priority -10; policy accept;\n"
            f'    oifname != "lo" numgen random mod 100 < {percent} drop\n  }}',
        )

    def heal(self, i: int) -> None:
        """Remove every fault table of namespace ``i``."""
        for table in self.tables(i):
            self.run_in(i, ["nft", "delete", "table", "inet", table])

    def link(self, i: int, up: bool) -> None:
        """Namespace ``i``'s only link to the others down (a dead host) or up again."""
        _, peer = self._veth(i)
        _run(["ip", "-n", self.ns(i), "link", "set", peer, "up" if up else "down"])
