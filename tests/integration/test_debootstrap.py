"""hako image build debian: a real debootstrap from the Debian mirror, as root.

The image is built once per session (the ``debian_image`` fixture in
conftest.py, which keeps the .debs and the built image under .cache/). The
other tests run debootstrap only as far as they need: to a bad package name,
or into the middle of the build to interrupt it.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from tests.conftest import DEBIAN_INCLUDE, HAKO, debian_build_env, hako, wait_for

pytestmark = pytest.mark.slow

BUILD_TIMEOUT = 1800
# A closed port on loopback: a build that needs the network fails at once.
NO_NETWORK = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "no_proxy": ""}


@pytest.fixture(autouse=True)
def needs_root():
    if os.geteuid() != 0:
        pytest.skip("debootstrap needs root")


def images_dir() -> Path:
    return Path(os.environ["HAKO_ROOT"], "images")


def staging_dirs() -> list[str]:
    tmp = images_dir() / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.is_dir() else []


def image_ids() -> set[str]:
    configs = images_dir() / "configs"
    return {p.name for p in configs.iterdir()} if configs.is_dir() else set()


def tags() -> dict:
    path = images_dir() / "tags.json"
    return json.loads(path.read_text()) if path.exists() else {}


def mounts_anywhere() -> list[str]:
    """Mounts below HAKO_ROOT in any process's mount namespace, not only the host's."""
    root = os.environ["HAKO_ROOT"]
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/mountinfo") as f:
                found.update(line.split()[4] for line in f if root in line)
        except OSError:
            continue
    return sorted(found)


def builder_processes() -> list[str]:
    """Processes that work on HAKO_ROOT (debootstrap, dpkg, ... in a staging directory)."""
    root = os.environ["HAKO_ROOT"].encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            root_link = os.readlink(f"/proc/{entry}/root").encode()
        except OSError:
            continue
        if root in cmdline or root in root_link:
            words = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry}: {words[:120]}")
    return found


def assert_nothing_left(ids_before: set[str], tags_before: dict) -> None:
    assert staging_dirs() == []
    assert image_ids() == ids_before
    assert tags() == tags_before
    assert mounts_anywhere() == []
    assert builder_processes() == []


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The error: the last line, the only one from hako; before it only debootstrap's progress."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 125, result.stderr
    assert lines and lines[-1].startswith("hako: "), result.stderr
    assert all(line.startswith(("I: ", "W: ", "E: ")) for line in lines[:-1]), result.stderr
    return lines[-1]


# The image --------------------------------------------------------------------------
def test_built_image_runs_bash_and_apt(debian_image):
    result = hako("run", "--rm", debian_image, "bash", "-c", "apt --version; cat /etc/debian_version")
    apt, version = result.stdout.strip().splitlines()
    assert apt.startswith("apt ")
    assert re.fullmatch(r"\d+\.\d+", version), version


def test_included_packages_are_installed(debian_image):
    assert "procps" in DEBIAN_INCLUDE and "iproute2" in DEBIAN_INCLUDE
    result = hako("run", "--rm", debian_image, "sh", "-c", "ps -o comm= -p 1; ip -V")
    assert result.stdout.splitlines()[0] == "sh"
    assert "iproute2" in result.stdout


def test_image_is_cleaned_and_described(debian_image):
    script = (
        "ls -A /var/lib/apt/lists | grep -vx partial; ls /var/cache/apt/archives | grep deb$; "
        "find /var/log -type f -size +0 | head -3; cat /etc/hostname; "
        "grep -c '^nameserver' /etc/resolv.conf; "
        "/usr/sbin/policy-rc.d; echo policy=$?"
    )
    result = hako("run", "--rm", debian_image, "sh", "-c", script, check=False)
    assert result.stdout.split() == ["localhost", "0", "policy=101"], result.stdout
    info = json.loads(hako("image", "inspect", debian_image).stdout)[0]
    assert info["config"]["Cmd"] == ["bash"]
    assert any(e.startswith("PATH=") for e in info["config"]["Env"])
    labels = info["config"]["Labels"]
    from hako.images.debootstrap import host_architecture

    arch = host_architecture()
    assert labels["io.hako.build"] == (
        f"debootstrap suite=bookworm variant=minbase include={DEBIAN_INCLUDE} arch={arch} "
        "mirror=http://deb.debian.org/debian"
    )
    assert labels["io.hako.debian.codename"] == "bookworm"
    assert info["history"][0]["created_by"].startswith("hako image build debian --suite bookworm")
    # The layer on disk is the layer in the blob: no device nodes, an empty /dev.
    layer = images_dir() / "layers" / info["rootfs"]["diff_ids"][0].split(":", 1)[1] / "fs"
    assert list((layer / "dev").iterdir()) == []


def test_same_build_again_is_the_same_image_without_network(debian_image):
    before = hako("image", "inspect", debian_image)
    image_id = json.loads(before.stdout)[0]["Id"]
    # The packages in another order are the same build; the network is out of
    # reach, so only the image made before can answer.
    result = hako(
        "image",
        "build",
        "debian",
        "--include",
        ",".join(reversed(DEBIAN_INCLUDE.split(","))),
        "-t",
        "debian:again",
        env=debian_build_env(**NO_NETWORK),
    )
    assert result.stdout.strip() == image_id
    assert "the same build exists" in result.stderr
    assert tags()["debian:again"] == image_id
    assert staging_dirs() == []
    hako("rmi", "debian:again")
    assert tags()[debian_image if ":" in debian_image else debian_image + ":latest"] == image_id


def test_no_cache_builds_again_and_needs_the_mirror(debian_image):
    ids, before = image_ids(), tags()
    result = hako(
        "image",
        "build",
        "debian",
        "--include",
        DEBIAN_INCLUDE,
        "--no-cache",
        "-t",
        "debian:nocache",
        check=False,
        env=debian_build_env(**NO_NETWORK),
    )
    line = one_error_line(result)
    assert line.startswith("hako: invalid value for mirror: 'http://deb.debian.org/debian' (cannot reach it")
    assert_nothing_left(ids, before)


def test_a_build_label_on_an_imported_image_is_not_a_build(tmp_path):
    # Anyone may label an image as a build (hako import -c LABEL, hako load, hako pull):
    # the cache must not hand it out as one.
    from hako.images.debootstrap import BuildOptions

    key = BuildOptions().key()  # what `hako image build debian` builds
    assert key.startswith("debootstrap suite=bookworm variant=minbase include= arch=")
    tarball = tmp_path / "x.tar"
    with tarfile.open(tarball, "w") as tar:
        info = tarfile.TarInfo("evil")
        tar.addfile(info, io.BytesIO(b""))
    evil = hako("import", "-c", f'LABEL io.hako.build="{key}"', str(tarball), "evil:1").stdout.strip()
    try:
        labels = json.loads(hako("image", "inspect", "evil:1").stdout)[0]["config"]["Labels"]
        assert labels["io.hako.build"] == key
        ids, before = image_ids(), tags()
        result = hako("image", "build", "debian", check=False, env=debian_build_env(**NO_NETWORK))
        assert evil not in result.stdout and "the same build exists" not in result.stderr
        # Not in the cache, so built: and the mirror is out of reach.
        line = one_error_line(result)
        assert line.startswith(
            "hako: invalid value for mirror: 'http://deb.debian.org/debian' (cannot reach it"
        )
        assert_nothing_left(ids, before)
    finally:
        hako("rmi", "evil:1")


# Bad values ----------------------------------------------------------------------------
BAD_VALUES = [
    (["--suite", "Bookworm"], "suite", "Bookworm"),
    (["--suite", "bookworm;true"], "suite", "bookworm;true"),
    (["--suite", "jammy"], "suite", "jammy"),
    (["--suite", "nosuchsuite"], "suite", "nosuchsuite"),
    (["--variant", "fakechroot"], "variant", "fakechroot"),
    (["--variant", ""], "variant", ""),
    (["--include", "vim,,procps"], "include", "vim,,procps"),
    (["--include", "Vim"], "include", "Vim"),
    (["--include", "procps,vim --foo"], "include", "vim --foo"),
    (["--include", "procps,no-such-package-hako"], "include", "no-such-package-hako"),
    (["--arch", "amd65"], "arch", "amd65"),
    (["--arch", ""], "arch", ""),
    (["--suite", ""], "suite", ""),
    (["--mirror", ""], "mirror", ""),
    (["--mirror", "ftp://deb.debian.org/debian"], "mirror", "ftp://deb.debian.org/debian"),
    (["-t", "Debian:Bad"], "tag", "Debian:Bad"),
]


@pytest.mark.parametrize(("args", "field", "value"), BAD_VALUES, ids=[" ".join(a) for a, _, _ in BAD_VALUES])
def test_bad_value_is_one_line_and_leaves_nothing(args, field, value):
    ids, before = image_ids(), tags()
    result = hako(
        "image", "build", "debian", *args, check=False, timeout=BUILD_TIMEOUT, env=debian_build_env()
    )
    line = one_error_line(result)
    assert line.startswith(f"hako: invalid value for {field}: {value!r} ("), line
    assert result.stdout == ""
    assert_nothing_left(ids, before)


def _foreign_arch_without_binfmt() -> str | None:
    from hako.images import debootstrap

    native = debootstrap.NATIVE.get(os.uname().machine, ())
    for arch in ("arm64", "amd64", "s390x", "ppc64el", "riscv64", "mips64el"):
        qemu = debootstrap.ARCHITECTURES[arch][2]
        entry = Path(f"/proc/sys/fs/binfmt_misc/qemu-{qemu}")
        if arch not in native and not (entry.exists() and entry.read_text().startswith("enabled")):
            return arch
    return None


def test_foreign_arch_without_binfmt_says_what_to_install():
    arch = _foreign_arch_without_binfmt()
    if arch is None:
        pytest.skip("every foreign architecture tried has a binfmt_misc interpreter here")
    ids, before = image_ids(), tags()
    result = hako("image", "build", "debian", "--arch", arch, check=False, env=debian_build_env())
    line = one_error_line(result)
    assert line.startswith(f"hako: invalid value for arch: '{arch}' (this ")
    assert "apt-get install qemu-user-static binfmt-support" in line
    assert_nothing_left(ids, before)


# Interrupted builds -----------------------------------------------------------------------
def _start_build(tag: str, out) -> subprocess.Popen:
    return subprocess.Popen(
        [*HAKO, "image", "build", "debian", "--include", DEBIAN_INCLUDE, "--no-cache", "-t", tag],
        stdout=out,
        stderr=out,
        env=debian_build_env(),
    )


def _wait_for_mount(proc: subprocess.Popen, out_path: str) -> None:
    """Until debootstrap has mounted /proc in the new root (in its own namespace)."""

    def mounted():
        if proc.poll() is not None:
            pytest.fail(f"the build ended ({proc.returncode}) first: {Path(out_path).read_text()[-2000:]}")
        return [m for m in mounts_anywhere() if "/images/tmp/debootstrap-" in m]

    found = wait_for(mounted, timeout=BUILD_TIMEOUT, interval=0.1)
    # The host's own mount table never shows it.
    with open("/proc/self/mountinfo") as f:
        assert not [line for line in f if os.environ["HAKO_ROOT"] in line], found


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_build_leaves_nothing(signum):
    ids, before = image_ids(), tags()
    with tempfile.NamedTemporaryFile("w+", prefix="hako-build-") as out:
        proc = _start_build(f"killed:{signum.name.lower()}", out)
        try:
            _wait_for_mount(proc, out.name)
            assert staging_dirs()
            os.kill(proc.pid, signum)
            assert proc.wait(timeout=120) == 128 + signum
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        output = Path(out.name).read_text()
    assert f"interrupted by {signum.name}: nothing of it was kept" in output
    assert_nothing_left(ids, before)


def test_killed_build_leaves_no_mount_and_the_next_build_clears_its_directory():
    ids, before = image_ids(), tags()
    with tempfile.NamedTemporaryFile("w+", prefix="hako-build-") as out:
        proc = _start_build("killed:sigkill", out)
        try:
            _wait_for_mount(proc, out.name)
            proc.kill()
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    # debootstrap's namespace dies with hako (setpriv --pdeathsig, unshare --kill-child).
    wait_for(lambda: not mounts_anywhere() and not builder_processes(), timeout=30)
    assert len(staging_dirs()) == 1
    # A dead build's directory is removed by the next build.
    hako("image", "build", "busybox", "-t", "busybox:after-kill")
    hako("rmi", "busybox:after-kill")
    assert_nothing_left(ids, before)


def test_progress_on_a_terminal_is_one_updating_line(terminal, monkeypatch):
    ids, before = image_ids(), tags()
    # The terminal helper runs hako with this process's environment.
    monkeypatch.setenv("HAKO_DEBOOTSTRAP_CACHE", debian_build_env()["HAKO_DEBOOTSTRAP_CACHE"])
    term = terminal(
        "image", "build", "debian", "--include", DEBIAN_INCLUDE, "--no-cache", "-t", "progress:tty"
    )
    output = term.expect("Unpacking 5/", timeout=BUILD_TIMEOUT)
    os.kill(term.proc.pid, signal.SIGINT)
    term.expect("nothing of it was kept", timeout=120)
    assert term.wait(timeout=120) == 130
    updates = output.split("\r\x1b[K")
    assert len(updates) > 20
    assert re.search(r"\] bookworm/\w+: Unpacking \d+/\d+ \S+", output)
    # Per-package lines are not printed one under the other.
    assert "I: Retrieving" not in output and "I: Validating" not in output
    assert_nothing_left(ids, before)
