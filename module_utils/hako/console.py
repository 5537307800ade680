"""Moving bytes between a person's terminal and a container.

``relay`` serves `hako run`, `hako exec` and `hako attach` in the foreground:
the container's terminal (or its output pipes) to our stdout and the log,
our stdin to the container's terminal, signals and window size passed on.
"""

from __future__ import annotations

import _signal as signal  # the C module: `signal` imports enum (see lean.py)
import errno
import fcntl
import os
import select
import termios

# Docker's default detach sequence: ctrl-p ctrl-q.
DETACH_KEYS = b"\x10\x11"
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def copy_window_size(source_fd: int, target_fd: int) -> None:
    try:
        size = fcntl.ioctl(source_fd, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(target_fd, termios.TIOCSWINSZ, size)
    except OSError:
        pass


class raw_terminal:
    """Put our terminal in raw mode for a ``with`` block, if ``fd`` is a terminal."""

    def __init__(self, fd: int, enabled: bool = True) -> None:
        self.fd = fd
        self.saved = None
        self.enabled = enabled and os.isatty(fd)

    def __enter__(self) -> raw_terminal:
        if self.enabled:
            import tty

            self.saved = termios.tcgetattr(self.fd)
            tty.setraw(self.fd, termios.TCSANOW)
        return self

    def __exit__(self, *exc) -> bool:
        if self.saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
        return False


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            written = os.write(fd, data)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        except BrokenPipeError:
            return
        data = data[written:]


class Relay:
    """One foreground session; ``run`` returns the child's wait status, or None on detach."""

    def __init__(
        self,
        pid: int | None,
        console: int | None = None,
        outputs: dict[int, int] | None = None,
        log_fd: int | None = None,
        stdin_fd: int | None = None,
        detach_keys: bytes | None = None,
        forward_signals: bool = True,
        exit_fd: int | None = None,
        input_target: int | None = None,
        signal_pid: int | None = None,
    ) -> None:
        # ``pid`` is our child, reaped here; ``signal_pid`` receives the
        # signals we get (default: ``pid``), for a process that is not ours.
        self.pid = pid
        self.signal_pid = signal_pid if signal_pid is not None else pid
        self.console = console
        self.outputs = dict(outputs or {})
        if console is not None:
            self.outputs[console] = 1
        self.log_fd = log_fd
        self.stdin_fd = stdin_fd
        self.detach_keys = detach_keys
        self.forward_signals = forward_signals
        # An fd that becomes readable when the process ends (a pidfd), for a
        # process that is not our child.
        self.exit_fd = exit_fd
        # Where our stdin goes when there is no terminal (an attached pipe).
        self.input_target = input_target
        self._pending = b""

    def run(self) -> int | None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        old_wakeup = signal.set_wakeup_fd(wake_w)
        handlers = {signal.SIGCHLD: signal.signal(signal.SIGCHLD, lambda *_: None)}
        if self.console is not None:
            handlers[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, lambda *_: None)
            copy_window_size(0, self.console)
        if self.forward_signals and self.signal_pid:
            for sig in _FORWARDED:
                handlers[sig] = signal.signal(sig, lambda *_: None)
        try:
            return self._loop(wake_r)
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            os.close(wake_r)
            os.close(wake_w)

    def _loop(self, wake_r: int) -> int | None:
        status = None
        reading = set(self.outputs)
        while True:
            watch = [wake_r, *reading]
            if self.stdin_fd is not None:
                watch.append(self.stdin_fd)
            if self.exit_fd is not None:
                watch.append(self.exit_fd)
            try:
                ready, _, _ = select.select(watch, [], [], 1.0 if status is None else 0)
            except InterruptedError:
                continue
            if status is not None and not (set(ready) & reading):
                return status
            for fd in ready:
                if fd == wake_r:
                    for sig in os.read(wake_r, 512):
                        self._on_signal(sig)
                elif fd == self.exit_fd:
                    status = 0
                    self.exit_fd = None
                elif fd == self.stdin_fd:
                    if self._forward_input() is False:
                        return None
                else:
                    if not self._copy_output(fd):
                        reading.discard(fd)
            if self.pid and status is None:
                status = self._reap()
            if status is not None and not reading:
                return status
            if not reading and self.pid is None and self.exit_fd is None:
                return status if status is not None else 0

    def _on_signal(self, sig: int) -> None:
        if sig == signal.SIGWINCH and self.console is not None:
            copy_window_size(0, self.console)
        elif sig in _FORWARDED and self.signal_pid:
            try:
                os.kill(self.signal_pid, sig)
            except ProcessLookupError:
                pass

    def _reap(self) -> int | None:
        # As a subreaper we may also inherit orphans from inside the
        # container; reap those too, but return only our process's status.
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return 0
            if pid == 0:
                return None
            if pid == self.pid:
                return status

    def _copy_output(self, fd: int) -> bool:
        try:
            data = os.read(fd, 65536)
        except OSError as e:
            # EIO: the terminal's last slave side closed.
            if e.errno in (errno.EIO, errno.EBADF):
                return False
            if e.errno == errno.EAGAIN:
                return True
            raise
        if not data:
            return False
        _write_all(self.outputs[fd], data)
        if self.log_fd is not None:
            _write_all(self.log_fd, data)
        return True

    def _forward_input(self) -> bool | None:
        try:
            data = os.read(self.stdin_fd, 4096)
        except OSError:
            data = b""
        if not data:
            # End of our input: a terminal gets an EOF character, a pipe is closed.
            if self.console is not None:
                _write_all(self.console, b"\x04")
            elif self.input_target is not None:
                os.close(self.input_target)
                self.input_target = None
            self.stdin_fd = None
            return True
        if self.detach_keys:
            data = self._pending + data
            if self.detach_keys in data:
                before = data.split(self.detach_keys, 1)[0]
                if before:
                    _write_all(self.target_input(), before)
                return False
            keep = 0
            for n in range(len(self.detach_keys) - 1, 0, -1):
                if data.endswith(self.detach_keys[:n]):
                    keep = n
                    break
            self._pending = data[len(data) - keep :] if keep else b""
            data = data[: len(data) - keep] if keep else data
        if data:
            _write_all(self.target_input(), data)
        return True

    def target_input(self) -> int:
        return self.console if self.console is not None else self.input_target
