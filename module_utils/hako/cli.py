"""The `hako` command: a learner's docker-like tool.

Errors are one line on stderr and exit status 125 (126/127 when the command
inside cannot be run), as with Docker. Imports stay inside the commands, and
the hot paths (`hako run`, `hako ps`) avoid the standard modules that import
slowly (see lean.py), so that a container start costs what the kernel needs.
"""

from __future__ import annotations

import os
import sys

from .args import Command, HelpRequested, UsageError
from .errors import HakoError, InvalidValue

__all__ = ["UsageError", "main"]

NAMESPACE_FLAGS = (
    ("pid", "--pid"),
    ("ipc", "--ipc"),
    ("uts", "--uts"),
    ("cgroup", "--cgroupns"),
)


def _container_options(command: Command) -> Command:
    """The options `hako run` and `hako create` share (Docker's names)."""
    c = command
    c.value("--name", help="a unique name (letters, digits, _ . -)")
    c.value("-h", "--hostname", help="the host name inside (UTS namespace)")
    c.many("-e", "--env", help="set an environment variable NAME=value")
    c.many("--env-file", help="read NAME=value lines from a file")
    c.value("-u", "--user", help="uid[:gid] or name[:group]")
    c.value("-w", "--workdir", help="working directory inside")
    c.flag("-t", "--tty", help="allocate a pseudo-terminal")
    c.flag("-i", "--interactive", help="keep standard input open")
    c.value("--entrypoint", help="override the image's entrypoint")
    c.value("-m", "--memory", help="memory limit (64m, 1g)")
    c.value("--memory-swap", help="memory plus swap limit, -1 for unlimited swap")
    c.value("--cpus", help="CPU quota in CPUs (0.5)")
    c.value("-c", "--cpu-shares", help="relative CPU weight")
    c.value("--cpuset-cpus", help="CPUs allowed (0-1,3)")
    c.value("--cpuset-mems", help="memory nodes allowed")
    c.value("--pids-limit", help="maximum number of processes (-1 unlimited)")
    for kind, flag in NAMESPACE_FLAGS:
        c.value(flag, dest=f"ns_{kind}", help=f"{kind} namespace: private, host or container:NAME")
    c.many(
        "--network",
        "--net",
        dest="network",
        help="a network's name (repeatable), or none, host, container:NAME",
    )
    c.value("--ip", help="the container's address on its (first) network")
    c.many("--network-alias", help="another name the container has on its networks")
    c.many("--sysctl", help="a net.* kernel setting of its network namespace KEY=VALUE (repeatable)")
    c.many("-p", "--publish", help="publish a port: [ip:]hostport:containerport[/tcp|udp]")
    c.value("--userns", help="user namespace: host, auto or HOSTUID[:SIZE]")
    c.many("--group-add", help="an additional group (name or number) of the process")
    c.many("--cap-add", help="add a capability (NET_ADMIN, SYS_TIME, ALL)")
    c.many("--cap-drop", help="drop a capability (or ALL)")
    c.flag("--privileged", help="every capability, no seccomp filter, no masked paths, all devices")
    c.many(
        "--security-opt",
        help="no-new-privileges[=false], seccomp=unconfined|PROFILE.json, systempaths=unconfined",
    )
    c.many("-v", "--volume", help="bind mount /host/path:/container/path[:ro]")
    c.many("--tmpfs", help="mount a tmpfs: /path[:options]")
    c.many("--device", help="pass a host device: /dev/host[:/dev/container][:rwm] (repeatable)")
    c.flag("--read-only", help="mount the root filesystem read-only")
    c.many("--storage-opt", help="writable layer option KEY=VALUE: size=64m limits its size")
    c.flag("--rm", help="remove the container when it exits")
    c.value("--restart", default="no", help="no, always, unless-stopped, on-failure[:N]")
    c.many("-l", "--label", help="set a label KEY=value")
    c.value("--stop-signal", default="SIGTERM", help="signal that stops the container")
    c.value("--stop-timeout", default="10", help="seconds before SIGKILL on stop")
    return c


