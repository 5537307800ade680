"""A Debian image built with debootstrap from a Debian mirror.

``hako image build debian [--suite S] [--variant V] [--include a,b] [--arch A]
[--mirror URL]`` runs debootstrap into a staging directory of the image store,
cleans the result (package lists, apt caches, logs, the build host's name and
name servers), and stores it as a one-layer image tagged ``debian:<suite>``.

Failing clean
    debootstrap runs in private mount and PID namespaces (``unshare --mount
    --pid --fork --kill-child``), so the /proc and /sys it mounts into the new
    root are never seen by the host and vanish with its last process. hako
    starts it through ``setpriv --pdeathsig KILL``: should hako itself be
    killed, the whole PID namespace dies with it. On an error, Ctrl-C, SIGTERM
    or SIGHUP, hako kills the namespace, waits for it to be gone and removes
    the staging directory: no mount, no half-built tree, no image is left.
    (After a SIGKILL only the staging directory remains; the next build or
    pull removes it, see ImageStore.clean_tmp.)

Caching
    The .deb files debootstrap downloads are kept in
    ``$HAKO_ROOT/cache/debootstrap/<suite>-<arch>`` (the base directory is
    ``--cache-dir`` or ``$HAKO_DEBOOTSTRAP_CACHE``); debootstrap checks each
    against the mirror's checksums before it uses it. A build asked again with
    the same suite, variant, packages, architecture and mirror returns the
    image made before, without network or debootstrap, unless ``--no-cache``.
    The build's key is kept in the image store's own record of the image
    (its meta), which only this builder writes; the image's ``io.hako.build``
    label says the same for people to read, but any image may carry that
    label (an imported, loaded or pulled one), so the cache never trusts it.

Foreign architectures
    debootstrap runs the new system's programs to configure it, so an
    architecture the host cannot run needs the kernel's binfmt_misc with a
    qemu-user-static interpreter registered (fix-binary flag) for it.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import subprocess
import sys
import time

from .. import store
from ..errors import HakoError, InvalidValue
from ..runtime.spec import DEFAULT_PATH
from .store import Image, ImageStore, normalize_reference

DEFAULT_SUITE = "bookworm"
DEFAULT_VARIANT = "minbase"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
BUILD_LABEL = "io.hako.build"  # information only: see find_built
META_KEY = "build"  # the build's key in the image's meta record, which the cache trusts
CACHE_ENV = "HAKO_DEBOOTSTRAP_CACHE"
SCRIPTS = "/usr/share/debootstrap/scripts"

# debootstrap variants hako offers ("default" is debootstrap's own: required and
# important packages). fakechroot needs fakechroot and is not for root.
VARIANTS = ("minbase", "buildd", "default")

# Debian architecture -> (OCI architecture, OCI variant, qemu-user name).
ARCHITECTURES = {
    "amd64": ("amd64", None, "x86_64"),
    "arm64": ("arm64", "v8", "aarch64"),
    "armhf": ("arm", "v7", "arm"),
    "armel": ("arm", "v5", "arm"),
    "i386": ("386", None, "i386"),
    "mips64el": ("mips64le", None, "mips64el"),
    "mipsel": ("mipsle", None, "mipsel"),
    "ppc64el": ("ppc64le", None, "ppc64le"),
    "riscv64": ("riscv64", None, "riscv64"),
    "s390x": ("s390x", None, "s390x"),
    "loong64": ("loong64", None, "loongarch64"),
}
# What a host runs without emulation, by its uname machine.
NATIVE = {"x86_64": ("amd64", "i386"), "aarch64": ("arm64",)}

_SUITE = re.compile(r"[a-z][a-z0-9-]{1,30}\Z")
_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+\Z")
_PROGRESS = re.compile(
    r"I: (Retrieving|Validating|Extracting|Unpacking|Configuring) (\S+?)(?:\.\.\.)?(?: (\S+))?\s*$"
)
_INDEX_FILES = ("InRelease", "Release", "Release.gpg", "Packages")
TAIL_LINES = 25


class Interrupted(KeyboardInterrupt):
    """A signal (SIGINT, SIGTERM, SIGHUP) stopped the build; everything it made is gone."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


