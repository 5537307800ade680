"""The commands of `hako` other than run and create (see cli.py, which loads this on demand)."""

from __future__ import annotations

import os
import sys
import time

from .args import Command, UsageError
from .cli import _engine
from .errors import HakoError, InvalidValue, NotFound


def cmd_start(argv: list[str]) -> int:
    from . import client

    args = (
        Command("start", "Start one or more stopped containers.")
        .flag("-a", "--attach", help="attach to its output")
        .flag("-i", "--interactive", help="attach standard input")
        .flag(
            "--boot", help="start the stopped containers whose restart policy brings them back after a reboot"
        )
        .positional("containers", "*")
        .parse(argv)
    )
    engine = _engine()
    if args.boot:
        if args.containers or args.attach:
            raise UsageError("hako start: --boot takes no containers and no --attach")
        names = [record["name"] for record, status in engine.list() if comes_back_at_boot(record, status)]
        return _each(names, lambda ref: _start_detached(engine.resolve(ref)))
    if not args.containers:
        raise UsageError("hako start: name one or more containers (or --boot)")
    if args.attach:
        if len(args.containers) != 1:
            raise UsageError("hako start: --attach takes one container")
        cid = engine.resolve(args.containers[0])
        if engine.run_state(cid) is not None:
            return client.attach(cid, with_stdin=args.interactive)
        message = {"op": "start", "id": cid, "attach": True, "interactive": args.interactive}
        return client.run_attached(message, args.interactive)
    return _each(args.containers, lambda ref: _start_detached(engine.resolve(ref)))


def comes_back_at_boot(record: dict, status: dict) -> bool:
    """Whether the boot service starts this container, as Docker's daemon does at its start.

    ``always`` comes back even after ``hako stop``; ``unless-stopped`` unless it
    was stopped by hand; ``on-failure`` when the shutdown took it down while
    running (no exit recorded), which is the failure a reboot is to it.
    """
    if status["status"] in ("running", "paused"):
        return False
    policy = record.get("restart_policy", "no").partition(":")[0]
    if policy == "always":
        return True
    if record.get("manual_stop"):
        return False
    if policy == "unless-stopped":
        return True
    return policy == "on-failure" and status["started_at"] is not None and status["finished_at"] is None


def _start_detached(cid: str) -> None:
    from . import client

    client.request({"op": "start", "id": cid})


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


def _timed_command(name: str, summary: str, argv: list[str]):
    args = (
        Command(name, summary)
        .value("-t", "--time", help="seconds to wait before SIGKILL (default: the container's stop timeout)")
        .positional("containers", "+")
        .parse(argv)
    )
    if args.time is not None:
        from .units import parse_int

        args.time = parse_int("time", args.time, minimum=0)
        if args.time > 86400:
            raise InvalidValue("time", args.time, "at most 86400 seconds")
    return args


def cmd_stop(argv: list[str]) -> int:
    args = _timed_command("stop", "Stop containers: the stop signal, then SIGKILL after the timeout.", argv)
    engine = _engine()
    return _each(args.containers, lambda ref: engine.stop(ref, args.time))


def cmd_restart(argv: list[str]) -> int:
    args = _timed_command("restart", "Restart containers.", argv)
    engine = _engine()

    def restart(ref: str) -> None:
        engine.stop(ref, args.time)
        _start_detached(engine.resolve(ref))

    return _each(args.containers, restart)


def cmd_kill(argv: list[str]) -> int:
    from .options import parse_signal

    args = (
        Command("kill", "Send a signal (default SIGKILL) to containers.")
        .value("-s", "--signal", default="SIGKILL", help="signal name or number")
        .positional("containers", "+")
        .parse(argv)
    )
    signum = parse_signal("signal", args.signal)
    engine = _engine()
    return _each(args.containers, lambda ref: engine.kill(ref, signum))


def cmd_rm(argv: list[str]) -> int:
    args = (
        Command("rm", "Remove containers.")
        .flag("-f", "--force", help="kill a running container first")
        .positional("containers", "+")
        .parse(argv)
    )
    engine = _engine()
    return _each(args.containers, lambda ref: engine.remove(ref, args.force))


