"""Firewall rules of bridge networks: outbound NAT, isolation, published ports.

The rules are first a table of ``Rule`` objects (pure data, the same for
both backends), then rendered for one of two backends, driven only through
their command-line tools:

- **nftables** (preferred): one table of hako's own, ``table ip hako``,
  changed with ``nft -f -`` scripts (each one kernel transaction) and read
  with ``nft -j list table ip hako``.
- **iptables** (when ``nft`` is missing, or with ``HAKO_FIREWALL=iptables``):
  chains of hako's own (``HAKO-PREROUTING``, ``HAKO-OUTPUT``,
  ``HAKO-POSTROUTING`` in ``nat``, ``HAKO-FORWARD`` and ``HAKO-NETWORKS`` in
  ``filter``, ``HAKO-PREROUTING`` in ``raw``), each jumped to from its
  built-in chain; read with ``iptables-save``, changed with
  ``iptables-restore -w --noflush``.

Every rule carries a comment: ``hako-net:<network>`` (a network's),
``hako:<container id>`` (a container's published ports) or ``hako`` (the
rules all networks share, and the jumps). hako deletes rules by that tag
(nft: by handle; iptables: the saved rule with -D) and nothing else, and
removes its table (its chains) when no network or container rule is left.

Which container or network a rule belongs to is checked against the kernel,
not only the records: a container's rules are stale once its host-side veth
is gone (its network namespace went with its last process), a network's
once its bridge is gone. So a crashed run's rules are reclaimed without
touching those of another hako state directory on the same machine.
"""

from __future__ import annotations

import os
import subprocess

from ..errors import Conflict, HakoError, InvalidValue

TABLE = "hako"
BASE_TAG = "hako"
NETWORK_TAG = "hako-net:"
CONTAINER_TAG = "hako:"
LOOPBACK = "127.0.0.0/8"
EMPTY = "(empty)"  # reclaim removed the table or chains themselves


def network_tag(name: str) -> str:
    return NETWORK_TAG + name


def container_tag(cid: str) -> str:
    return CONTAINER_TAG + cid


def is_ours(tag: str | None) -> bool:
    return bool(tag) and (tag == BASE_TAG or tag.startswith((NETWORK_TAG, CONTAINER_TAG)))


class Rule:
    """One firewall rule, backend-neutral.

    ``chain`` is one of CHAINS; ``match`` a tuple of (key, value) pairs,
    all of which must hold: ``iifname``/``oifname`` (a name, ``!name`` for
    "not", a trailing ``*`` for a prefix), ``saddr``/``daddr`` (address or
    CIDR), ``local`` (the destination is an address of this host),
    ``ct_state`` (``established,related``), ``ct_dnat`` (the connection was
    DNATed), ``crossing`` (routed from one interface to another, not
    bridged within one), ``dport`` ((protocol, port)). ``verdict`` is
    ``accept``, ``drop``, ``masquerade``, ``("dnat", "ip:port")`` or
    ``("jump", chain)``.
    """

    __slots__ = ("chain", "match", "tag", "verdict")

    def __init__(self, chain: str, match: tuple, verdict, tag: str) -> None:
        self.chain, self.match, self.verdict, self.tag = chain, tuple(match), verdict, tag

    def __eq__(self, other) -> bool:
        return isinstance(other, Rule) and (self.chain, self.match, self.verdict, self.tag) == (
            other.chain,
            other.match,
            other.verdict,
            other.tag,
        )

    def __repr__(self) -> str:
        return f"Rule({self.chain!r}, {self.match!r}, {self.verdict!r}, {self.tag!r})"


# The rule table ------------------------------------------------------------------

CHAINS = ("guard", "prerouting", "output", "postrouting", "forward", "networks")


def base_rules() -> list[Rule]:
    """The forward rules every network shares (in this order, ahead of the networks' own).

    Replies and published ports pass; traffic routed from one hako bridge to
    another is dropped, also for bridges of networks this state directory
    does not know (another HAKO_ROOT, an older hako): forwarding is on for
    all of them once one network has NAT.
    """
    rules = [
        Rule("forward", [("ct_state", "established,related")], "accept", BASE_TAG),
        Rule("forward", [("ct_dnat", True)], "accept", BASE_TAG),
    ]
    for into, out in (("hk*", "hk*"), ("hk*", "hako0"), ("hako0", "hk*")):
        rules.append(
            Rule("forward", [("iifname", into), ("oifname", out), ("crossing", True)], "drop", BASE_TAG)
        )
    rules.append(Rule("forward", [], ("jump", "networks"), BASE_TAG))
    return rules