# Options ----------------------------------------------------------------------
class BuildOptions:
    __slots__ = ("suite", "variant", "include", "arch", "mirror")

    def __init__(
        self,
        suite: str | None = None,
        variant: str | None = None,
        include: str | list[str] | None = None,
        arch: str | None = None,
        mirror: str | None = None,
    ) -> None:
        self.suite = _check_suite(DEFAULT_SUITE if suite is None else suite)
        self.variant = _check_variant(DEFAULT_VARIANT if variant is None else variant)
        self.include = _check_include(include)
        self.arch = _check_arch(host_architecture() if arch is None else arch)
        self.mirror = _check_mirror(DEFAULT_MIRROR if mirror is None else mirror)

    def key(self) -> str:
        """What makes two builds the same build (kept in the image's meta as "build")."""
        return (
            f"debootstrap suite={self.suite} variant={self.variant} include={','.join(self.include)} "
            f"arch={self.arch} mirror={self.mirror}"
        )

    def command(self) -> str:
        """The build as a hako command line (for the image's history)."""
        words = ["hako image build debian", f"--suite {self.suite}", f"--variant {self.variant}"]
        if self.include:
            words.append(f"--include {','.join(self.include)}")
        words += [f"--arch {self.arch}", f"--mirror {self.mirror}"]
        return " ".join(words)


def _check_suite(suite: str) -> str:
    if not _SUITE.match(suite):
        raise InvalidValue("suite", suite, "a Debian suite is a lower-case name such as bookworm or stable")
    script = os.path.join(SCRIPTS, suite)
    if os.path.exists(script) and os.path.basename(os.path.realpath(script)) != "sid":
        # debootstrap knows it, but not as a Debian release it builds like sid:
        # Ubuntu, Kali or a Debian release older than jessie.
        raise InvalidValue("suite", suite, "not a Debian suite this builder makes: it makes jessie and later")
    return suite


def _check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise InvalidValue("variant", variant, f"one of {', '.join(VARIANTS)}")
    return variant


def _check_include(include: str | list[str] | None) -> list[str]:
    if include is None:
        return []
    text = include if isinstance(include, str) else ",".join(include)
    if text == "":
        return []
    names = [name.strip() for name in text.split(",")]
    for name in names:
        if not name:
            raise InvalidValue("include", text, "an empty package name; write a,b,c")
        if not _PACKAGE.match(name):
            raise InvalidValue(
                "include", name, "not a Debian package name: lower-case letters, digits, +, - and ."
            )
    return sorted(set(names))


def _check_arch(arch: str) -> str:
    if arch not in ARCHITECTURES:
        raise InvalidValue("arch", arch, f"Debian architectures are {', '.join(sorted(ARCHITECTURES))}")
    return arch


def _check_mirror(mirror: str) -> str:
    mirror = mirror.rstrip("/")
    scheme, _, rest = mirror.partition("://")
    if scheme not in ("http", "https", "file") or not rest or any(c.isspace() for c in mirror):
        raise InvalidValue("mirror", mirror, "a URL of a Debian archive: http://, https:// or file://")
    return mirror


def host_architecture() -> str:
    machine = os.uname().machine
    return NATIVE.get(machine, (machine,))[0]


