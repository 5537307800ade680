"""The `hako` command: a learner's docker-like tool.

Errors are one line on stderr and exit status 125 (126/127 when the command
inside cannot be run), as with Docker. Imports stay inside the commands so
that `hako ps` pays only for what it uses.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .errors import HakoError, InvalidValue

PROG = "hako"


class UsageError(HakoError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would exit 2 with usage
        raise UsageError(f"{self.prog}: {message}")


def _parser(prog: str, description: str, add_help: bool = True) -> _Parser:
    return _Parser(prog=f"{PROG} {prog}", description=description, add_help=add_help)


def _split_at_positional(parser: argparse.ArgumentParser, argv: list[str], count: int = 1):
    """Docker-style: options, then ``count`` positionals; the rest is the command.

    argparse cannot stop at the first positional by itself, so options are
    scanned here with the parser's own table of which take a value.
    """
    takes_value = {}
    for action in parser._actions:
        for option in action.option_strings:
            takes_value[option] = action.nargs != 0
    i = 0
    while i < len(argv) and count:
        arg = argv[i]
        if arg == "--":
            argv = argv[:i] + argv[i + 1 :]
            break
        if arg.startswith("--"):
            name = arg.split("=", 1)[0]
            if takes_value.get(name) and "=" not in arg:
                i += 1
        elif arg.startswith("-") and len(arg) > 1:
            # Combined short flags (-it, -dit) or a short option with its value attached (-e X=1).
            for j, ch in enumerate(arg[1:], 1):
                if takes_value.get("-" + ch):
                    if j == len(arg) - 1:
                        i += 1
                    break
        else:
            count -= 1
        i += 1
    return argv[:i], argv[i:]


def _add_container_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name")
    p.add_argument("-h", "--hostname")
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("--env-file", action="append", default=[])
    p.add_argument("-u", "--user")
    p.add_argument("-w", "--workdir")
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("--entrypoint")
    p.add_argument("-m", "--memory")
    p.add_argument("--memory-swap")
    p.add_argument("--cpus")
    p.add_argument("-c", "--cpu-shares")
    p.add_argument("--cpuset-cpus")
    p.add_argument("--cpuset-mems")
    p.add_argument("--pids-limit")
    for kind, flag in (
        ("network", "--net"),
        ("pid", "--pid"),
        ("ipc", "--ipc"),
        ("uts", "--uts"),
        ("cgroup", "--cgroupns"),
    ):
        p.add_argument(flag, dest=f"ns_{kind}", metavar="MODE")
    p.add_argument("--network", dest="ns_network_long", metavar="MODE")
    p.add_argument("--userns")
    p.add_argument("-v", "--volume", action="append", default=[])
    p.add_argument("--tmpfs", action="append", default=[])
    p.add_argument("--read-only", action="store_true")
    p.add_argument("--rm", action="store_true")
    p.add_argument("--restart", default="no")
    p.add_argument("-l", "--label", action="append", default=[])
    p.add_argument("--stop-signal", default="SIGTERM")
    p.add_argument("--stop-timeout", default=10)
    p.add_argument("--help", action="help")


def _options_from_args(args, image: str, command: list[str]):
    from .engine.options import ContainerOptions

    env = list(args.env)
    for path in args.env_file:
        try:
            with open(path) as f:
                env += [line.strip() for line in f if line.strip() and not line.startswith("#")]
        except OSError as e:
            raise InvalidValue("env-file", path, e.strerror) from None
    env = [e if "=" in e else f"{e}={os.environ.get(e, '')}" for e in env]
    namespaces = {}
    for kind in ("network", "pid", "ipc", "uts", "cgroup"):
        value = getattr(args, f"ns_{kind}")
        if kind == "network" and args.ns_network_long:
            value = args.ns_network_long
        if value == "none" and kind == "network":
            value = "private"
        if value is not None:
            namespaces[kind] = value
    labels = {}
    for label in args.label:
        key, _, value = label.partition("=")
        labels[key] = value
    entrypoint = None
    if args.entrypoint is not None:
        entrypoint = [args.entrypoint] if args.entrypoint else []
    return ContainerOptions(
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
    )


def _engine():
    from .engine import Engine

    return Engine()


# Commands -----------------------------------------------------------------


def cmd_create(argv: list[str], run: bool = False) -> int:
    name = "run" if run else "create"
    p = _parser(
        name, "Run a command in a new container." if run else "Create a new container.", add_help=False
    )
    _add_container_options(p)
    if run:
        p.add_argument("-d", "--detach", action="store_true")
    p.add_argument("image")
    head, command = _split_at_positional(p, argv)
    args = p.parse_args(head)
    options = _options_from_args(args, args.image, command)
    engine = _engine()
    record = engine.create(options)
    if not run:
        print(record["id"])
        return 0
    if args.detach:
        try:
            _start_detached(engine, record["id"])
        except BaseException:
            _discard(engine, record["id"])
            raise
        print(record["id"])
        return 0
    return _run_foreground(engine, record, args.interactive, discard_on_failure=True)


def _discard(engine, cid: str) -> None:
    try:
        engine.remove(cid, force=True)
    except HakoError:
        pass


def _start_detached(engine, cid: str) -> None:
    from . import supervisor

    supervisor.request(engine, {"op": "start", "id": cid})


def _run_foreground(engine, record: dict, interactive: bool, discard_on_failure: bool = False) -> int:
    """Start a container owned by this process; relay its I/O until it ends."""
    from .console import Relay, raw_terminal
    from .runtime.process import Stdio, exit_code

    cid = record["id"]
    log_fd = os.open(engine.log_path(cid), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
    pipes = []
    try:
        if record["tty"]:
            stdio = Stdio(terminal=True)
        else:
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            pipes = [out_w, err_w]
            stdio = Stdio(stdin=0 if interactive else None, stdout=out_w, stderr=err_w)
        try:
            spawned = engine.start(cid, stdio)
        except BaseException:
            # `hako run` made the container: a run that cannot start leaves nothing.
            if discard_on_failure or record["auto_remove"]:
                _discard(engine, cid)
            raise
        for fd in pipes:
            os.close(fd)
        pipes = []
        if record["tty"]:
            relay = Relay(
                spawned.pid,
                console=spawned.console,
                log_fd=log_fd,
                stdin_fd=0 if interactive else None,
                forward_signals=False,
            )
            with raw_terminal(0) if interactive else _nothing():
                status = relay.run()
            os.close(spawned.console)
        else:
            relay = Relay(spawned.pid, outputs={out_r: 1, err_r: 2}, log_fd=log_fd)
            status = relay.run()
            os.close(out_r)
            os.close(err_r)
        engine.finish(cid, status)
        return exit_code(status)
    finally:
        for fd in pipes:
            os.close(fd)
        os.close(log_fd)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def cmd_start(argv: list[str]) -> int:
    p = _parser("start", "Start one or more stopped containers.")
    p.add_argument("-a", "--attach", action="store_true")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("containers", nargs="+")
    args = p.parse_args(argv)
    engine = _engine()
    if args.attach:
        if len(args.containers) != 1:
            raise UsageError("hako start: --attach takes one container")
        record = engine.get(args.containers[0])
        if engine.run_state(record["id"]) is None:
            return _run_foreground(engine, record, args.interactive)
        return cmd_attach([args.containers[0]])
    return _each(args.containers, lambda ref: _start_detached(engine, engine.resolve(ref)))


def _each(refs: list[str], action) -> int:
    """Docker's habit for many containers: act on each, print each, report failures, exit 1 if any."""
    failed = 0
    for ref in refs:
        try:
            action(ref)
            print(ref)
        except HakoError as e:
            print(f"Error: {e}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def cmd_stop(argv: list[str]) -> int:
    p = _parser("stop", "Stop containers: the stop signal, then SIGKILL after the timeout.")
    p.add_argument("-t", "--time", type=int, default=None)
    p.add_argument("containers", nargs="+")
    args = p.parse_args(argv)
    engine = _engine()
    return _each(args.containers, lambda ref: engine.stop(ref, args.time))


def cmd_restart(argv: list[str]) -> int:
    p = _parser("restart", "Restart containers.")
    p.add_argument("-t", "--time", type=int, default=None)
    p.add_argument("containers", nargs="+")
    args = p.parse_args(argv)
    engine = _engine()

    def restart(ref: str) -> None:
        engine.stop(ref, args.time)
        _start_detached(engine, engine.resolve(ref))

    return _each(args.containers, restart)


def cmd_kill(argv: list[str]) -> int:
    from .engine.options import parse_signal

    p = _parser("kill", "Send a signal (default SIGKILL) to containers.")
    p.add_argument("-s", "--signal", default="SIGKILL")
    p.add_argument("containers", nargs="+")
    args = p.parse_args(argv)
    signum = parse_signal("signal", args.signal)
    engine = _engine()
    return _each(args.containers, lambda ref: engine.kill(ref, signum))


def cmd_rm(argv: list[str]) -> int:
    p = _parser("rm", "Remove containers.")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("containers", nargs="+")
    args = p.parse_args(argv)
    engine = _engine()
    return _each(args.containers, lambda ref: engine.remove(ref, args.force))


def cmd_pause(argv: list[str], pause: bool = True) -> int:
    p = _parser("pause" if pause else "unpause", "Freeze or thaw every process of containers.")
    p.add_argument("containers", nargs="+")
    args = p.parse_args(argv)
    engine = _engine()
    return _each(args.containers, engine.pause if pause else engine.unpause)


def cmd_exec(argv: list[str]) -> int:
    from .console import Relay, raw_terminal
    from .runtime.process import Stdio, exit_code

    p = _parser("exec", "Run a command in a running container.")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("-d", "--detach", action="store_true")
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("-u", "--user")
    p.add_argument("-w", "--workdir")
    p.add_argument("container")
    head, command = _split_at_positional(p, argv)
    args = p.parse_args(head)
    if not command:
        raise UsageError("hako exec: a command is required")
    engine = _engine()
    if args.tty:
        stdio = Stdio(terminal=True)
    elif args.detach:
        stdio = Stdio()
    else:
        stdio = Stdio(stdin=0 if args.interactive else None, stdout=1, stderr=2)
    spawned = engine.exec(args.container, command, stdio, env=args.env, user=args.user, workdir=args.workdir)
    from .runtime.process import finish

    finish(spawned)
    if args.detach:
        return 0
    if args.tty:
        relay = Relay(
            spawned.pid,
            console=spawned.console,
            stdin_fd=0 if args.interactive else None,
            forward_signals=False,
        )
        with raw_terminal(0) if args.interactive else _nothing():
            status = relay.run()
        os.close(spawned.console)
    else:
        status = Relay(spawned.pid).run()
    return exit_code(status)


def cmd_attach(argv: list[str]) -> int:
    from . import supervisor

    p = _parser("attach", "Attach your terminal to a running container (detach with ctrl-p ctrl-q).")
    p.add_argument("--no-stdin", action="store_true")
    p.add_argument("container")
    args = p.parse_args(argv)
    engine = _engine()
    return supervisor.attach(engine, engine.resolve(args.container), not args.no_stdin)


def cmd_logs(argv: list[str]) -> int:
    p = _parser("logs", "Show a container's output.")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("-n", "--tail", default="all")
    p.add_argument("container")
    args = p.parse_args(argv)
    engine = _engine()
    cid = engine.resolve(args.container)
    path = engine.log_path(cid)
    if args.tail != "all":
        try:
            tail = int(args.tail)
        except ValueError:
            raise InvalidValue("tail", args.tail, "a number of lines or 'all'") from None
    else:
        tail = None
    out = sys.stdout.buffer
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return 0
    with f:
        data = f.read()
        if tail is not None:
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-tail:]) if tail > 0 else b""
        out.write(data)
        out.flush()
        if not args.follow:
            return 0
        while True:
            chunk = f.read()
            if chunk:
                out.write(chunk)
                out.flush()
                continue
            if engine.run_state(cid) is None:
                chunk = f.read()
                out.write(chunk)
                out.flush()
                return 0
            time.sleep(0.1)