def cmd_pause(argv: list[str], pause: bool = True) -> int:
    name = "pause" if pause else "unpause"
    args = (
        Command(name, "Freeze or thaw every process of containers.").positional("containers", "+").parse(argv)
    )
    engine = _engine()
    return _each(args.containers, engine.pause if pause else engine.unpause)


def cmd_exec(argv: list[str]) -> int:
    from .console import Relay, raw_terminal
    from .runtime.process import Stdio, exit_code, finish

    args = (
        Command("exec", "Run a command in a running container.")
        .flag("-i", "--interactive", help="keep standard input open")
        .flag("-t", "--tty", help="allocate a pseudo-terminal")
        .flag("-d", "--detach", help="run in the background")
        .many("-e", "--env", help="set an environment variable NAME=value")
        .value("-u", "--user", help="uid[:gid] or name[:group]")
        .value("-w", "--workdir", help="working directory inside")
        .flag("--privileged", help="every capability and no seccomp filter for this command")
        .many("--cap-add", help="add a capability to the container's set for this command")
        .many("--cap-drop", help="drop a capability (or ALL) from the container's set for this command")
        .positional("container")
        .rest("command")
        .parse(argv)
    )
    command = args.command
    if not command:
        raise UsageError("hako exec: a command is required")
    privileges = {"privileged": args.privileged, "cap_add": args.cap_add, "cap_drop": args.cap_drop}
    engine = _engine()
    # The command inside never gets our own descriptors (a terminal of the
    # host's would let it read or inject keystrokes): pipes that we relay.
    ours: list[int] = []
    theirs: list[int] = []
    if args.tty:
        stdio = Stdio(terminal=True)
    elif args.detach:
        stdio = Stdio()
    else:
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        ours += [out_r, err_r]
        theirs += [out_w, err_w]
        stdin_r = stdin_w = None
        if args.interactive:
            stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC)
            ours.append(stdin_w)
            theirs.append(stdin_r)
        stdio = Stdio(stdin=stdin_r, stdout=out_w, stderr=err_w)
    try:
        spawned = engine.exec(
            args.container, command, stdio, env=args.env, user=args.user, workdir=args.workdir, **privileges
        )
        finish(spawned)
    except BaseException:
        for fd in ours:
            os.close(fd)
        raise
    finally:
        for fd in theirs:
            os.close(fd)
    if args.detach:
        return 0
    if args.tty:
        relay = Relay(
            spawned.pid,
            console=spawned.console,
            stdin_fd=0 if args.interactive else None,
            forward_signals=False,
        )
        with raw_terminal(0, enabled=args.interactive):
            status = relay.run()
        os.close(spawned.console)
    else:
        relay = Relay(
            spawned.pid,
            outputs={out_r: 1, err_r: 2},
            stdin_fd=0 if args.interactive else None,
            input_target=stdin_w,
        )
        status = relay.run()
        os.close(out_r)
        os.close(err_r)
        if relay.input_target is not None:  # still open: our input had not ended
            os.close(relay.input_target)
    return exit_code(status)


def cmd_attach(argv: list[str]) -> int:
    from . import client

    args = (
        Command("attach", "Attach your terminal to a running container (detach with ctrl-p ctrl-q).")
        .flag("--no-stdin", help="do not attach standard input")
        .positional("container")
        .parse(argv)
    )
    return client.attach(_engine().resolve(args.container), not args.no_stdin)


def cmd_logs(argv: list[str]) -> int:
    args = (
        Command("logs", "Show a container's output.")
        .flag("-f", "--follow", help="keep following the output until the container stops")
        .value("-n", "--tail", default="all", help="number of lines from the end")
        .positional("container")
        .parse(argv)
    )
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
        code_text = "unknown" if code in (None, -1) else code
        if status["finished_at"] is None:  # it went with a reboot: when is not known
            return f"Exited ({code_text})"
        return f"Exited ({code_text}) {format_duration(now - status['finished_at'])} ago"
    return "Created"