# Checks that look at the host and the mirror ------------------------------------------
def check_can_run(arch: str) -> None:
    """Refuse an architecture whose programs this host cannot run (no binfmt_misc interpreter)."""
    machine = os.uname().machine
    if arch in NATIVE.get(machine, (host_architecture(),)):
        return
    qemu = ARCHITECTURES[arch][2]
    install = (
        "to build it, apt-get install qemu-user-static binfmt-support, "
        f"then update-binfmts --enable qemu-{qemu}"
    )
    host = host_architecture()
    status = _read("/proc/sys/fs/binfmt_misc/status")
    if status is None:
        why = f"this {host} host cannot run {arch} programs: binfmt_misc is not mounted"
        raise InvalidValue("arch", arch, f"{why}; {install}")
    if status.strip() != "enabled":
        raise InvalidValue("arch", arch, f"binfmt_misc is disabled on this host; {install}")
    entry = _read(f"/proc/sys/fs/binfmt_misc/qemu-{qemu}")
    if entry is None or not entry.startswith("enabled"):
        state = "not registered" if entry is None else "disabled"
        why = f"this {host} host cannot run {arch} programs: the qemu-{qemu} interpreter is {state}"
        raise InvalidValue("arch", arch, f"{why}; {install}")
    flags = next(
        (line.split(":", 1)[1].strip() for line in entry.splitlines() if line.startswith("flags:")), ""
    )
    if "F" not in flags:
        raise InvalidValue(
            "arch",
            arch,
            f"the qemu-{qemu} interpreter is registered without the F (fix binary) flag, so it cannot "
            "run inside the new root: use qemu-user-static's registration (update-binfmts)",
        )


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def release_info(options: BuildOptions, timeout: float = 30) -> dict:
    """The suite's Release fields from the mirror; refuses a suite or architecture it lacks."""
    import urllib.error
    import urllib.request

    url = f"{options.mirror}/dists/{options.suite}/Release"
    fields: dict[str, str] = {}
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            for raw in response:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                if not line or line[0].isspace():
                    break  # the checksum lists start here
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except urllib.error.HTTPError as e:
        if e.code == 404:
            why = f"{options.mirror} has no dists/{options.suite}/Release"
            if options.mirror == DEFAULT_MIRROR:
                why += "; releases before bullseye are at http://archive.debian.org/debian (use --mirror)"
            raise InvalidValue("suite", options.suite, why) from None
        raise InvalidValue("mirror", options.mirror, f"{url}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        reason = e.reason.strerror if isinstance(e.reason, OSError) and e.reason.strerror else e.reason
        if isinstance(e.reason, FileNotFoundError):
            raise InvalidValue(
                "suite", options.suite, f"{options.mirror} has no dists/{options.suite}"
            ) from None
        raise InvalidValue("mirror", options.mirror, f"cannot reach it: {reason}") from None
    except (OSError, ValueError) as e:
        raise InvalidValue("mirror", options.mirror, f"cannot read {url}: {e}") from None
    architectures = fields.get("Architectures", "").split()
    if architectures and options.arch not in architectures:
        have = ", ".join(a for a in architectures if a != "all")
        raise InvalidValue("arch", options.arch, f"{options.suite} on {options.mirror} has only {have}")
    components = fields.get("Components", "").split()
    if components and "main" not in components:
        raise InvalidValue("suite", options.suite, f"{options.mirror} has no main component for it")
    return fields


def find_program(name: str, package: str) -> str:
    import shutil

    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        raise HakoError(f"{name} is not installed: apt-get install {package}")
    return path


def cache_dir(options: BuildOptions, base: str | None = None) -> str:
    """Where the .debs of this suite and architecture are kept between builds."""
    base = base or os.environ.get(CACHE_ENV) or os.path.join(store.root_dir(), "cache", "debootstrap")
    return os.path.join(os.path.abspath(base), f"{options.suite}-{options.arch}")


# The cache of built images -------------------------------------------------------------
def find_built(images: ImageStore, key: str) -> Image | None:
    """The newest image this builder built with the same key, if any.

    Only the store's meta record counts, written by this builder alone: a
    config's labels come with whatever image was imported, loaded or pulled.
    """
    found = [image for image in images.list() if images.meta(image.id).get(META_KEY) == key]
    found.sort(key=lambda image: str(image.config.get("created", "")))
    return found[-1] if found else None


# Progress -------------------------------------------------------------------------------
class Progress:
    """debootstrap's ``I:`` lines as one updating status line on a terminal, plain lines elsewhere.

    On a terminal: ``[ 12s] bookworm/amd64: Unpacking 41/91 libc6``. Elsewhere
    each line that is not about one package is printed as debootstrap wrote
    it, and each stretch of per-package lines as one summary (``I: Retrieved
    15, validated 106 packages``).
    """

    # Per-package verbs, and the stretch (phase) each belongs to.
    PHASES = {
        "Retrieving": "download",
        "Validating": "download",
        "Extracting": "extract",
        "Unpacking": "unpack",
        "Configuring": "configure",
    }
    PAST = {
        "Retrieving": "retrieved",
        "Validating": "validated",
        "Extracting": "extracted",
        "Unpacking": "unpacked",
        "Configuring": "configured",
    }

    def __init__(self, title: str, stream=None) -> None:
        self.title = title
        self.stream = stream if stream is not None else sys.stderr
        try:
            self.tty = self.stream.isatty()
        except (AttributeError, ValueError):
            self.tty = False
        self.started = time.monotonic()
        self.total = 0  # packages debootstrap installs: those it validated
        self.phase: str | None = None
        self.counts: dict[str, int] = {}  # per verb, in the current phase
        self.seen: dict[str, int] = {}  # per verb, in all
        self.shown = False

    def feed(self, line: str) -> None:
        match = _PROGRESS.match(line)
        heading = line.rstrip().endswith(("packages...", "system..."))
        if match and match.group(2) not in _INDEX_FILES and not heading:
            verb, package = match.group(1), match.group(2).split(":", 1)[0]
            if self.PHASES[verb] != self.phase:
                self._end_phase()
                self.phase = self.PHASES[verb]
            self.counts[verb] = self.counts.get(verb, 0) + 1
            count = self.seen[verb] = self.seen.get(verb, 0) + 1
            if verb == "Validating":
                self.total = count
            if self.tty:
                done = f"{min(count, self.total)}/{self.total}" if self.phase != "download" else str(count)
                self.status(f"{verb} {done} {package}")
            return
        self._end_phase()
        if not line.startswith(("I: ", "W: ", "E: ")):
            return
        if self.tty and line.startswith("I: "):
            self.status(line[3:].rstrip("."))
        else:
            self._print(line)

    def _end_phase(self) -> None:
        if self.phase is not None and not self.tty:
            done = ", ".join(f"{self.PAST[verb]} {n}" for verb, n in self.counts.items())
            self._print(f"I: {done[0].upper()}{done[1:]} packages")
        self.phase = None
        self.counts = {}

    def status(self, text: str) -> None:
        """Show what is happening now: rewrite the line on a terminal, print it elsewhere."""
        if not self.tty:
            self._print(text)
            return
        import shutil

        width = shutil.get_terminal_size((80, 24)).columns
        elapsed = time.monotonic() - self.started
        line = f"[{elapsed:4.0f}s] {self.title}: {text}"[: max(width - 1, 20)]
        self.stream.write("\r\x1b[K" + line)
        self.stream.flush()
        self.shown = True

    def _print(self, text: str) -> None:
        self.clear()
        self.stream.write(text + "\n")
        self.stream.flush()

    def clear(self) -> None:
        if self.tty and self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False

    def finish(self) -> None:
        self._end_phase()
        self.clear()


# Signals ------------------------------------------------------------------------------
class _Signals:
    """SIGINT, SIGTERM and SIGHUP raise Interrupted once; later ones are ignored until the end.

    So a second Ctrl-C cannot cut the clean-up of the first short.
    """

    SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")

    def __enter__(self) -> _Signals:
        import signal

        self._signal = signal
        self.received: int | None = None
        self._saved = {}
        for name in self.SIGNALS:
            signum = getattr(signal, name)
            self._saved[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, _frame) -> None:
        if self.received is None:
            self.received = signum
            raise Interrupted(signum)

    def __exit__(self, *exc) -> None:
        for signum, handler in self._saved.items():
            self._signal.signal(signum, handler)


# Running debootstrap -------------------------------------------------------------------
def debootstrap_argv(options: BuildOptions, target: str, cache: str) -> list[str]:
    argv = [
        find_program("setpriv", "util-linux"),
        "--pdeathsig",
        "KILL",
        find_program("unshare", "util-linux"),
        "--mount",
        "--propagation",
        "private",
        "--pid",
        "--fork",
        "--kill-child=SIGKILL",
        "--mount-proc",
        find_program("debootstrap", "debootstrap"),
        f"--arch={options.arch}",
        f"--cache-dir={cache}",
    ]
    if options.variant != "default":
        argv.append(f"--variant={options.variant}")
    if options.include:
        argv.append(f"--include={','.join(options.include)}")
    script = os.path.join(SCRIPTS, options.suite)
    if not os.path.exists(script):
        # A Debian release newer than this debootstrap: they all build like sid.
        script = os.path.join(SCRIPTS, "sid")
    return [*argv, options.suite, target, options.mirror, script]


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env.update(LC_ALL="C", LANG="C", DEBIAN_FRONTEND="noninteractive", DEBCONF_NONINTERACTIVE_SEEN="true")
    if "/usr/sbin" not in env.get("PATH", "").split(":"):
        env["PATH"] = DEFAULT_PATH
    return env


def run_debootstrap(argv: list[str], progress: Progress, tail) -> int:
    """Run debootstrap in its own process group, feeding its output to ``progress``.

    Whatever way this ends, debootstrap's namespaces are gone when it returns.
    """
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=_environment(),
    )
    try:
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            tail.append(line)
            progress.feed(line)
        return proc.wait()
    finally:
        end_process_group(proc)