def _status_text(status: dict, now: float) -> str:
    from .units import format_duration

    if status["status"] == "running":
        return f"Up {format_duration(now - status['started_at'])}"
    if status["status"] == "paused":
        return f"Up {format_duration(now - status['started_at'])} (Paused)"
    if status["status"] == "exited":
        code = status["exit_code"]
        code_text = "unknown" if code == -1 else code
        return f"Exited ({code_text}) {format_duration(now - status['finished_at'])} ago"
    return "Created"


def _command_text(record: dict) -> str:
    args = (record.get("entrypoint") or []) + (record.get("command") or [])
    return " ".join(args)


def cmd_ps(argv: list[str]) -> int:
    p = _parser("ps", "List containers.")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument("--format", choices=["table", "json"], default="table")
    args = p.parse_args(argv)
    engine = _engine()
    now = time.time()
    rows = engine.list(all=args.all)
    if args.quiet:
        for record, _ in rows:
            print(record["id"] if args.no_trunc else record["id"][:12])
        return 0
    if args.format == "json":
        for record, status in rows:
            print(
                json.dumps(
                    {
                        "ID": record["id"] if args.no_trunc else record["id"][:12],
                        "Names": record["name"],
                        "Image": record["image"],
                        "Command": _command_text(record),
                        "CreatedAt": record["created"],
                        "State": status["status"],
                        "Status": _status_text(status, now),
                        "Pid": status["pid"],
                        "ExitCode": status["exit_code"],
                    }
                )
            )
        return 0
    from .units import format_duration

    table = [("CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES")]
    for record, status in rows:
        command = _command_text(record) or "(image default)"
        if not args.no_trunc and len(command) > 20:
            command = command[:19] + "…"
        table.append(
            (
                record["id"] if args.no_trunc else record["id"][:12],
                record["image"],
                json.dumps(command),
                format_duration(now - record["created"]) + " ago",
                _status_text(status, now),
                record["name"],
            )
        )
    _print_table(table)
    return 0