def network_rules(network: dict) -> list[Rule]:
    """The rules of one network: way out (NAT), no way in, loopback guard, masquerade for ports."""
    tag = network_tag(network["name"])
    bridge, subnet = network["bridge"], network["subnet"]
    rules = [
        # route_localnet (for published ports on 127.0.0.1) would let a
        # container reach the host's loopback services: not through here.
        Rule("guard", [("iifname", bridge), ("daddr", LOOPBACK)], "drop", tag),
    ]
    if network_nat(network):
        rules += [
            Rule("networks", [("iifname", bridge)], "accept", tag),
            Rule("postrouting", [("saddr", subnet), ("oifname", "!" + bridge)], "masquerade", tag),
        ]
    else:
        rules += [
            Rule("networks", [("iifname", bridge), ("oifname", bridge)], "accept", tag),
            Rule("networks", [("iifname", bridge)], "drop", tag),
        ]
    rules += [
        Rule("networks", [("oifname", bridge)], "drop", tag),
        # Published ports, reached from the host's loopback or from the
        # network itself (through its gateway): the reply must come back
        # through the host, so the source becomes the gateway.
        Rule("postrouting", [("oifname", bridge), ("saddr", LOOPBACK)], "masquerade", tag),
        Rule("postrouting", [("oifname", bridge), ("saddr", subnet), ("ct_dnat", True)], "masquerade", tag),
    ]
    return rules


def network_nat(network: dict) -> bool:
    return bool(network.get("nat", True)) and not network.get("internal")


def port_rules(cid: str, ports: list[dict], address: str) -> list[Rule]:
    """DNAT of each published port to ``address``: arriving (prerouting) and made on the host (output)."""
    tag = container_tag(cid)
    rules = []
    for chain in ("prerouting", "output"):
        for port in ports:
            where = ("local", True) if port["host_ip"] == "0.0.0.0" else ("daddr", port["host_ip"])
            match = [where, ("dport", (port["protocol"], port["host_port"]))]
            rules.append(Rule(chain, match, ("dnat", f"{address}:{port['container_port']}"), tag))
    return rules


def overlaps(a: dict, b: dict) -> bool:
    """Whether two published ports claim the same host port (same protocol, an address in common)."""
    return (
        a["protocol"] == b["protocol"]
        and a["host_port"] == b["host_port"]
        and (a["host_ip"] == b["host_ip"] or "0.0.0.0" in (a["host_ip"], b["host_ip"]))
    )


def port_text(port: dict) -> str:
    return f"{port['host_ip']}:{port['host_port']}/{port['protocol']}"


# nftables ------------------------------------------------------------------------

NFT_CHAINS = {
    "guard": "type filter hook prerouting priority raw; policy accept;",
    "prerouting": "type nat hook prerouting priority dstnat; policy accept;",
    "output": "type nat hook output priority -100; policy accept;",
    "postrouting": "type nat hook postrouting priority srcnat; policy accept;",
    "forward": "type filter hook forward priority filter; policy accept;",
    "networks": "",
}


def _nft_name(value: str) -> str:
    if value.startswith("!"):
        return f'!= "{value[1:]}"'
    return f'"{value}"'


def nft_rule(rule: Rule) -> str:
    """A rule in nft syntax, as `add rule` takes it after the chain."""
    words = [MATCHES[key][0](value) for key, value in rule.match]
    verdict = rule.verdict
    if isinstance(verdict, tuple):
        words.append(f"dnat to {verdict[1]}" if verdict[0] == "dnat" else f"jump {verdict[1]}")
    else:
        words.append(verdict)
    words.append(f'comment "{rule.tag}"')
    return " ".join(words)


