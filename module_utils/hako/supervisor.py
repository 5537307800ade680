"""One supervisor per host: the parent of every container.

A container needs a parent that outlives the command that started it: to
reap it, record its exit code, release its cgroup, honour ``--rm`` and
restart policies, and drain its terminal. Docker and Podman keep one
resident process per container for that (Podman's conmon costs about
0.5 MiB each); a Python process costs about 3 MiB, so hako keeps one for all
of them. It is started on demand by the first command that needs it, serves
requests on ``$HAKO_RUN/supervisor.sock`` and exits once it has nothing left
to supervise.

Being resident also makes it the fast way to start a container: it has the
runtime loaded, and it keeps one *spare* ready — a process already moved
into the cgroup of the next new container (on cgroup v1 that move waits for
an RCU grace period, the slowest step of a start), in its namespaces, with
its /proc, /dev and /sys mounted. A run hands it its job (see "The spare"
below). The client side of the protocol is client.py.

Output: a detached container writes straight to its log file. A container
started by a waiting client (``hako run`` in the foreground, ``hako start
-a``) writes to pipes, or to its terminal, whose reading ends the client
receives and relays, copying to the log; if the client goes away, the
supervisor drains them into the log itself. ``hako attach`` receives a
running container's terminal the same way.

The protocol: SOCK_SEQPACKET, one JSON message per packet, descriptors
alongside. Requests: ``run`` {options, attach, interactive}, ``start`` {id,
attach, interactive}, ``attach`` {id}. Replies: ``{"ok": true, ...}`` or
``{"error": ..., "code": n}``; an attached client later receives ``{"exit":
code}``.
"""

from __future__ import annotations

import _signal as signal  # the C module: `signal` imports enum (see lean.py)
import errno
import fcntl
import os
import select
import sys
import time

from . import lean, store
from .client import socket_path
from .errors import HakoError

IDLE_EXIT_SECONDS = 1.0
# Pending releases (see _release_all) run after this many quiet milliseconds.
QUIET_MS = 3
# Exits whose cgroup and files are removed later, when quiet, at most.
MAX_PENDING_RELEASES = 16
# A spare is kept ready while the supervisor is busy or was within this many seconds.
SPARE_WINDOW = 0.5
RESTART_BACKOFF = 0.5


def main() -> None:
    """The supervisor process's entry point (client._spawn starts it)."""
    from .engine import Engine

    sys.exit(serve(Engine()))


# Server side ----------------------------------------------------------------


class _Child:
    """A container the supervisor is the parent of."""

    def __init__(self, cid: str, pid: int, log_fd: int) -> None:
        self.cid = cid
        self.pid = pid
        self.log_fd = log_fd
        self.console: int | None = None
        self.outputs: list[int] = []  # pipes a client relays; drained here when it is gone
        self.stdin_w: int | None = None
        self.attached = None  # the connection of an attached client

    def readable(self) -> list[int]:
        return ([self.console] if self.console is not None else []) + self.outputs

    def close(self) -> None:
        for fd in [*self.readable(), self.stdin_w, self.log_fd]:
            if fd is not None:
                _close_quietly(fd)