def end_process_group(proc: subprocess.Popen, timeout: float = 20) -> None:
    """Kill a still running debootstrap and wait until none of its processes can hold a mount."""
    import signal

    if proc.poll() is None:
        # PID 1 of the namespace (unshare's child): killing it kills every
        # process in the namespace, then unshare exits.
        for child in _children(proc.pid):
            _kill(child, signal.SIGKILL)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _kill(-proc.pid, signal.SIGKILL)
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
    deadline = time.monotonic() + timeout
    while True:
        alive = _group_members(proc.pid)
        if not alive:
            return
        if time.monotonic() > deadline:
            raise HakoError(f"debootstrap's processes {alive} would not end")
        for pid in alive:
            _kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def _kill(pid: int, signum: int) -> None:
    try:
        if pid < 0:
            os.killpg(-pid, signum)
        else:
            os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _children(pid: int) -> list[int]:
    text = _read(f"/proc/{pid}/task/{pid}/children") or ""
    return [int(p) for p in text.split()]


def _group_members(pgid: int) -> list[int]:
    """Processes of the process group that are not yet zombies (a zombie holds no namespace)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        text = _read(f"/proc/{entry}/stat")
        if not text:
            continue
        fields = text[text.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            members.append(int(entry))
    return members


def _failure(rc: int, tail, target: str, options: BuildOptions, progress: Progress) -> HakoError:
    errors = [line for line in tail if line.startswith("E: ")]
    last = errors[-1][3:].strip() if errors else ""
    missing = re.match(r"Couldn't find these debs: (.+)", last)
    if missing:
        names = ",".join(missing.group(1).split())
        why = f"no such package in {options.suite}/{options.arch} on {options.mirror}"
        return InvalidValue("include", names, why)
    lines = ["--- the last lines of debootstrap's output ---", *tail]
    log = _read(os.path.join(target, "debootstrap", "debootstrap.log"))
    if log:
        log_tail = log.rstrip("\n").splitlines()[-15:]
        if log_tail and not set(log_tail) <= set(tail):
            lines += ["--- the last lines of its debootstrap.log ---", *log_tail]
    progress.clear()
    print("\n".join(lines), file=sys.stderr)
    return HakoError(f"debootstrap failed (exit {rc}): {last}" if last else f"debootstrap failed (exit {rc})")


# Cleaning the new root ---------------------------------------------------------------------
RESOLV_CONF = (
    "# The image names no name server: the build host's would be wrong anywhere else.\n"
    "# Add nameserver lines here, or mount a resolv.conf at run time.\n"
)
POLICY_RC_D = (
    "#!/bin/sh\n# A container runs no init: packages must not start their services on install.\nexit 101\n"
)


# Every path below is taken one component at a time with O_NOFOLLOW: a symbolic
# link in the new root (made by a package, pointing anywhere on the host) is
# removed, or passed over, but never followed.
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_SKIPPED = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)
# What is only the build's: removed, by directory and name pattern.
BUILD_FILES = (
    ("var/lib/apt/lists", "*"),
    ("var/lib/apt/lists/partial", "*"),
    ("var/cache/apt", "*.bin"),
    ("var/cache/apt/archives", "*.deb"),
    ("var/cache/apt/archives/partial", "*"),
    ("var/cache/debconf", "*-old"),
    ("var/lib/dpkg", "*-old"),
    ("var/cache/ldconfig", "aux-cache"),
    ("var/lib/dbus", "machine-id"),
)


def clean_rootfs(fs: str) -> None:
    """Remove what is only the build's, and what belongs to the build host, from a new root."""
    root = os.open(fs, _DIRECTORY)
    try:
        _clean(root)
    finally:
        os.close(root)


