"""The network commands: hako network create|ls|inspect|rm|connect|disconnect|prune.

The records and addresses live in hako.network; the kernel side (bridges,
veths) in hako.network.netlink, imported only by commands that touch it.
"""

from __future__ import annotations

import sys

from .args import Command, UsageError
from .cli import _engine
from .commands import _each, _print_table
from .errors import NotFound
from .network import document as network_document


def cmd_network(argv: list[str]) -> int:
    actions = {
        "create": cmd_network_create,
        "ls": cmd_network_ls,
        "list": cmd_network_ls,
        "inspect": cmd_network_inspect,
        "rm": cmd_network_rm,
        "remove": cmd_network_rm,
        "connect": cmd_network_connect,
        "disconnect": cmd_network_disconnect,
        "prune": cmd_network_prune,
    }
    if not argv or argv[0] not in actions:
        raise UsageError(f"hako network: expected one of {', '.join(actions)}")
    return actions[argv[0]](argv[1:])


def cmd_network_create(argv: list[str]) -> int:
    args = (
        Command("network create", "Create a bridge network with its own subnet.")
        .value("--subnet", help="CIDR, e.g. 10.213.1.0/24 (default: a free /24 of 10.213.0.0/16)")
        .value("--gateway", help="the bridge's address (default: the subnet's first)")
        .value("--ip-range", help="allocate container addresses from this part of the subnet")
        .value("--mtu", help="MTU of the bridge and the containers' interfaces (default 1500)")
        .flag("--internal", help="no default route for containers (no way out of the network)")
        .many("-l", "--label", help="set a label KEY=value")
        .value("-d", "--driver", default="bridge", help="bridge (the only driver)")
        .positional("name")
        .parse(argv)
    )
    if args.driver != "bridge":
        raise UsageError(f"hako network create: driver {args.driver!r}: only bridge is supported")
    labels = dict(label.partition("=")[::2] for label in args.label)
    record = (
        _engine()
        .networks()
        .create(
            args.name,
            subnet=args.subnet,
            gateway=args.gateway,
            ip_range=args.ip_range,
            mtu=args.mtu,
            internal=args.internal,
            labels=labels,
        )
    )
    print(record["id"])
    return 0


def cmd_network_ls(argv: list[str]) -> int:
    args = (
        Command("network ls", "List networks.")
        .flag("-q", "--quiet", help="only IDs")
        .flag("--no-trunc", help="full IDs")
        .parse(argv)
    )
    records = _engine().networks().list()
    if args.quiet:
        for record in records:
            print(record["id"] if args.no_trunc else record["id"][:12])
        return 0
    rows = [("NETWORK ID", "NAME", "DRIVER", "SUBNET", "GATEWAY", "CONTAINERS")]
    for record in records:
        rows.append(
            (
                record["id"] if args.no_trunc else record["id"][:12],
                record["name"],
                record["driver"],
                record["subnet"],
                record["gateway"],
                len(record["endpoints"]),
            )
        )
    _print_table(rows)
    return 0


def cmd_network_inspect(argv: list[str]) -> int:
    args = Command("network inspect", "Show networks as JSON.").positional("networks", "+").parse(argv)
    import json

    networks = _engine().networks()
    print(json.dumps([network_document(networks.get(name)) for name in args.networks], indent=2))
    return 0


def cmd_network_rm(argv: list[str]) -> int:
    args = (
        Command("network rm", "Remove networks (refused while containers are on them, unless -f).")
        .flag("-f", "--force", help="disconnect the containers first")
        .positional("networks", "+")
        .parse(argv)
    )
    engine = _engine()
    return _each(args.networks, lambda name: engine.remove_network(name, args.force))


def cmd_network_connect(argv: list[str]) -> int:
    args = (
        Command("network connect", "Put a container on a network (a running one at once).")
        .value("--ip", help="its address on the network (default: the next free one)")
        .many("--alias", help="another name for it on the network")
        .positional("network")
        .positional("container")
        .parse(argv)
    )
    _engine().connect(args.container, args.network, args.ip, args.alias)
    return 0


def cmd_network_disconnect(argv: list[str]) -> int:
    args = (
        Command("network disconnect", "Take a container off a network.")
        .positional("network")
        .positional("container")
        .parse(argv)
    )
    _engine().disconnect(args.container, args.network)
    return 0


def cmd_network_prune(argv: list[str]) -> int:
    Command("network prune", "Remove every network no container is on.").parse(argv)
    engine = _engine()
    for record in engine.networks().list():
        if record["endpoints"]:
            continue
        try:
            engine.remove_network(record["name"])
        except NotFound:
            continue
        print(record["name"])
    sys.stdout.flush()
    return 0