class Supervisor:
    def __init__(self, engine) -> None:
        self.engine = engine
        self.children: dict[int, _Child] = {}
        self.poller = select.poll()
        self.listener = None
        self.fd_handlers: dict[int, object] = {}
        self.clients: set = set()
        self.restarts: list[tuple[float, str]] = []
        self.spare = None
        self.spare_failures = 0
        self.spare_retry_at = 0.0
        # (cid, trash) whose cgroup and files go when the supervisor is quiet
        self.releases: list[tuple[str, str | None]] = []
        self.stopping = False

    # Setup -------------------------------------------------------------------
    def bind(self) -> bool:
        """Take the supervisor lock and the socket; False if another supervisor has them."""
        run_dir = self.engine.run
        os.makedirs(run_dir, exist_ok=True)
        self.lock_fd = os.open(
            os.path.join(run_dir, "supervisor.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        # A supervisor on its way out holds the lock until it has cleaned up:
        # wait for it a while; a healthy one keeps it, and this one leaves.
        deadline = time.monotonic() + 5
        while True:
            try:
                fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.01)
        path = socket_path(run_dir)
        _unlink_quietly(path)
        self.listener = lean.unix_socket()
        self.listener.bind(path)
        os.chmod(path, 0o600)
        self.listener.listen(64)
        with open(os.path.join(run_dir, "supervisor.pid"), "w") as f:
            f.write(f"{os.getpid()}\n")
        self._watch(self.listener.fileno(), self._accept)
        self._remove_leftovers()
        return True

    def _watch(self, fd: int, handler) -> None:
        self.fd_handlers[fd] = handler
        self.poller.register(fd, select.POLLIN)

    def _unwatch(self, fd: int) -> None:
        if self.fd_handlers.pop(fd, None) is not None:
            self.poller.unregister(fd)

    # Main loop ---------------------------------------------------------------
    def run(self) -> int:
        from . import linux

        linux.set_child_subreaper()
        linux.set_process_name("hako-supervisor")
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        self._watch(wake_r, lambda fd: os.read(fd, 4096))
        idle_since = time.monotonic()
        try:
            while not self.stopping:
                busy = bool(self.children or self.restarts or self.clients)
                try:
                    events = self.poller.poll(QUIET_MS if self.releases else 200 if self.restarts else 500)
                except InterruptedError:
                    continue
                for fd, _event in events:
                    handler = self.fd_handlers.get(fd)
                    if handler is not None:
                        _safely(handler, fd)
                _safely(self._reap)
                _safely(self._due_restarts)
                # (Decided after this round's requests: one may just have used the spare.)
                recent = busy or time.monotonic() - idle_since < SPARE_WINDOW
                if self.spare is None and recent and time.monotonic() >= self.spare_retry_at:
                    # Make the next spare as soon as this one is used: its
                    # move into a cgroup waits out a grace period in the
                    # spare's own process, while this one goes on serving.
                    _safely(self._prepare_spare)
                elif not events and self.releases:
                    # Removing cgroups waits for the cgroup lock that such a
                    # move holds: only when nothing else waits.
                    _safely(self._release_all)
                # A client accepted in this round has not been answered yet:
                # exiting now would close its connection unanswered.
                if busy or self.clients:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > IDLE_EXIT_SECONDS:
                    break
            return 0
        finally:
            # Stop being reachable first, then turn away whoever got in
            # meanwhile (they retry with the next supervisor), then clean up.
            for path in (socket_path(self.engine.run), os.path.join(self.engine.run, "supervisor.pid")):
                _unlink_quietly(path)
            self._turn_away_pending()
            _safely(self._release_all)
            _safely(self._discard_spare)

    def _turn_away_pending(self) -> None:
        """Answer "retry" to connections that came in while deciding to exit: nothing was done."""
        self.listener.setblocking(False)
        while True:
            try:
                conn = lean.accept(self.listener)
            except (BlockingIOError, InterruptedError):
                break
            self._reply(conn, {"retry": True})
            conn.close()
        self.listener.close()

    def _accept(self, _fd: int) -> None:
        conn = lean.accept(self.listener)
        self.clients.add(conn)
        self._watch(conn.fileno(), lambda fd, conn=conn: self._serve(conn))

    def _serve(self, conn) -> None:
        try:
            data, fds = lean.recv_fds(conn)
        except OSError:
            data, fds = b"", []
        if not data:
            self._drop(conn)
            return
        keep_open = False
        try:
            message = lean.loads(data)
            op = message.get("op")
            if op == "run":
                keep_open = self._run(conn, message, fds)
            elif op == "start":
                keep_open = self._start(conn, message["id"], message, fds)
            elif op == "attach":
                keep_open = self._attach(conn, message["id"])
            else:
                self._reply(conn, {"error": f"unknown request {op!r}"})
        except HakoError as e:
            self._reply(conn, {"error": str(e), "code": e.exit_code})
        except Exception as e:  # noqa: BLE001 - a request must never take the supervisor down
            self._reply(conn, {"error": f"supervisor: {type(e).__name__}: {e}"})
        finally:
            for fd in fds:
                _close_quietly(fd)
        if not keep_open:
            self._drop(conn)

    @staticmethod
    def _reply(conn, message: dict, fds=()) -> None:
        try:
            lean.send_fds(conn, lean.dumps(message).encode(), fds)
        except OSError:
            pass

    def _drop(self, conn) -> None:
        self._unwatch(conn.fileno())
        self.clients.discard(conn)
        for child in self.children.values():
            if child.attached is conn:
                child.attached = None
                for fd in child.readable():
                    if fd not in self.fd_handlers:
                        self._watch(fd, self._drain)
        conn.close()

    # Requests ------------------------------------------------------------------
    def _run(self, conn, message: dict, fds: list[int]) -> bool:
        from .options import ContainerOptions, validate

        options = message["options"]
        options = ContainerOptions(options.pop("image"), **options)
        spare = self._take_spare(validate(options))
        try:
            record = self.engine.create(options, cid=self._spare_id(spare) if spare is not None else None)
        except BaseException:
            if spare is not None:
                self.spare = spare  # bad input: keep it for the next run
            raise
        try:
            return self._start(conn, record["id"], message, fds, spare=spare)
        except BaseException:
            try:
                self.engine.remove(record["id"], force=True)
            except HakoError:
                pass
            raise

    def _start(self, conn, cid: str, message: dict, fds: list[int], spare=None) -> bool:
        """Start a container; with ``attach``, hand its output to the client and keep the connection."""
        cid = self.engine.resolve(cid)
        attach = bool(message.get("attach"))
        if spare is None:
            spare = self._take_spare(self.engine.load(cid), for_id=cid)
        child = self._launch(cid, attach, message.get("interactive"), spare)
        if child is None:
            self._reply(conn, {"ok": True, "id": cid, "already": True})
            return False
        if not attach:
            self._reply(conn, {"ok": True, "id": cid, "pid": child.pid})
            return False
        child.attached = conn
        reply = {"ok": True, "id": cid, "pid": child.pid, "tty": child.console is not None}
        stdin = [child.stdin_w] if child.stdin_w is not None and child.console is None else []
        self._reply(conn, reply, [*child.readable(), child.log_fd, *stdin])
        return True

    def _launch(self, cid: str, attach: bool, interactive: bool, spare=None) -> _Child | None:
        from .runtime.process import Stdio

        engine = self.engine
        record = engine.load(cid)
        log_fd = os.open(engine.log_path(cid), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        mine: list[int] = [log_fd]  # everything to close if the start fails
        theirs: list[int] = []  # the container's ends, closed here once it has them
        outputs: list[int] = []
        stdin_w = None
        try:
            if record["tty"]:
                stdio = Stdio(terminal=True)
            else:
                stdin_r = None
                if interactive or record["interactive"]:
                    stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC)
                    mine.append(stdin_w)
                    theirs.append(stdin_r)
                if attach:
                    out_r, out_w = os.pipe2(os.O_CLOEXEC)
                    err_r, err_w = os.pipe2(os.O_CLOEXEC)
                    outputs = [out_r, err_r]
                    mine += outputs
                    theirs += [out_w, err_w]
                    stdio = Stdio(stdin=stdin_r, stdout=out_w, stderr=err_w)
                else:
                    stdio = Stdio(stdin=stdin_r, stdout=log_fd, stderr=log_fd)
            spawned = engine.start(cid, stdio, spare=spare)
        except BaseException:
            for fd in mine + theirs:
                _close_quietly(fd)
            if spare is not None:
                spare.discard()
            raise
        for fd in theirs:
            os.close(fd)
        if spawned is None:
            for fd in mine:
                os.close(fd)
            return None
        child = _Child(cid, spawned.pid, log_fd)
        child.console = spawned.console
        child.outputs = outputs
        child.stdin_w = stdin_w
        self.children[spawned.pid] = child
        if not attach:
            for fd in child.readable():
                self._watch(fd, self._drain)
        return child

    def _attach(self, conn, cid: str) -> bool:
        cid = self.engine.resolve(cid)
        child = next((c for c in self.children.values() if c.cid == cid), None)
        if child is None:
            raise HakoError("You cannot attach to a stopped container, start it first")
        if child.attached is not None:
            raise HakoError("another client is attached to this container")
        child.attached = conn
        if child.console is not None:
            # The client relays the terminal now; output pipes, if any, stay
            # drained here into the log, which a non-terminal attach follows.
            self._unwatch(child.console)
        reply = {
            "ok": True,
            "tty": child.console is not None,
            "pid": child.pid,
            "log": self.engine.log_path(cid),
        }
        if child.console is not None:
            self._reply(conn, reply, [child.console, child.log_fd])
        else:
            self._reply(conn, reply, [child.stdin_w] if child.stdin_w is not None else [])
        return True

    # Output ----------------------------------------------------------------------
    def _drain(self, fd: int) -> None:
        child = next((c for c in self.children.values() if fd in c.readable()), None)
        try:
            data = os.read(fd, 65536)
        except OSError as e:
            if e.errno == errno.EAGAIN:
                return
            data = b""
        if not data or child is None:
            self._unwatch(fd)
            return
        try:
            os.write(child.log_fd, data)
        except OSError:
            pass

    # Exits -------------------------------------------------------------------------
    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is not None:
                self._finish(child, status)

    def _finish(self, child: _Child, status: int) -> None:
        from .linux import exit_code

        for fd in child.readable():
            self._unwatch(fd)
            if child.attached is None:
                _drain_all(fd, child.log_fd)
        # Report the exit first; removing cgroups and files can wait a moment.
        state = self.engine.finish(child.cid, status, defer_release=True)
        code = exit_code(status)
        if child.attached is not None:
            self._reply(child.attached, {"exit": code})
        child.close()
        self.releases.append((child.cid, (state or {}).get("trash")))
        if len(self.releases) > MAX_PENDING_RELEASES:
            self._release_all()
        if state is None or state.get("stopping") or state.get("record") is None:
            return
        if state["record"].get("manual_stop"):
            return
        policy, _, limit = state["record"].get("restart_policy", "no").partition(":")
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
                record = self.engine.load(cid)
                if record.get("manual_stop"):
                    continue  # stopped by someone during the back-off
                self._launch(cid, False, False, self._take_spare(record, for_id=cid))
                self.engine.count_restart(cid)
            except HakoError as e:
                print(f"restart of {cid[:12]} failed: {e}", flush=True)

    def _release_all(self) -> None:
        releases, self.releases = self.releases, []
        for cid, trash in releases:
            try:
                self.engine.release(cid, trash)
            except (OSError, HakoError) as e:
                print(f"release of {cid[:12]} failed: {e}", flush=True)

    # The spare ---------------------------------------------------------------------
    # The spare's cgroup is named after the ID the next new container will
    # get, so a run needs no rename (cgroup v2 cannot rename at all, and on v1
    # a rename waits for the cgroup lock a migration may hold). It has also
    # made the default namespaces and the init already. Its ID is noted in
    # $HAKO_ROOT/spares (which a reboot keeps, as it may keep cgroups when the
    # run directory is cleared by hand), so that a later supervisor removes
    # exactly what a dead one left.

    def _spares_dir(self) -> str:
        return os.path.join(self.engine.root, "spares")

    def _prepare_spare(self) -> None:
        """Make the next start's processes, namespaces and cgroup now, while nobody waits."""
        from .cgroups import open_cgroup
        from .runtime.process import DEFAULT_FLAGS, fork_middle

        cid = os.urandom(32).hex()
        note = os.path.join(self._spares_dir(), cid)
        cgroup = open_cgroup(f"{self.engine.cgroup_parent}/{cid}", self.engine.cgroup_mode())
        try:
            os.makedirs(self._spares_dir(), exist_ok=True)
            open(note, "w").close()
            cgroup.create()
            staging = os.path.join(self.engine.run, "staging")
            os.makedirs(staging, exist_ok=True)
            stage = {"staging": staging, "plan": self.engine.default_mount_plan()}
            self.spare = fork_middle(cgroup, prepare=DEFAULT_FLAGS, stage=stage)
            self.spare_failures = 0
        except (OSError, HakoError) as e:
            # Try again later, backing off: a host that cannot make one now
            # (a pids limit, say) should not keep the supervisor busy.
            self.spare_failures += 1
            self.spare_retry_at = time.monotonic() + min(5.0, 0.05 * 2**self.spare_failures)
            if self.spare_failures == 1:
                print(f"could not prepare a spare: {e}", flush=True)
            _safely(cgroup.remove)
            _unlink_quietly(note)

    @staticmethod
    def _spare_id(spare) -> str:
        return spare.cgroup.name.rsplit("/", 1)[1]

    def _take_spare(self, record: dict, for_id: str | None = None):
        """The spare, if it can start this container (a validated record).

        It fits a new container with the default namespaces, or, by a rename
        of its cgroup (v1), the existing container ``for_id``.
        """
        spare = self.spare
        if spare is None:
            return None
        try:
            spare.wait_placed()
            alive = spare.pid is not None and os.path.exists(f"/proc/{spare.pid}")
        except HakoError:
            alive = False
        if not alive:
            self._discard_spare()
            return None
        private = all(mode == "private" for mode in record["namespaces"].values())
        if spare.prepared and not (private and not record.get("userns")):
            return None
        if for_id is not None and for_id != self._spare_id(spare) and not spare.cgroup.can_rename:
            return None
        self.spare = None
        _unlink_quietly(os.path.join(self._spares_dir(), self._spare_id(spare)))
        return spare

    def _discard_spare(self) -> None:
        spare, self.spare = self.spare, None
        if spare is not None:
            _unlink_quietly(os.path.join(self._spares_dir(), self._spare_id(spare)))
            spare.discard()

    def _remove_leftovers(self) -> None:
        """What a supervisor that died left: its spare's cgroup, --rm files it had not removed."""
        from .cgroups import open_cgroup
        from .engine import TRASH_PREFIX

        mode = self.engine.cgroup_mode()
        try:
            spares = os.listdir(self._spares_dir())
        except FileNotFoundError:
            spares = []
        for cid in spares:
            if cid not in self.engine.ids():
                _safely(open_cgroup(f"{self.engine.cgroup_parent}/{cid}", mode).remove)
            _unlink_quietly(os.path.join(self._spares_dir(), cid))
        try:
            names = os.listdir(self.engine.containers_dir)
        except FileNotFoundError:
            names = []
        for name in names:
            if name.startswith(TRASH_PREFIX):
                _safely(store.remove_tree, os.path.join(self.engine.containers_dir, name))


def _safely(function, *args) -> None:
    """Run one step of the main loop; a failure is logged, never fatal to every container."""
    try:
        function(*args)
    except Exception:  # noqa: BLE001 - the supervisor must outlive any one bug
        import traceback

        traceback.print_exc()
        sys.stderr.flush()


def _drain_all(fd: int, log_fd: int) -> None:
    try:
        os.set_blocking(fd, False)
        while data := os.read(fd, 65536):
            os.write(log_fd, data)
    except OSError:
        pass


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