def _clean(root: int) -> None:
    import fnmatch

    for mount_point in ("proc", "sys"):
        fd = _open_dir(root, mount_point)
        if fd is None:
            continue
        try:
            if os.listdir(fd):
                raise HakoError(
                    f"the new root's /{mount_point} is not empty: a mount of debootstrap's is still there"
                )
        finally:
            os.close(fd)
    _remove(root, "debootstrap")
    # /dev is made when a container starts; device nodes do not belong in a layer.
    _remove(root, "dev")
    os.mkdir("dev", 0o755, dir_fd=root)
    for directory, pattern in BUILD_FILES:
        fd = _open_dir(root, directory)
        if fd is None:
            continue
        try:
            for name in fnmatch.filter(os.listdir(fd), pattern):
                if name.startswith(".") and not pattern.startswith("."):
                    continue  # as a shell's glob: * is not .*
                mode = _mode(fd, name)
                if mode is not None and not stat.S_ISDIR(mode):
                    os.unlink(name, dir_fd=fd)
        finally:
            os.close(fd)
    for top in ("tmp", "var/tmp"):
        fd = _open_dir(root, top)
        if fd is None:
            continue
        try:
            for name in os.listdir(fd):
                _remove(fd, name)
        finally:
            os.close(fd)
    # Logs keep their files (programs expect wtmp and lastlog) but not their lines.
    fd = _open_dir(root, "var/log")
    if fd is not None:
        _truncate_files(fd)
    etc = _open_dir(root, "etc")
    if etc is not None:
        try:
            mode = _mode(etc, "machine-id")
            if mode is not None and stat.S_ISREG(mode):
                _truncate(etc, "machine-id")
            elif mode is not None and not stat.S_ISDIR(mode):
                os.unlink("machine-id", dir_fd=etc)
        finally:
            os.close(etc)
    _write(root, "etc/hostname", "localhost\n")
    _write(root, "etc/resolv.conf", RESOLV_CONF)
    _write(root, "usr/sbin/policy-rc.d", POLICY_RC_D, 0o755)


