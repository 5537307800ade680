"""One supervisor per host for every detached container.

Detached containers need a parent that outlives the command that started
them: to reap them, record their exit codes, release their cgroups, honour
``--rm`` and restart policies, and drain their terminals. Docker and Podman
keep one resident process per container for that (Podman's conmon costs
about 0.5 MiB each); a Python process costs about 3 MiB, so hako keeps one
for all of them. It is started on demand by the first ``hako run -d`` or
``hako start``, serves requests on ``$HAKO_RUN/supervisor.sock`` and exits
once it has nothing left to supervise.

A container's output goes straight to its log file (no copying at all) unless
it has a terminal; then the supervisor copies the terminal to the log while
nobody is attached. ``hako attach`` receives the terminal's master side (or
the write end of the container's stdin) over the socket and relays it itself;
the supervisor stops reading the terminal until that client is gone.

The protocol: SOCK_SEQPACKET, one JSON message per packet, descriptors
alongside. Requests: ``{"op": "start", "id": ...}`` and ``{"op": "attach",
"id": ...}``. Replies: ``{"ok": true, ...}`` or ``{"error": ..., "code": n}``.
"""

from __future__ import annotations

import _signal as signal  # the C module: `signal` imports enum (see lean.py)
import errno
import fcntl
import os
import select
import time

from . import lean, linux
from .errors import HakoError
from .runtime import process as rt

IDLE_EXIT_SECONDS = 1.0
RESTART_BACKOFF = 0.5


def socket_path(engine) -> str:
    return os.path.join(engine.run, "supervisor.sock")


def _connect(engine):
    sock = lean.unix_socket()
    try:
        sock.connect(socket_path(engine))
        return sock
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        return None


def connect(engine):
    """A connection to the supervisor, starting one if none is running."""
    sock = _connect(engine)
    if sock is not None:
        return sock
    _spawn(engine)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        sock = _connect(engine)
        if sock is not None:
            return sock
        time.sleep(0.005)
    raise HakoError(f"the hako supervisor did not start (socket {socket_path(engine)})")