def _print_table(rows: list[tuple]) -> None:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("   ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


def cmd_inspect(argv: list[str]) -> int:
    p = _parser("inspect", "Show a container's configuration and state as JSON.")
    p.add_argument("targets", nargs="+")
    args = p.parse_args(argv)
    engine = _engine()
    results = []
    for ref in args.targets:
        try:
            results.append(engine.inspect(ref))
        except HakoError:
            image = engine.images.get(ref)
            results.append({"Id": image.id, "RepoTags": image.tags, **image.config})
    print(json.dumps(results, indent=2))
    return 0


def _cpu_percent(engine, refs: list[str], interval: float = 0.5) -> dict[str, float]:
    first = {ref: (engine.stats(ref)["stats"].cpu_usage_ns, time.monotonic()) for ref in refs}
    time.sleep(interval)
    result = {}
    for ref in refs:
        usage, then = first[ref]
        now_usage = engine.stats(ref)["stats"].cpu_usage_ns
        result[ref] = (now_usage - usage) / ((time.monotonic() - then) * 1e9) * 100
    return result


def cmd_stats(argv: list[str]) -> int:
    from .units import format_size

    p = _parser("stats", "Show containers' resource use, read from their cgroups.")
    p.add_argument("--no-stream", action="store_true")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("containers", nargs="*")
    args = p.parse_args(argv)
    engine = _engine()
    refs = args.containers or [r["id"] for r, _ in engine.list(all=False)]
    while True:
        cpu = _cpu_percent(engine, refs)
        rows = [("CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "PIDS")]
        out = []
        for ref in refs:
            info = engine.stats(ref)
            s = info["stats"]
            limit = s.memory_limit
            mem_pct = f"{s.memory_usage / limit * 100:.2f}%" if limit > 0 else "--"
            pids = f"{s.pids_current} / {s.pids_limit}" if s.pids_limit > 0 else str(s.pids_current)
            rows.append(
                (
                    info["id"][:12],
                    info["name"],
                    f"{cpu[ref]:.2f}%",
                    f"{format_size(s.memory_usage)} / {format_size(limit) if limit > 0 else 'unlimited'}",
                    mem_pct,
                    pids,
                )
            )
            out.append(
                {
                    "ID": info["id"][:12],
                    "Name": info["name"],
                    "CPUPerc": round(cpu[ref], 2),
                    "MemUsage": s.memory_usage,
                    "MemLimit": limit,
                    "PIDs": s.pids_current,
                    "PIDsLimit": s.pids_limit,
                    "NrThrottled": s.nr_throttled,
                    "OOMKills": s.oom_kills,
                }
            )
        if args.format == "json":
            for item in out:
                print(json.dumps(item))
        else:
            if not args.no_stream:
                print("\x1b[2J\x1b[H", end="")
            _print_table(rows)
        sys.stdout.flush()
        if args.no_stream:
            return 0


def cmd_update(argv: list[str]) -> int:
    p = _parser("update", "Change the resource limits of containers, running ones in place.")
    p.add_argument("-m", "--memory")
    p.add_argument("--memory-swap")
    p.add_argument("--cpus")
    p.add_argument("-c", "--cpu-shares")
    p.add_argument("--cpuset-cpus")
    p.add_argument("--cpuset-mems")
    p.add_argument("--pids-limit")
    p.add_argument("containers", nargs="+")
    args = p.parse_args(argv)
    engine = _engine()
    changes = {
        k: getattr(args, k)
        for k in ("memory", "memory_swap", "cpus", "cpu_shares", "cpuset_cpus", "cpuset_mems", "pids_limit")
    }
    return _each(args.containers, lambda ref: engine.update(ref, **changes))


def cmd_image(argv: list[str]) -> int:
    p = _parser("image", "Manage images.")
    sub = p.add_subparsers(dest="action", required=True)
    build = sub.add_parser("build", help="build an image")
    build.add_argument("kind", choices=["busybox"])
    build.add_argument("-t", "--tag")
    sub.add_parser("ls", help="list images")
    rm = sub.add_parser("rm", help="remove images")
    rm.add_argument("images", nargs="+")
    rm.add_argument("-f", "--force", action="store_true")
    ins = sub.add_parser("inspect", help="show an image's config")
    ins.add_argument("images", nargs="+")
    args = p.parse_args(argv)
    engine = _engine()
    if args.action == "build":
        from .images import busybox

        image = busybox.build(engine.images, args.tag or "busybox:latest")
        print(image.id)
        return 0
    if args.action == "ls":
        return _list_images(engine)
    if args.action == "inspect":
        print(
            json.dumps(
                [{"Id": i.id, "RepoTags": i.tags, **i.config} for i in map(engine.images.get, args.images)],
                indent=2,
            )
        )
        return 0
    return _remove_images(engine, args.images, args.force)


def _list_images(engine) -> int:
    from .units import format_size

    rows = [("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE")]
    for image in engine.images.list():
        size = 0
        for diff_id in image.diff_ids():
            for directory, _dirs, files in os.walk(engine.images.layer_dir(diff_id)):
                for name in files:
                    try:
                        size += os.lstat(os.path.join(directory, name)).st_size
                    except OSError:
                        pass
        for tag in image.tags or ["<none>:<none>"]:
            repo, _, t = tag.rpartition(":")
            rows.append((repo, t, image.short_id, image.config.get("created", ""), format_size(size)))
    _print_table(rows)
    return 0


def _remove_images(engine, refs: list[str], force: bool) -> int:
    from .errors import Conflict

    def remove(ref: str) -> None:
        image = engine.images.get(ref)
        users = [r["name"] for r in (engine.load(c) for c in engine.ids()) if r["image_id"] == image.id]
        if users and not force:
            raise Conflict(
                f"image {ref} is used by container(s) {', '.join(users)}: remove them first or use -f"
            )
        engine.images.remove(ref)

    return _each(refs, remove)


def cmd_version(argv: list[str]) -> int:
    from . import __version__

    print(f"hako {__version__}")
    return 0


def cmd_supervisor(argv: list[str]) -> int:
    from . import supervisor

    return supervisor.serve(_engine())


COMMANDS = {
    "run": lambda a: cmd_create(a, run=True),
    "create": cmd_create,
    "start": cmd_start,
    "stop": cmd_stop,
    "restart": cmd_restart,
    "kill": cmd_kill,
    "rm": cmd_rm,
    "pause": cmd_pause,
    "unpause": lambda a: cmd_pause(a, pause=False),
    "exec": cmd_exec,
    "attach": cmd_attach,
    "logs": cmd_logs,
    "ps": cmd_ps,
    "inspect": cmd_inspect,
    "stats": cmd_stats,
    "update": cmd_update,
    "image": cmd_image,
    "images": lambda a: cmd_image(["ls", *a]),
    "rmi": lambda a: cmd_image(["rm", *a]),
    "version": cmd_version,
    "supervisor": cmd_supervisor,
}

USAGE = """usage: hako COMMAND [OPTIONS]

Containers:  run create start stop restart kill rm pause unpause exec attach
             logs ps inspect stats update
Images:      image build busybox | image ls | image rm | image inspect | images | rmi
Other:       version

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