def _open_dir(parent: int, relative: str) -> int | None:
    """A directory below ``parent``, no step of the way a symbolic link; None if it is not one."""
    fd = os.dup(parent)
    for part in relative.split("/"):
        try:
            child = os.open(part, _DIRECTORY, dir_fd=fd)
        except OSError as e:
            os.close(fd)
            if e.errno in _SKIPPED:
                return None
            raise
        os.close(fd)
        fd = child
    return fd


def _mode(parent: int, name: str) -> int | None:
    try:
        return os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return None


def _remove(parent: int, name: str) -> None:
    """Remove ``name`` (a tree, a file or a link, never what a link leads to); a missing one is fine."""
    mode = _mode(parent, name)
    if mode is None:
        return
    if not stat.S_ISDIR(mode):
        os.unlink(name, dir_fd=parent)
        return
    fd = os.open(name, _DIRECTORY, dir_fd=parent)
    try:
        for entry in os.listdir(fd):
            _remove(fd, entry)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent)


def _truncate(parent: int, name: str) -> None:
    fd = os.open(name, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=parent)
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def _truncate_files(directory: int) -> None:
    """Empty every regular file below ``directory`` (an fd, closed here); links and others are left."""
    try:
        for name in os.listdir(directory):
            mode = _mode(directory, name)
            if mode is None:
                continue
            if stat.S_ISREG(mode):
                _truncate(directory, name)
            elif stat.S_ISDIR(mode):
                child = _open_dir(directory, name)
                if child is not None:
                    _truncate_files(child)
    finally:
        os.close(directory)