def _options_from_args(args, image: str, command: list[str]) -> dict:
    """The container options (hako.options.ContainerOptions keywords) of a parsed command line."""
    env = list(args.env)
    for path in args.env_file:
        try:
            with open(path) as f:
                env += [line.strip() for line in f if line.strip() and not line.startswith("#")]
        except OSError as e:
            raise InvalidValue("env-file", path, e.strerror) from None
    env = [e if "=" in e else f"{e}={os.environ.get(e, '')}" for e in env]
    # A profile's path is the caller's: the supervisor, which reads it, has another directory.
    security_opt = [
        f"seccomp={os.path.abspath(o[8:])}" if o.startswith("seccomp=") and o != "seccomp=unconfined" else o
        for o in args.security_opt
    ]
    namespaces = {}
    for kind in ("pid", "ipc", "uts", "cgroup"):
        value = getattr(args, f"ns_{kind}")
        if value is not None:
            namespaces[kind] = value
    networks = _networks_from_args(args, namespaces)
    labels = {}
    for label in args.label:
        key, _, value = label.partition("=")
        labels[key] = value
    entrypoint = None
    if args.entrypoint is not None:
        entrypoint = [args.entrypoint] if args.entrypoint else []
    return dict(
        image=image,
        command=command or None,
        entrypoint=entrypoint,
        name=args.name,
        env=env,
        hostname=args.hostname,
        user=args.user,
        workdir=args.workdir,
        tty=args.tty,
        interactive=args.interactive,
        memory=args.memory,
        memory_swap=args.memory_swap,
        cpus=args.cpus,
        cpu_shares=args.cpu_shares,
        cpuset_cpus=args.cpuset_cpus,
        cpuset_mems=args.cpuset_mems,
        pids_limit=args.pids_limit,
        namespaces=namespaces,
        userns=args.userns,
        volumes=args.volume,
        tmpfs=args.tmpfs,
        read_only=args.read_only,
        auto_remove=args.rm,
        restart_policy=args.restart,
        labels=labels,
        stop_signal=args.stop_signal,
        stop_timeout=args.stop_timeout,
        networks=networks,
        sysctls=list(args.sysctl),
        ports=args.publish,
        group_add=args.group_add,
        cap_add=args.cap_add,
        cap_drop=args.cap_drop,
        privileged=args.privileged,
        security_opt=security_opt,
        devices=args.device,
        storage_opts=list(args.storage_opt),
    )


def _networks_from_args(args, namespaces: dict) -> list[dict]:
    """--network values: a namespace mode (none, host, container:NAME) or networks by name."""
    modes, networks = [], []
    for value in args.network:
        if value in ("none", "private"):
            modes.append("private")
        elif value == "host" or value.startswith("container:"):
            modes.append(value)
        else:
            networks.append({"name": value, "ip": None, "aliases": list(args.network_alias)})
    if len(modes) > 1 or (modes and networks):
        raise InvalidValue(
            "network", ",".join(args.network), "give one of none, host, container:NAME, or networks"
        )
    if modes:
        namespaces["network"] = modes[0]
    if not args.network:
        from .options import default_networks

        networks = default_networks()
        if networks:
            networks[0]["aliases"] = list(args.network_alias)
    if args.ip is not None:
        if not networks:
            raise InvalidValue("ip", args.ip, "needs --network NAME")
        networks[0]["ip"] = args.ip
    if args.network_alias and not networks:
        raise InvalidValue("network-alias", args.network_alias[0], "needs --network NAME")
    return networks


def _engine():
    from .engine import Engine

    return Engine()


# Commands -----------------------------------------------------------------


