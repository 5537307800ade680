"""The client side of the supervisor's protocol: what `hako run`, `start` and `attach` use.

Kept apart from the supervisor itself (supervisor.py) so that a command
imports only this: no engine, no runtime, nothing the server needs.
"""

from __future__ import annotations

import os
import select
import sys
import time

from . import lean, store
from .errors import HakoError

# The directory the supervisor imports the hako package from. None: the one
# holding this package. A caller whose copy of the package will vanish (an
# Ansible module runs from a payload archive deleted when it returns) points
# it at a lasting copy before the first request.
PACKAGE_PARENT: str | None = None


def socket_path(run_dir: str) -> str:
    return os.path.join(run_dir, "supervisor.sock")


def _connect(run_dir: str):
    sock = lean.unix_socket()
    try:
        sock.connect(socket_path(run_dir))
        return sock
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        return None
    except OSError as e:
        sock.close()
        where = socket_path(run_dir)
        raise HakoError(f"cannot reach the supervisor at {where} (HAKO_RUN): {e.strerror}") from None


def connect(run_dir: str | None = None):
    """A connection to the supervisor, starting one if none is running."""
    run_dir = run_dir or store.run_dir()
    deadline = time.monotonic() + 10
    spawned_at = 0.0
    while True:
        sock = _connect(run_dir)
        if sock is not None:
            return sock
        now = time.monotonic()
        if now > deadline:
            log = os.path.join(run_dir, "supervisor.log")
            raise HakoError(f"the hako supervisor did not start (see {log})")
        # A supervisor on its way out may still hold the lock: try again.
        if now - spawned_at > 0.5:
            _spawn(run_dir)
            spawned_at = now
        time.sleep(0.005)