def _write(root: int, relative: str, text: str, mode: int = 0o644) -> None:
    """Make ``relative`` a regular file holding ``text``; nothing if its directory is not one (a link)."""
    directory, _, name = relative.rpartition("/")
    parent = _open_dir(root, directory)
    if parent is None:
        return
    try:
        existing = _mode(parent, name)
        if existing is not None and not stat.S_ISREG(existing):
            _remove(parent, name)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, flags, mode, dir_fd=parent)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            os.fchmod(f.fileno(), mode)
    finally:
        os.close(parent)


# Building ------------------------------------------------------------------------------------
def build(
    images: ImageStore,
    options: BuildOptions,
    tag: str | None = None,
    no_cache: bool = False,
    cache_base: str | None = None,
    stream=None,
) -> Image:
    """Build (or find already built) the Debian image ``options`` describe, and tag it."""
    stream = stream if stream is not None else sys.stderr
    tag = tag or f"debian:{options.suite}"
    try:
        tag = normalize_reference(tag)
    except InvalidValue as e:
        why = re.search(r"\((.*)\)$", str(e))
        raise InvalidValue("tag", tag, why.group(1) if why else "not an image name") from None
    key = options.key()
    if not no_cache:
        built = _reuse(images, key, tag, stream)
        if built is not None:
            return built
    check_can_run(options.arch)
    release = release_info(options)
    argv_probe = find_program("debootstrap", "debootstrap")
    version = subprocess.run([argv_probe, "--version"], capture_output=True, text=True).stdout.strip()
    cache = cache_dir(options, cache_base)
    try:
        os.makedirs(cache, exist_ok=True)
    except OSError as e:
        raise InvalidValue("cache-dir", cache, e.strerror) from None
    title = f"{options.suite}/{options.arch}"
    with _Signals() as signals:
        try:
            with store.locked(os.path.join(cache, ".lock")):
                if not no_cache:
                    # Another build of the same may have finished while this one waited.
                    built = _reuse(images, key, tag, stream)
                    if built is not None:
                        return built
                return _build_locked(images, options, tag, key, cache, release, version, title, stream)
        except Interrupted as e:
            import signal

            name = signal.Signals(signals.received or e.signum).name
            print(f"hako: image build interrupted by {name}: nothing of it was kept", file=stream)
            raise


def _reuse(images: ImageStore, key: str, tag: str, stream) -> Image | None:
    built = find_built(images, key)
    if built is None:
        return None
    images.tag(built.id, tag)
    print(f"{tag}: the same build exists ({built.short_id}); --no-cache builds it again", file=stream)
    return images.get(built.id)


def _build_locked(images, options, tag, key, cache, release, version, title, stream) -> Image:
    from collections import deque

    progress = Progress(title, stream)
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    with images.staging("debootstrap") as staged:
        fs = os.path.join(staged, "fs")
        os.mkdir(fs, 0o755)
        try:
            rc = run_debootstrap(debootstrap_argv(options, fs, cache), progress, tail)
        finally:
            progress.finish()
        if rc != 0:
            raise _failure(rc, tail, fs, options, progress)
        progress.status("cleaning the root filesystem")
        clean_rootfs(fs)
        debian_version = (_read(os.path.join(fs, "etc/debian_version")) or "").strip()
        progress.status("packing the root filesystem into a layer")
        diff_id = images.store_directory(fs)["diff_id"]
        progress.clear()
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    oci_arch, oci_variant, _qemu = ARCHITECTURES[options.arch]
    labels = {
        BUILD_LABEL: key,
        "io.hako.debian.suite": options.suite,
        "io.hako.debian.codename": release.get("Codename", options.suite),
        "io.hako.debian.version": debian_version,
    }
    config = {
        "architecture": oci_arch,
        "os": "linux",
        "created": created,
        "config": {"Env": [f"PATH={DEFAULT_PATH}"], "Cmd": ["bash"], "Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": f"{options.command()} ({version or 'debootstrap'})"}],
    }
    if oci_variant:
        config["variant"] = oci_variant
    return images.add_image(config, tag, {META_KEY: key})