def cmd_create(argv: list[str], run: bool = False) -> int:
    name = "run" if run else "create"
    c = _container_options(
        Command(name, "Run a command in a new container." if run else "Create a new container.")
    )
    if run:
        c.flag("-d", "--detach", help="run in the background and print the ID")
    args = c.positional("image").rest("command").parse(argv)
    options = _options_from_args(args, args.image, args.command)
    if not run:
        from .options import ContainerOptions

        print(_engine().create(ContainerOptions(**options))["id"])
        return 0
    # The supervisor checks, makes and starts it: it has the runtime loaded
    # and a start half-done ahead of time (see supervisor.py).
    from . import client

    message = {"op": "run", "options": options, "attach": not args.detach}
    if args.detach:
        print(client.request(message)["id"])
        return 0
    message["interactive"] = args.interactive
    return client.run_attached(message, args.interactive)


def _later(name: str, *args):
    """A command defined in commands.py, imported only when it runs."""

    def command(argv: list[str]) -> int:
        from . import commands

        return getattr(commands, name)(argv, *args)

    return command


def _networks(name: str):
    """A network command (network_commands.py), imported only when it runs."""

    def command(argv: list[str]) -> int:
        from . import network_commands

        return getattr(network_commands, name)(argv)

    return command


def _images(name: str):
    """An image command (image_commands.py), imported only when it runs."""

    def command(argv: list[str]) -> int:
        from . import image_commands

        return getattr(image_commands, name)(argv)

    return command


COMMANDS = {
    "run": lambda a: cmd_create(a, run=True),
    "create": cmd_create,
    "start": _later("cmd_start"),
    "stop": _later("cmd_stop"),
    "restart": _later("cmd_restart"),
    "kill": _later("cmd_kill"),
    "rm": _later("cmd_rm"),
    "pause": _later("cmd_pause"),
    "unpause": _later("cmd_pause", False),
    "exec": _later("cmd_exec"),
    "attach": _later("cmd_attach"),
    "logs": _later("cmd_logs"),
    "ps": _later("cmd_ps"),
    "inspect": _later("cmd_inspect"),
    "stats": _later("cmd_stats"),
    "update": _later("cmd_update"),
    "image": _images("cmd_image"),
    "images": _images("cmd_images"),
    "rmi": _images("cmd_rmi"),
    "tag": _images("cmd_tag"),
    "history": _images("cmd_history"),
    "pull": _images("cmd_pull"),
    "push": _images("cmd_push"),
    "login": _images("cmd_login"),
    "logout": _images("cmd_logout"),
    "commit": _images("cmd_commit"),
    "export": _images("cmd_export"),
    "save": _images("cmd_save"),
    "load": _images("cmd_load"),
    "import": _images("cmd_import"),
    "network": _networks("cmd_network"),
    "link": _networks("cmd_link"),
    "shape": _networks("cmd_shape"),
    "system": _networks("cmd_system"),
    "version": _later("cmd_version"),
    "supervisor": _later("cmd_supervisor"),
}

USAGE = """usage: hako COMMAND [OPTIONS]

Containers:  run create start stop restart kill rm pause unpause exec attach
             logs ps inspect stats update
Images:      images rmi tag history pull push login logout commit export save load import
             image build|ls|rm|inspect|history|prune|tag|pull|push|save|load|import
Networks:    network create|ls|inspect|rm|connect|disconnect|prune
             link [ls|rm]  shape
Other:       system prune, version

Run 'hako COMMAND --help' for a command's options."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command = COMMANDS.get(argv[0])
    if command is None:
        print(f"hako: unknown command {argv[0]!r}\n\n{USAGE}", file=sys.stderr)
        return 125
    try:
        return command(argv[1:])
    except HelpRequested as e:
        print(e.text)
        return 0
    except HakoError as e:
        print(f"hako: {e}", file=sys.stderr)
        return e.exit_code
    except PermissionError as e:
        print(f"hako: permission denied: {e.filename or e} (hako needs root)", file=sys.stderr)
        return 125
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
