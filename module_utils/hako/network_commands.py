"""The network commands: hako network create|ls|inspect|rm|connect|disconnect|prune, hako link,
hako shape, hako system prune.

The records and addresses live in hako.network; the kernel side (bridges,
veths, qdiscs) in hako.network.netlink, the firewall rules in
hako.network.firewall, imported only by commands that touch them.
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
        .flag("--no-nat", help="no outbound NAT: containers reach the host and each other, nothing beyond")
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
            nat=not args.no_nat,
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


# Links and shaping -------------------------------------------------------------


def cmd_link(argv: list[str]) -> int:
    actions = {"ls": cmd_link_ls, "list": cmd_link_ls, "rm": cmd_link_rm, "remove": cmd_link_rm}
    if argv and argv[0] in actions:
        return actions[argv[0]](argv[1:])
    if argv and argv[0] == "create":
        argv = argv[1:]
    return cmd_link_create(argv)


def cmd_link_create(argv: list[str]) -> int:
    args = (
        Command("link", "Link two containers with a point-to-point veth pair (running ones at once).")
        .value("--ip-a", help="address of the first end, with its prefix (10.214.1.1/30)")
        .value("--ip-b", help="address of the second end, with its prefix")
        .value("--mtu", help="MTU of both ends (default 1500)")
        .value("--rate", help="rate limit of what leaves each end (10mbit, 512kbit, 100kbps)")
        .many("--route-a", help="in the first container, route this network (or default) through the second")
        .many("--route-b", help="in the second container, route this network (or default) through the first")
        .positional("a", help="CONTAINER:INTERFACE")
        .positional("b", help="CONTAINER:INTERFACE")
        .parse(argv)
    )
    spec = {
        "a": args.a,
        "b": args.b,
        "ip_a": args.ip_a,
        "ip_b": args.ip_b,
        "mtu": args.mtu,
        "rate": args.rate,
        "routes_a": args.route_a,
        "routes_b": args.route_b,
    }
    print(_engine().create_links([spec])[0]["id"])
    return 0


def cmd_link_ls(argv: list[str]) -> int:
    args = Command("link ls", "List links.").flag("-q", "--quiet", help="only IDs").parse(argv)
    from .network.links import end_label
    from .network.shaping import describe

    links = _engine().list_links()
    if args.quiet:
        for link in links:
            print(link["id"])
        return 0
    rows = [("LINK ID", "END A", "ADDRESS A", "END B", "ADDRESS B", "MTU", "SHAPE A", "SHAPE B", "STATE")]
    for link in links:
        a, b = link["ends"]
        rows.append(
            (
                link["id"],
                end_label(a),
                a["address"] or "-",
                end_label(b),
                b["address"] or "-",
                a["mtu"] or b["mtu"] or "-",
                describe(a["shape"]),
                describe(b["shape"]),
                "up" if link["up"] else "down",
            )
        )
    _print_table(rows)
    return 0


def cmd_link_rm(argv: list[str]) -> int:
    args = (
        Command("link rm", "Remove links, each named by either end (CONTAINER:INTERFACE) or its ID.")
        .positional("links", "+")
        .parse(argv)
    )
    engine = _engine()
    return _each(args.links, engine.remove_link)


def cmd_shape(argv: list[str]) -> int:
    args = (
        Command("shape", "Shape what leaves a container's interface (a network's or a link's).")
        .value("--rate", help="rate limit (tbf): 10mbit, 512kbit, 1gbit, 100kbps (bytes)")
        .value("--burst", help="token bucket size with --rate (default 10 ms at the rate)")
        .value("--delay", help="added delay (netem): 20ms")
        .value("--jitter", help="delay variation with --delay (netem): 5ms")
        .value("--loss", help="packets dropped at random (netem): 1%")
        .flag("--clear", help="remove the shaping")
        .positional("target", help="CONTAINER:INTERFACE")
        .parse(argv)
    )
    from .network.shaping import describe, parse_shape

    engine = _engine()
    given = [args.rate, args.burst, args.delay, args.jitter, args.loss]
    if args.clear:
        if any(v is not None for v in given):
            raise UsageError("hako shape: --clear takes no other option")
        engine.shape(args.target, None)
        return 0
    if all(v is None for v in given):
        from .engine.links import current_shape

        print(describe(current_shape(engine, args.target)))
        return 0
    shape = parse_shape(
        rate=args.rate, burst=args.burst, delay=args.delay, jitter=args.jitter, loss=args.loss
    )
    engine.shape(args.target, shape)
    return 0


# Leftovers ----------------------------------------------------------------------


def cmd_system(argv: list[str]) -> int:
    actions = {"prune": cmd_system_prune}
    if not argv or argv[0] not in actions:
        raise UsageError(f"hako system: expected one of {', '.join(actions)}")
    return actions[argv[0]](argv[1:])


def cmd_system_prune(argv: list[str]) -> int:
    Command(
        "system prune",
        "Remove what crashed runs left on the host: firewall rules, bridges, veths and loop devices"
        " nothing owns.",
    ).parse(argv)
    for line in _engine().prune_leftovers():
        print(line)
    sys.stdout.flush()
    return 0