def _spawn(engine) -> None:
    """Fork a supervisor from this process (its modules are already loaded), fully detached."""
    os.makedirs(engine.run, exist_ok=True)
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        return
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        null = os.open("/dev/null", os.O_RDWR)
        log = os.open(
            os.path.join(engine.run, "supervisor.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600
        )
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.closerange(3, 65536)
        os.chdir("/")
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        code = serve(engine)
    except BaseException:  # noqa: BLE001 - a forked child must never return to the caller
        import traceback

        traceback.print_exc()
        code = 1
    os._exit(code)


def request(engine, message: dict, fds: tuple[int, ...] = ()) -> dict:
    sock = connect(engine)
    try:
        return _exchange(sock, message, fds)[0]
    finally:
        sock.close()


def _exchange(sock, message: dict, fds=()) -> tuple[dict, list[int]]:
    try:
        lean.send_fds(sock, lean.dumps(message).encode(), fds)
        reply, got = lean.recv_fds(sock)
    except OSError as e:
        log = os.path.join(os.path.dirname(sock.getpeername()), "supervisor.log")
        raise HakoError(f"the hako supervisor failed: {e.strerror} (see {log})") from None
    if not reply:
        raise HakoError("the hako supervisor closed the connection")
    answer = lean.loads(reply)
    if "error" in answer:
        for fd in got:
            os.close(fd)
        error = HakoError(answer["error"])
        error.exit_code = answer.get("code", 125)
        raise error
    return answer, got


class _Child:
    """A container the supervisor owns."""

    def __init__(self, cid: str, pid: int, console: int | None, stdin_w: int | None, log_fd: int) -> None:
        self.cid = cid
        self.pid = pid
        self.console = console
        self.stdin_w = stdin_w
        self.log_fd = log_fd
        self.attached = None  # the connection of an attached client

    def close(self) -> None:
        for fd in (self.console, self.stdin_w, self.log_fd):
            if fd is not None:
                _close_quietly(fd)
        if self.attached is not None:
            self.attached.close()


class Supervisor:
    def __init__(self, engine) -> None:
        self.engine = engine
        self.children: dict[int, _Child] = {}
        self.poller = select.poll()
        self.listener = None
        self.fd_handlers: dict[int, object] = {}
        self.restarts: list[tuple[float, str]] = []

    # Setup -------------------------------------------------------------------
    def bind(self) -> bool:
        """Take the supervisor lock and the socket; False if another supervisor has them."""
        os.makedirs(self.engine.run, exist_ok=True)
        self.lock_fd = os.open(
            os.path.join(self.engine.run, "supervisor.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        path = socket_path(self.engine)
        _unlink_quietly(path)
        self.listener = lean.unix_socket()
        self.listener.bind(path)
        os.chmod(path, 0o600)
        self.listener.listen(64)
        with open(os.path.join(self.engine.run, "supervisor.pid"), "w") as f:
            f.write(f"{os.getpid()}\n")
        self._watch(self.listener.fileno(), self._accept)
        return True

    def _watch(self, fd: int, handler) -> None:
        self.fd_handlers[fd] = handler
        self.poller.register(fd, select.POLLIN)

    def _unwatch(self, fd: int) -> None:
        if self.fd_handlers.pop(fd, None) is not None:
            self.poller.unregister(fd)

    # Main loop ---------------------------------------------------------------
    def run(self) -> int:
        linux.set_child_subreaper()
        linux.set_process_name("hako-supervisor")
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self._watch(wake_r, lambda fd: (os.read(fd, 4096), self._reap()))
        idle_since = time.monotonic()
        try:
            while True:
                timeout = 200 if self.restarts else 500
                try:
                    events = self.poller.poll(timeout)
                except InterruptedError:
                    continue
                for fd, _event in events:
                    handler = self.fd_handlers.get(fd)
                    if handler is not None:
                        handler(fd)
                self._reap()
                self._due_restarts()
                busy = self.children or self.restarts or len(self.fd_handlers) > 2
                if busy:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > IDLE_EXIT_SECONDS:
                    return 0
        finally:
            for path in (socket_path(self.engine), os.path.join(self.engine.run, "supervisor.pid")):
                _unlink_quietly(path)

    def _accept(self, _fd: int) -> None:
        conn = lean.accept(self.listener)
        self._watch(conn.fileno(), lambda fd, conn=conn: self._serve(conn))

    def _serve(self, conn) -> None:
        try:
            data, fds = lean.recv_fds(conn)
        except OSError:
            data, fds = b"", []
        if not data:
            self._drop(conn)
            return
        try:
            message = lean.loads(data)
            op = message.get("op")
            if op == "start":
                reply = self._start(message["id"])
                conn.send(lean.dumps(reply).encode())
            elif op == "attach":
                self._attach(conn, message["id"])
                return
            else:
                conn.send(lean.dumps({"error": f"unknown request {op!r}"}).encode())
        except HakoError as e:
            conn.send(lean.dumps({"error": str(e), "code": e.exit_code}).encode())
        except Exception as e:  # noqa: BLE001 - a request must never take the supervisor down
            conn.send(lean.dumps({"error": f"supervisor: {type(e).__name__}: {e}"}).encode())
        finally:
            for fd in fds:
                os.close(fd)

    def _drop(self, conn) -> None:
        self._unwatch(conn.fileno())
        for child in self.children.values():
            if child.attached is conn:
                child.attached = None
                if child.console is not None:
                    self._watch(child.console, self._drain)
        conn.close()

    # Containers ----------------------------------------------------------------
    def _start(self, cid: str) -> dict:
        engine = self.engine
        record = engine.load(cid)
        log_fd = os.open(engine.log_path(cid), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        stdin_r = stdin_w = None
        try:
            if record["tty"]:
                stdio = rt.Stdio(terminal=True)
            else:
                if record["interactive"]:
                    stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC)
                stdio = rt.Stdio(stdin=stdin_r, stdout=log_fd, stderr=log_fd)
            spawned = engine.start(cid, stdio)
        except BaseException:
            for fd in (log_fd, stdin_r, stdin_w):
                if fd is not None:
                    os.close(fd)
            raise
        if stdin_r is not None:
            os.close(stdin_r)
        if spawned is None:
            os.close(log_fd)
            if stdin_w is not None:
                os.close(stdin_w)
            return {"ok": True, "already": True}
        child = _Child(cid, spawned.pid, spawned.console, stdin_w, log_fd)
        self.children[spawned.pid] = child
        if child.console is not None:
            os.set_blocking(child.console, False)
            self._watch(child.console, self._drain)
        return {"ok": True, "pid": spawned.pid}

    def _drain(self, fd: int) -> None:
        child = next((c for c in self.children.values() if c.console == fd), None)
        try:
            data = os.read(fd, 65536)
        except OSError as e:
            if e.errno == errno.EAGAIN:
                return
            data = b""
        if not data:
            self._unwatch(fd)
            return
        if child is not None:
            try:
                os.write(child.log_fd, data)
            except OSError:
                pass

    def _attach(self, conn, cid: str) -> None:
        child = next((c for c in self.children.values() if c.cid == cid), None)
        if child is None:
            raise HakoError("container is not running under the supervisor (started in the foreground?)")
        if child.attached is not None:
            raise HakoError("another client is attached to this container")
        child.attached = conn
        reply = lean.dumps({"ok": True, "tty": child.console is not None, "pid": child.pid}).encode()
        if child.console is not None:
            self._unwatch(child.console)
            lean.send_fds(conn, reply, [child.console])
        else:
            lean.send_fds(conn, reply, [child.stdin_w] if child.stdin_w is not None else [])

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue
            if child.console is not None:
                self._unwatch(child.console)
                # Keep what the terminal still holds.
                try:
                    while data := os.read(child.console, 65536):
                        os.write(child.log_fd, data)
                except OSError:
                    pass
            self._finish(child, status)

    def _finish(self, child: _Child, status: int) -> None:
        engine = self.engine
        state = engine.finish(child.cid, status)
        child.close()
        if state is None or state.get("stopping"):
            return
        record = state.get("record")
        if record is None:
            return
        policy, _, limit = record.get("restart_policy", "no").partition(":")
        code = rt.exit_code(status)
        if policy in ("always", "unless-stopped") or (
            policy == "on-failure" and code != 0 and (not limit or state.get("restart_count", 0) < int(limit))
        ):
            self.restarts.append((time.monotonic() + RESTART_BACKOFF, child.cid))

    def _due_restarts(self) -> None:
        now = time.monotonic()
        due = [r for r in self.restarts if r[0] <= now]
        self.restarts = [r for r in self.restarts if r[0] > now]
        for _, cid in due:
            try:
                self._start(cid)
                self.engine.count_restart(cid)
            except HakoError as e:
                print(f"restart of {cid[:12]} failed: {e}", flush=True)


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def serve(engine) -> int:
    supervisor = Supervisor(engine)
    if not supervisor.bind():
        return 0
    return supervisor.run()


def attach(engine, cid: str, with_stdin: bool = True) -> int:
    """`hako attach`: relay this terminal to a supervised container until it ends or we detach."""
    from .console import DETACH_KEYS, Relay, raw_terminal

    state = engine.run_state(cid)
    if state is None:
        raise HakoError("You cannot attach to a stopped container, start it first")
    sock = connect(engine)
    try:
        answer, fds = _exchange(sock, {"op": "attach", "id": cid})
        pidfd = os.pidfd_open(answer["pid"])
        try:
            if answer["tty"]:
                relay = Relay(
                    None,
                    console=fds[0],
                    stdin_fd=0 if with_stdin else None,
                    detach_keys=DETACH_KEYS,
                    forward_signals=False,
                    exit_fd=pidfd,
                    log_fd=os.open(engine.log_path(cid), os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC),
                )
                with raw_terminal(0, enabled=with_stdin):
                    result = relay.run()
                os.close(relay.log_fd)
            else:
                with open(engine.log_path(cid), "rb") as log:
                    log.seek(0, os.SEEK_END)
                    result = _follow_log(log, pidfd, fds[0] if fds and with_stdin else None)
        finally:
            os.close(pidfd)
            for fd in fds:
                _close_quietly(fd)
    finally:
        sock.close()
    if result is None:
        print("\r\nread escape sequence", flush=True)
        return 0
    engine._wait_recorded(cid, 5)
    status = engine.status(engine.load(cid)) if os.path.exists(engine._record_path(cid)) else {"exit_code": 0}
    code = status.get("exit_code")
    return 0 if code in (None, -1) else code


def _follow_log(log, pidfd: int, stdin_target: int | None) -> int | None:
    """Non-terminal attach: new log output to stdout, our stdin to the container's."""
    import sys

    out = sys.stdout.buffer
    watch = [pidfd] + ([0] if stdin_target is not None else [])
    while True:
        chunk = log.read()
        if chunk:
            out.write(chunk)
            out.flush()
        ready, _, _ = select.select(watch, [], [], 0.1)
        if pidfd in ready:
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