def _command_text(record: dict) -> str:
    args = (record.get("entrypoint") or []) + (record.get("command") or [])
    return " ".join(args)


def cmd_ps(argv: list[str]) -> int:
    args = (
        Command("ps", "List containers.")
        .flag("-a", "--all", help="show all containers, not only running ones")
        .flag("-q", "--quiet", help="only IDs")
        .flag("--no-trunc", help="full IDs and commands")
        .value("--format", default="table", help="table or json")
        .parse(argv)
    )
    _check_format(args.format)
    from .lean import dumps

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
                dumps(
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
                        "Ports": _ports_text(record, status),
                    }
                )
            )
        return 0
    from .units import format_duration

    table = [("CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES")]
    for record, status in rows:
        command = _command_text(record) or "(image default)"
        if not args.no_trunc and len(command) > 20:
            command = command[:19] + "…"
        table.append(
            (
                record["id"] if args.no_trunc else record["id"][:12],
                record["image"],
                '"' + command + '"',
                format_duration(now - record["created"]) + " ago",
                _status_text(status, now),
                _ports_text(record, status),
                record["name"],
            )
        )
    _print_table(table)
    return 0


def _ports_text(record: dict, status: dict) -> str:
    """Published ports as Docker shows them (0.0.0.0:8080->80/tcp), while the container runs."""
    if status["status"] not in ("running", "paused"):
        return ""
    return ", ".join(
        f"{p['host_ip']}:{p['host_port']}->{p['container_port']}/{p['protocol']}"
        for p in record.get("ports") or []
    )


def _check_format(value: str) -> None:
    if value not in ("table", "json"):
        raise InvalidValue("format", value, "table or json")


def _print_table(rows: list[tuple]) -> None:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("   ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


def cmd_inspect(argv: list[str]) -> int:
    args = Command("inspect", "Show containers' or images' configuration and state as JSON.")
    args = args.positional("targets", "+").parse(argv)
    import json

    engine = _engine()
    results = []
    for ref in args.targets:
        try:
            results.append(engine.inspect(ref))
        except (NotFound, InvalidValue):  # not a container's name or ID: an image's reference
            from .image_commands import image_document

            results.append(image_document(engine, engine.images.get(ref)))
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

    args = (
        Command("stats", "Show containers' resource use, read from their cgroups.")
        .flag("--no-stream", help="print one sample and exit")
        .value("--format", default="table", help="table or json")
        .positional("containers", "*")
        .parse(argv)
    )
    _check_format(args.format)
    from .lean import dumps

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
                print(dumps(item))
        else:
            if not args.no_stream:
                print("\x1b[2J\x1b[H", end="")
            _print_table(rows)
        sys.stdout.flush()
        if args.no_stream:
            return 0


def cmd_update(argv: list[str]) -> int:
    args = (
        Command("update", "Change the resource limits of containers, running ones in place.")
        .value("-m", "--memory", help="memory limit (64m, 1g)")
        .value("--memory-swap", help="memory plus swap limit")
        .value("--cpus", help="CPU quota in CPUs")
        .value("-c", "--cpu-shares", help="relative CPU weight")
        .value("--cpuset-cpus", help="CPUs allowed")
        .value("--cpuset-mems", help="memory nodes allowed")
        .value("--pids-limit", help="maximum number of processes")
        .positional("containers", "+")
        .parse(argv)
    )
    engine = _engine()
    changes = {
        k: getattr(args, k)
        for k in ("memory", "memory_swap", "cpus", "cpu_shares", "cpuset_cpus", "cpuset_mems", "pids_limit")
    }
    return _each(args.containers, lambda ref: engine.update(ref, **changes))


def cmd_version(argv: list[str]) -> int:
    from . import __version__

    print(f"hako {__version__}")
    return 0


def cmd_supervisor(argv: list[str]) -> int:
    """Run the supervisor in the foreground (it normally starts itself when needed)."""
    from . import supervisor

    return supervisor.serve(_engine())