class Present:
    """A rule of hako's in place: its chain, tag, reference for deletion, and what it names."""

    __slots__ = ("chain", "ifnames", "published", "ref", "tag")

    def __init__(self, chain: str, tag: str, ref, ifnames=(), published: dict | None = None) -> None:
        self.chain, self.tag, self.ref = chain, tag, ref
        self.ifnames = frozenset(ifnames)
        self.published = published

    def __repr__(self) -> str:
        return f"Present({self.chain!r}, {self.tag!r}, {self.ref!r})"


class State:
    """hako's rules as read from the kernel."""

    def __init__(self, rules: list[Present], base_ok: bool, exists: bool) -> None:
        self.rules, self.base_ok, self.exists = rules, base_ok, exists
        self.chains: set = set()  # iptables: hako's chains that are there
        self.jumps: set = set()  # iptables: built-in chains that jump to hako's

    def tagged(self, tag: str) -> list[Present]:
        return [r for r in self.rules if r.tag == tag]

    def owned(self) -> list[Present]:
        """The rules of networks and containers (not the shared ones)."""
        return [r for r in self.rules if r.tag != BASE_TAG]


def _run(argv: list[str], what: str, script: str | None = None) -> str:
    try:
        result = subprocess.run(argv, input=script, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise HakoError(f"{what}: {argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise HakoError(f"{what}: {argv[0]} did not answer within 60 s") from None
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("#")]
        raise HakoError(f"{what}: {argv[0]} failed: {lines[0].strip() if lines else result.returncode}")
    return result.stdout


class Nftables:
    name = "nftables"
    holds = f"table ip {TABLE}"

    def __init__(self, nft: str = "nft") -> None:
        self.nft = nft

    def read(self) -> State:
        import json

        try:
            result = subprocess.run(
                [self.nft, "-j", "list", "table", "ip", TABLE], capture_output=True, text=True, timeout=60
            )
        except FileNotFoundError:
            raise HakoError("firewall: nft is not installed") from None
        if result.returncode != 0:
            if "No such file or directory" in result.stderr:
                return State([], False, False)
            raise HakoError(f"firewall: nft failed: {result.stderr.strip().splitlines()[0]}")
        chains, rules, base = set(), [], 0
        for item in json.loads(result.stdout)["nftables"]:
            if "chain" in item:
                chains.add(item["chain"]["name"])
            rule = item.get("rule")
            if rule is None or not is_ours(rule.get("comment")):
                continue
            if rule["comment"] == BASE_TAG and rule["chain"] == "forward":
                base += 1
            ifnames, published = _nft_facts(rule["expr"])
            rules.append(
                Present(
                    rule["chain"],
                    rule["comment"],
                    rule["handle"],
                    ifnames,
                    published if rule["chain"] == "output" else None,
                )
            )
        base_ok = chains >= set(CHAINS) and base == len(base_rules())
        return State(rules, base_ok, True)

    def script(self, state: State, add: list[Rule], remove: list[Present], drop: bool) -> str:
        lines = []
        if drop:
            return f"delete table ip {TABLE}\n" if state.exists else ""
        if not state.base_ok:
            lines.append(f"add table ip {TABLE}")
            for chain, spec in NFT_CHAINS.items():
                lines.append(
                    f"add chain ip {TABLE} {chain} {{ {spec} }}" if spec else f"add chain ip {TABLE} {chain}"
                )
            lines.append(f"flush chain ip {TABLE} forward")
            lines += [f"add rule ip {TABLE} forward {nft_rule(r)}" for r in base_rules()]
        lines += [f"delete rule ip {TABLE} {r.chain} handle {r.ref}" for r in remove]
        lines += [f"add rule ip {TABLE} {r.chain} {nft_rule(r)}" for r in add]
        return "\n".join(lines) + "\n" if lines else ""

    def write(self, state: State, add: list[Rule], remove: list[Present], drop: bool = False) -> None:
        script = self.script(state, add, remove, drop)
        if script:
            _run([self.nft, "-f", "-"], "firewall", script)


def _nft_facts(expressions: list) -> tuple[set, dict | None]:
    """The interface names a rule matches exactly, and the host port a DNAT rule takes."""
    ifnames, port = set(), {"host_ip": None, "protocol": None, "host_port": None}
    for expression in expressions:
        match = expression.get("match")
        if not match:
            continue
        left, right = match.get("left", {}), match.get("right")
        if "meta" in left and left["meta"].get("key") in ("iifname", "oifname"):
            if isinstance(right, str) and not right.endswith("*"):
                ifnames.add(right)
        elif "payload" in left:
            payload = left["payload"]
            if payload.get("field") == "dport" and payload.get("protocol") in ("tcp", "udp"):
                port["protocol"], port["host_port"] = payload["protocol"], right
            elif payload.get("protocol") == "ip" and payload.get("field") == "daddr":
                port["host_ip"] = right
        elif "fib" in left and right == "local":
            port["host_ip"] = "0.0.0.0"
    return ifnames, port if port["host_port"] is not None and port["host_ip"] else None


# iptables ------------------------------------------------------------------------

# Our chain -> (table, chain of ours, built-in chain that jumps to it).
IPT_CHAINS = {
    "guard": ("raw", "HAKO-PREROUTING", "PREROUTING"),
    "prerouting": ("nat", "HAKO-PREROUTING", "PREROUTING"),
    "output": ("nat", "HAKO-OUTPUT", "OUTPUT"),
    "postrouting": ("nat", "HAKO-POSTROUTING", "POSTROUTING"),
    "forward": ("filter", "HAKO-FORWARD", "FORWARD"),
    "networks": ("filter", "HAKO-NETWORKS", None),
}
IPT_TABLES = ("raw", "nat", "filter")


def _ipt_name(flag: str, value: str) -> str:
    negate = value.startswith("!")
    name = value.lstrip("!")
    if name.endswith("*"):
        name = name[:-1] + "+"
    return f"! {flag} {name}" if negate else f"{flag} {name}"


# Each match key of Rule in nft and in iptables syntax.
MATCHES = {
    "iifname": (lambda v: f"iifname {_nft_name(v)}", lambda v: _ipt_name("-i", v)),
    "oifname": (lambda v: f"oifname {_nft_name(v)}", lambda v: _ipt_name("-o", v)),
    "saddr": (lambda v: f"ip saddr {v}", lambda v: f"-s {v}"),
    "daddr": (lambda v: f"ip daddr {v}", lambda v: f"-d {v}"),
    "local": (lambda v: "fib daddr type local", lambda v: "-m addrtype --dst-type LOCAL"),
    "ct_state": (lambda v: f"ct state {v}", lambda v: f"-m conntrack --ctstate {v.upper()}"),
    "ct_dnat": (lambda v: "ct status dnat", lambda v: "-m conntrack --ctstate DNAT"),
    # Routed from one interface to another, not bridged within one (br_netfilter
    # shows bridged packets to the forward hook too): nft asks the FIB whether the
    # destination is reached through the interface the packet came in by.
    "crossing": (lambda v: "fib daddr . iif oif missing", lambda v: "-m physdev ! --physdev-is-bridged"),
    "dport": (lambda v: f"{v[0]} dport {v[1]}", lambda v: f"-p {v[0]} -m {v[0]} --dport {v[1]}"),
}


def ipt_rule(rule: Rule) -> str:
    """A rule's match and target in iptables syntax (what follows ``-A CHAIN``)."""
    words = [MATCHES[key][1](value) for key, value in rule.match]
    words.append(f'-m comment --comment "{rule.tag}"')
    verdict = rule.verdict
    if isinstance(verdict, tuple):
        if verdict[0] == "dnat":
            words.append(f"-j DNAT --to-destination {verdict[1]}")
        else:
            words.append(f"-j {IPT_CHAINS[verdict[1]][1]}")
    else:
        words.append(f"-j {verdict.upper()}")
    return " ".join(words)


class Iptables:
    name = "iptables"
    holds = "chains HAKO-*"

    def __init__(self, iptables: str = "iptables") -> None:
        self.iptables = iptables

    def _tool(self, suffix: str) -> str:
        return self.iptables + suffix

    def read(self) -> State:
        text = _run([self._tool("-save")], "firewall")
        return self.parse(text)

    @staticmethod
    def parse(text: str) -> State:
        """hako's rules in iptables-save output (``chains`` and ``jumps`` of hako's that are there)."""
        ours = {(table, chain) for table, chain, _ in IPT_CHAINS.values()}
        by_pair = {(table, chain): name for name, (table, chain, _) in IPT_CHAINS.items()}
        targets = {chain for _, chain, _ in IPT_CHAINS.values()}
        chains, jumps, rules, base, table = set(), set(), [], 0, ""
        for line in text.splitlines():
            if line.startswith("*"):
                table = line[1:].strip()
            elif line.startswith(":"):
                chains.add((table, line[1:].split()[0]))
            elif line.startswith("-A "):
                chain = line.split()[1]
                tag = _ipt_comment(line)
                if not is_ours(tag):
                    continue
                if (table, chain) in ours:
                    name = by_pair[(table, chain)]
                    if tag == BASE_TAG and name == "forward":
                        base += 1
                    ifnames, published = _ipt_facts(line)
                    rules.append(
                        Present(name, tag, (table, line), ifnames, published if name == "output" else None)
                    )
                elif tag == BASE_TAG and line.split()[-1] in targets:
                    jumps.add((table, chain))
                    rules.append(Present("jump", tag, (table, line)))
        wanted_jumps = {(t, builtin) for t, _, builtin in IPT_CHAINS.values() if builtin}
        state = State(
            rules, ours <= chains and wanted_jumps <= jumps and base == len(base_rules()), bool(ours & chains)
        )
        state.chains, state.jumps = chains & ours, jumps
        return state

    def script(
        self, state: State, add: list[Rule], remove: list[Present], drop: bool
    ) -> dict[str, list[str]]:
        """iptables-restore lines per table."""
        tables: dict[str, list[str]] = {t: [] for t in IPT_TABLES}
        if drop:
            for present in state.rules:
                if present.chain == "jump":
                    table, line = present.ref
                    tables[table].append("-D" + line[2:])
            for verb in ("-F", "-X"):
                for table, chain, _ in IPT_CHAINS.values():
                    if (table, chain) in state.chains:
                        tables[table].append(f"{verb} {chain}")
            return tables
        if not state.base_ok:
            tables["filter"].append("-F HAKO-FORWARD")
            tables["filter"] += [f"-A HAKO-FORWARD {ipt_rule(r)}" for r in base_rules()]
        for present in remove:
            table, line = present.ref
            tables[table].append("-D" + line[2:])
        for rule in add:
            table, chain, _ = IPT_CHAINS[rule.chain]
            tables[table].append(f"-A {chain} {ipt_rule(rule)}")
        return tables

    def write(self, state: State, add: list[Rule], remove: list[Present], drop: bool = False) -> None:
        if drop and not state.exists:
            return
        if not drop and not state.base_ok:
            self._ensure_chains(state)
        tables = self.script(state, add, remove, drop)
        text = "".join(
            f"*{table}\n" + "".join(line + "\n" for line in lines) + "COMMIT\n"
            for table, lines in tables.items()
            if lines
        )
        if text:
            _run([self._tool("-restore"), "-w", "--noflush"], "firewall", text)

    def _ensure_chains(self, state: State) -> None:
        """hako's chains, and the jumps to them from the built-in chains (made once, one command each).

        Plain iptables commands, not iptables-restore: with iptables-nft, a
        built-in chain exists only once a command has used it.
        """
        for table, chain, builtin in IPT_CHAINS.values():
            if (table, chain) not in state.chains:
                _run([self.iptables, "-w", "-t", table, "-N", chain], "firewall")
                state.chains.add((table, chain))
            if builtin is not None and (table, builtin) not in state.jumps:
                _run(
                    [self.iptables, "-w", "-t", table, "-I", builtin, "1",
                     "-m", "comment", "--comment", BASE_TAG, "-j", chain],
                    "firewall",
                )  # fmt: skip
                state.jumps.add((table, builtin))


def _ipt_comment(line: str) -> str | None:
    marker = "--comment "
    at = line.find(marker)
    if at < 0:
        return None
    rest = line[at + len(marker) :]
    if rest.startswith('"'):
        return rest[1:].split('"', 1)[0]
    return rest.split(" ", 1)[0]


def _ipt_facts(line: str) -> tuple[set, dict | None]:
    words = line.split()
    ifnames, port = set(), {"host_ip": None, "protocol": None, "host_port": None}
    for i, word in enumerate(words[:-1]):
        following = words[i + 1]
        if word in ("-i", "-o") and not following.endswith("+"):
            ifnames.add(following)
        elif word == "-p":
            port["protocol"] = following
        elif word == "--dport":
            port["host_port"] = int(following)
        elif word == "-d":
            port["host_ip"] = following.split("/")[0]
        elif word == "--dst-type" and following == "LOCAL":
            port["host_ip"] = "0.0.0.0"
    return ifnames, port if port["host_port"] is not None and port["host_ip"] else None


# Choosing a backend --------------------------------------------------------------


def _which(program: str) -> str | None:
    for directory in os.environ.get("PATH", "").split(os.pathsep) + ["/usr/sbin", "/sbin"]:
        path = os.path.join(directory, program)
        if directory and os.access(path, os.X_OK) and os.path.isfile(path):
            return path
    return None


def choose_backend(choice: str | None = None):
    """The firewall backend: ``HAKO_FIREWALL`` (nftables or iptables), else nftables if nft is there."""
    choice = choice if choice is not None else os.environ.get("HAKO_FIREWALL", "")
    if choice not in ("", "nftables", "iptables"):
        raise InvalidValue("HAKO_FIREWALL", choice, "nftables or iptables")
    if choice in ("", "nftables"):
        nft = _which("nft")
        if nft:
            return Nftables(nft)
        if choice:
            raise HakoError(
                "HAKO_FIREWALL=nftables, but nft is not installed (Debian: apt-get install nftables)"
            )
    iptables = _which("iptables")
    if iptables:
        return Iptables(iptables)
    raise HakoError(
        "NAT and published ports need nft or iptables (Debian: apt-get install nftables), "
        "or a network made with --no-nat and no -p"
    )


def available() -> list:
    """Every backend whose tool is installed (for clean-up after a change of HAKO_FIREWALL)."""
    found = []
    for program, make in (("nft", Nftables), ("iptables", Iptables)):
        path = _which(program)
        if path:
            found.append(make(path))
    return found


# Operations ----------------------------------------------------------------------


def _interfaces() -> set[str]:
    try:
        return set(os.listdir("/sys/class/net"))
    except OSError:
        return set()


def container_gone(cid: str, interfaces: set[str]) -> bool:
    """A container's network namespace is gone when no host-side veth ``hk<id10><n>`` is left."""
    prefix = "hk" + cid[:10]
    return not any(name.startswith(prefix) for name in interfaces)


def _network_rules_in_place(state: State, network: dict) -> list[Present]:
    return [r for r in state.tagged(network_tag(network["name"])) if network["bridge"] in r.ifnames]


class Firewall:
    """The firewall changes of one hako state, serialized by a lock in its run directory."""

    def __init__(self, run_dir: str, backend=None) -> None:
        self.lock_path = os.path.join(run_dir, "firewall.lock")
        self.run_dir = run_dir
        self.backend = backend or choose_backend()

    def _locked(self):
        from .. import store

        os.makedirs(self.run_dir, exist_ok=True)
        return store.locked(self.lock_path)

    def setup(
        self, networks: list[dict], cid: str | None = None, ports=(), address=None, holder=None
    ) -> None:
        """Rules of ``networks`` (each once) and, for container ``cid``, DNAT of its ``ports`` to ``address``.

        A host port another live container publishes (``holder(cid)`` names
        it) or a host process listens on is refused, and nothing changes.
        Rules of containers whose network namespace is gone are reclaimed on
        the way. Forwarding is turned on once a network with NAT or a
        published port has its rules (never off again: other things on the
        host may count on it).
        """
        with self._locked():
            state = self.backend.read()
            interfaces = _interfaces()
            remove, add = [], []
            for present in state.rules:
                other = present.tag.startswith(CONTAINER_TAG) and present.tag != container_tag(cid or "")
                if other and container_gone(present.tag[len(CONTAINER_TAG) :], interfaces):
                    remove.append(present)
            for network in networks:
                wanted = network_rules(network)
                have = _network_rules_in_place(state, network)
                if len(have) != len(wanted):
                    remove += have
                    add += wanted
            if cid is not None:
                if ports:
                    self._check_free(state, remove, cid, ports, holder)
                remove += state.tagged(container_tag(cid))
                if ports:
                    add += port_rules(cid, ports, address)
            if add or remove or (networks and not state.base_ok):
                self.backend.write(state, add, remove)
        for network in networks:
            _write_sysctl(f"/proc/sys/net/ipv4/conf/{network['bridge']}/route_localnet", "1")
        if ports or any(network_nat(n) for n in networks):
            # Published ports are forwarded too (from outside, other networks, the gateway).
            _write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")

    def _check_free(self, state: State, stale: list[Present], cid: str, ports, holder) -> None:
        for present in state.rules:
            if present.published is None or present in stale or present.tag == container_tag(cid):
                continue
            for port in ports:
                if overlaps(port, present.published):
                    other = present.tag[len(CONTAINER_TAG) :]
                    name = holder(other) if holder else other[:12]
                    raise Conflict(f"port {port_text(port)} is already published by container {name}")
        for port in ports:
            problem = _host_port_problem(port)
            if problem:
                raise Conflict(f"cannot publish port {port_text(port)}: {problem}")

    def unpublish(self, cid: str) -> bool:
        """Remove a container's rules; whether there were any."""
        return self._remove(lambda r: r.tag == container_tag(cid))

    def remove_network(self, network: dict) -> bool:
        """Remove a network's rules (those naming its bridge); whether there were any."""
        tag = network_tag(network["name"])
        return self._remove(lambda r: r.tag == tag and network["bridge"] in r.ifnames)

    def _remove(self, which) -> bool:
        with self._locked():
            state = self.backend.read()
            doomed = [r for r in state.rules if which(r)]
            if not doomed:
                return False
            self._write_removal(state, doomed)
        return True

    def _write_removal(self, state: State, doomed: list[Present]) -> None:
        left = [r for r in state.owned() if r not in doomed]
        if left:
            self.backend.write(state, [], doomed)
        else:
            self.backend.write(state, [], [], drop=True)

    def reclaim(self, network_stale) -> list[str]:
        """Remove the rules of containers and networks that are gone; the tags removed.

        A container's rules are stale once its network namespace is gone
        (no host-side veth left); a network's when ``network_stale(name,
        ifnames, interfaces)`` says so. With nothing of hako's left, the
        table (the chains) goes too, reported as EMPTY.
        """
        removed = []
        with self._locked():
            state = self.backend.read()
            interfaces = _interfaces()
            doomed = []
            for present in state.owned():
                tag = present.tag
                if tag.startswith(CONTAINER_TAG):
                    stale = container_gone(tag[len(CONTAINER_TAG) :], interfaces)
                else:
                    stale = network_stale(tag[len(NETWORK_TAG) :], present.ifnames, interfaces)
                if stale:
                    doomed.append(present)
                    if tag not in removed:
                        removed.append(tag)
            if doomed or (state.exists and not state.owned()):
                self._write_removal(state, doomed)
                if len(doomed) == len(state.owned()):
                    removed.append(EMPTY)
        return removed


def _write_sysctl(path: str, value: str) -> None:
    try:
        with open(path) as f:
            if f.read().strip() == value:
                return
        with open(path, "w") as f:
            f.write(value)
    except OSError as e:
        raise HakoError(
            f"cannot set {path[len('/proc/sys/') :].replace('/', '.')}={value}: {e.strerror}"
        ) from None


def _host_port_problem(port: dict) -> str | None:
    """Why a host process keeps the port from being published, if it does (a trial bind:
    hako's DNAT binds nothing, so a listener would never see its connections)."""
    import errno
    import socket

    kind = socket.SOCK_STREAM if port["protocol"] == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((port["host_ip"], port["host_port"]))
        except OSError as e:
            if e.errno == errno.EADDRNOTAVAIL:
                return f"{port['host_ip']} is not an address of this host"
            return "a process of the host uses it"
    return None