def _spawn(run_dir: str) -> None:
    """Start a supervisor in a fully detached grandchild of this process."""
    os.makedirs(run_dir, exist_ok=True)
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        return
    code = 1
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        null = os.open("/dev/null", os.O_RDWR)
        log = os.open(os.path.join(run_dir, "supervisor.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.closerange(3, 65536)
        os.chdir("/")
        os.umask(0o022)
        # A fresh interpreter: nothing of the client's (its command line, its
        # signal handlers, its environment but hako's own settings) carries over.
        env = {k: v for k, v in os.environ.items() if k.startswith("HAKO_") or k in ("PATH", "LANG")}
        package_parent = PACKAGE_PARENT or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        code_line = (
            f"import sys; sys.path.insert(0, {package_parent!r}); from hako.supervisor import main; main()"
        )
        os.execve(sys.executable, [sys.executable, "-IS", "-c", code_line], env)
    except BaseException:  # noqa: BLE001 - a forked child must never return to the caller
        import traceback

        traceback.print_exc()
    os._exit(code)


class SupervisorGone(HakoError):
    """The supervisor turned the request away untouched (it was exiting): ask the next one."""


def exchange(sock, message: dict, fds=()) -> tuple[dict, list[int]]:
    """Send one request; its reply and the descriptors with it. An error reply raises."""
    try:
        try:
            lean.send_fds(sock, lean.dumps(message).encode(), fds)
        except (ConnectionResetError, BrokenPipeError):
            # A supervisor on its way out may have answered "retry" and
            # closed before the request went: the answer is still there.
            pass
        reply, got = lean.recv_fds(sock)
    except (ConnectionResetError, BrokenPipeError):
        reply, got = b"", []
    except OSError as e:
        raise HakoError(f"the hako supervisor failed: {e.strerror} (see {_log_hint()})") from None
    if not reply:
        raise HakoError(f"the hako supervisor closed the connection (see {_log_hint()})")
    answer = lean.loads(reply)
    if answer.get("retry"):
        raise SupervisorGone("the hako supervisor was exiting")
    if "error" in answer:
        for fd in got:
            os.close(fd)
        error = HakoError(answer["error"])
        error.exit_code = answer.get("code", 125)
        raise error
    return answer, got


def _log_hint() -> str:
    return os.path.join(store.run_dir(), "supervisor.log")


def connect_and_exchange(message: dict, fds=()):
    """Connect and send a request; once more if the supervisor was on its way out.

    A supervisor that has decided to exit answers the connections it has not
    taken yet with "retry", having done nothing; a new one serves the retry.
    """
    for attempt in (1, 2):
        sock = connect()
        try:
            answer, got = exchange(sock, message, fds)
            return sock, answer, got
        except SupervisorGone:
            sock.close()
            if attempt == 2:
                raise
        except BaseException:
            sock.close()
            raise
    raise AssertionError("unreachable")


def request(message: dict, fds: tuple[int, ...] = ()) -> dict:
    """One request, one reply, connection closed."""
    sock, answer, got = connect_and_exchange(message, fds)
    sock.close()
    for fd in got:
        os.close(fd)
    return answer


def wait_exit(sock) -> int | None:
    """The exit code the supervisor reports to an attached client; None if it went away."""
    try:
        data, fds = lean.recv_fds(sock)
    except OSError:
        return None
    for fd in fds:
        os.close(fd)
    if not data:
        return None
    return lean.loads(data).get("exit")


def run_attached(message: dict, interactive: bool) -> int:
    """`hako run` / `hako start -a`: start, relay the container's I/O here, return its exit code."""
    from .console import DETACH_KEYS, Relay, raw_terminal

    sock, answer, fds = connect_and_exchange(message)
    try:
        if answer.get("tty"):
            console, log_fd = fds
            relay = Relay(
                None,
                console=console,
                log_fd=log_fd,
                stdin_fd=0 if interactive else None,
                detach_keys=DETACH_KEYS if interactive else None,
                exit_fd=sock.fileno(),
            )
            with raw_terminal(0, enabled=interactive):
                status = relay.run()
        else:
            # The container never gets our terminal: its stdin is a pipe we feed.
            out_r, err_r, log_fd, *stdin_w = fds
            fds = [out_r, err_r, log_fd]  # the relay closes stdin_w at the end of our input
            relay = Relay(
                None,
                outputs={out_r: 1, err_r: 2},
                log_fd=log_fd,
                stdin_fd=0 if stdin_w else None,
                input_target=stdin_w[0] if stdin_w else None,
                signal_pid=answer["pid"],
                exit_fd=sock.fileno(),
            )
            status = relay.run()
            if relay.input_target is not None:
                os.close(relay.input_target)
        for fd in fds:
            os.close(fd)
        if status is None:
            return 0  # detached with ctrl-p ctrl-q: it goes on running
        return _reported_code(wait_exit(sock))
    finally:
        sock.close()


def attach(cid: str, with_stdin: bool = True) -> int:
    """`hako attach`: relay this terminal to a running container until it ends or we detach."""
    from .console import DETACH_KEYS, Relay, raw_terminal

    sock, answer, fds = connect_and_exchange({"op": "attach", "id": cid})
    try:
        try:
            if answer["tty"]:
                relay = Relay(
                    None,
                    console=fds[0],
                    log_fd=fds[1],
                    stdin_fd=0 if with_stdin else None,
                    detach_keys=DETACH_KEYS,
                    exit_fd=sock.fileno(),
                )
                with raw_terminal(0, enabled=with_stdin):
                    result = relay.run()
            else:
                with open(answer["log"], "rb") as log:
                    log.seek(0, os.SEEK_END)
                    stdin_target = fds[0] if fds and with_stdin else None
                    result = _follow_log(log, sock.fileno(), stdin_target)
        finally:
            for fd in fds:
                _close_quietly(fd)
        if result is None:
            print("\r\nread escape sequence", flush=True)
            return 0
        return _reported_code(wait_exit(sock))
    finally:
        sock.close()


def _reported_code(code: int | None) -> int:
    """The exit code to return; an unknown one (the supervisor went away) is an error."""
    if code is None or code < 0:
        print("hako: the container's exit code is unknown (the supervisor went away)", file=sys.stderr)
        return 125
    return code


def _follow_log(log, exit_fd: int, stdin_target: int | None) -> int | None:
    """Non-terminal attach: new log output to stdout, our stdin to the container's."""
    import sys

    out = sys.stdout.buffer
    watch = [exit_fd] + ([0] if stdin_target is not None else [])
    while True:
        chunk = log.read()
        if chunk:
            out.write(chunk)
            out.flush()
        ready, _, _ = select.select(watch, [], [], 0.1)
        if exit_fd in ready:
            out.write(log.read())
            out.flush()
            return 0
        if 0 in ready:
            data = os.read(0, 4096)
            if not data:
                os.close(stdin_target)
                watch.remove(0)
                stdin_target = None
            else:
                os.write(stdin_target, data)


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
