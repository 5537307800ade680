"""The Debian builder's parts that need no debootstrap: options, build key, cache, progress, cleaning."""

from __future__ import annotations

import io
import os
import shutil

import pytest
from hako.errors import InvalidValue
from hako.images import debootstrap
from hako.images.debootstrap import BuildOptions, Progress

DEBOOTSTRAP_OUTPUT = """\
I: Retrieving InRelease
I: Checking Release signature
I: Retrieving Packages
I: Validating Packages
I: Resolving dependencies of required packages...
I: Checking component main on http://deb.debian.org/debian...
I: Retrieving libacl1 2.3.1-3
I: Validating libacl1 2.3.1-3
I: Validating apt 2.6.1
I: Retrieving procps 2:4.0.2-3
I: Validating procps 2:4.0.2-3
W: a warning
I: Extracting libacl1...
I: Extracting apt...
I: Installing core packages...
I: Unpacking required packages...
I: Unpacking libacl1:amd64...
I: Unpacking apt...
I: Configuring required packages...
I: Configuring libacl1:amd64...
I: Unpacking the base system...
I: Unpacking procps...
I: Configuring the base system...
I: Configuring procps...
I: Configuring apt...
I: Base system installed successfully.
"""


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def feed(stream) -> str:
    progress = Progress("bookworm/amd64", stream)
    for line in DEBOOTSTRAP_OUTPUT.splitlines():
        progress.feed(line)
    progress.finish()
    return stream.getvalue()


def test_plain_progress_prints_phases_and_sums_up_package_lines():
    lines = feed(io.StringIO()).splitlines()
    assert "I: Retrieved 2, validated 3 packages" in lines
    assert "W: a warning" in lines
    assert "I: Extracted 2 packages" in lines
    assert "I: Unpacked 2 packages" in lines and "I: Unpacked 1 packages" in lines
    assert lines[-1] == "I: Base system installed successfully."
    assert not any(line.startswith("I: Retrieving lib") for line in lines)


def test_terminal_progress_rewrites_one_line_with_counts():
    text = feed(FakeTerminal())
    updates = [u for u in text.split("\r\x1b[K") if u]
    assert "\n" not in "".join(u for u in updates if not u.startswith("W:"))
    assert any(u.endswith("bookworm/amd64: Unpacking 3/3 procps") for u in updates)
    assert any(u.endswith("bookworm/amd64: Configuring 2/3 procps") for u in updates)
    assert "W: a warning\n" in updates
    assert text.endswith("\r\x1b[K")  # the status line is cleared at the end


def test_options_default_and_key():
    options = BuildOptions(include="vim, procps,vim", arch="amd64")
    assert options.suite == "bookworm" and options.variant == "minbase"
    assert options.include == ["procps", "vim"]
    assert options.key() == (
        "debootstrap suite=bookworm variant=minbase include=procps,vim arch=amd64 "
        "mirror=http://deb.debian.org/debian"
    )
    # The order of packages and a trailing slash do not make another build.
    again = BuildOptions(include=["vim", "procps"], arch="amd64", mirror="http://deb.debian.org/debian/")
    assert again.key() == options.key()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"suite": "Bookworm"}, "suite"),
        ({"suite": "../sid"}, "suite"),
        ({"suite": ""}, "suite"),
        ({"variant": "fakechroot"}, "variant"),
        ({"include": "a,,b"}, "include"),
        ({"include": "vim;ls"}, "include"),
        ({"include": "-x"}, "include"),
        ({"arch": "x86_64"}, "arch"),
        ({"mirror": "deb.debian.org/debian"}, "mirror"),
        ({"mirror": "http://a b"}, "mirror"),
    ],
)
def test_bad_options_name_their_field(kwargs, field):
    with pytest.raises(InvalidValue) as error:
        BuildOptions(**kwargs)
    assert error.value.field == field


def test_debootstrap_runs_in_its_own_namespaces():
    options = BuildOptions(suite="forky", include="procps", arch="amd64")
    try:
        argv = debootstrap.debootstrap_argv(options, "/target", "/cache")
    except Exception as e:  # no util-linux or debootstrap on this machine
        pytest.skip(str(e))
    unshare = next(i for i, a in enumerate(argv) if a.endswith("/unshare"))
    assert argv[unshare + 1 : unshare + 7] == [
        "--mount",
        "--propagation",
        "private",
        "--pid",
        "--fork",
        "--kill-child=SIGKILL",
    ]
    assert argv[1:3] == ["--pdeathsig", "KILL"]
    assert "--include=procps" in argv and "--cache-dir=/cache" in argv
    # A suite newer than this debootstrap is built with sid's script.
    assert argv[-4:-1] == ["forky", "/target", "http://deb.debian.org/debian"]
    assert argv[-1].endswith("/sid") or argv[-1].endswith("/forky")


# The build cache ---------------------------------------------------------------------------
def _config(labels: dict, created: str = "2024-01-01T00:00:00Z") -> dict:
    return {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {"Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": []},
    }


def test_the_build_cache_trusts_only_what_the_builder_recorded(tmp_path):
    from hako.images.store import ImageStore

    images = ImageStore(str(tmp_path))
    key = BuildOptions(arch="amd64").key()
    # Anyone can give an image this label (hako import -c LABEL, a loaded or pulled image).
    images.add_image(_config({debootstrap.BUILD_LABEL: key}, "2030-01-01T00:00:00Z"), "evil:1")
    assert debootstrap.find_built(images, key) is None
    built = images.add_image(_config({debootstrap.BUILD_LABEL: key}), "debian:bookworm", {"build": key})
    assert debootstrap.find_built(images, key).id == built.id
    assert debootstrap.find_built(images, BuildOptions(arch="amd64", include="vim").key()) is None
    # Odd labels of other images do not stop the search.
    images.add_image({**_config({}), "config": {"Labels": ["not", "a", "map"]}}, "odd:1")
    images.add_image({**_config({}), "config": None}, "odd:2")
    assert debootstrap.find_built(images, key).id == built.id


# Cleaning the new root ---------------------------------------------------------------------
def _new_root(path):
    """A tree shaped like a fresh debootstrap: the directories clean_rootfs works in."""
    for directory in (
        "proc",
        "sys",
        "dev",
        "debootstrap",
        "etc",
        "tmp",
        "var/tmp",
        "var/log/apt",
        "var/lib/apt/lists/partial",
        "var/lib/dpkg",
        "var/lib/dbus",
        "var/cache/apt/archives/partial",
        "var/cache/debconf",
        "var/cache/ldconfig",
        "usr/sbin",
    ):
        (path / directory).mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def host(tmp_path):
    """Files of the host, next to the new root: nothing may change them."""
    outside = tmp_path / "host"
    (outside / "dir").mkdir(parents=True)
    (outside / "file").write_text("host file\n")
    for name in ("a.log", "x.deb", "Packages", "keep", "machine-id"):
        (outside / "dir" / name).write_text(f"host {name}\n")
    return outside


def _host_state(outside):
    return {str(p.relative_to(outside)): p.read_text() for p in sorted(outside.rglob("*")) if p.is_file()}


def test_clean_rootfs_removes_or_skips_file_links_to_the_host(tmp_path, host):
    fs = _new_root(tmp_path / "fs")
    before = _host_state(host)
    target = str(host / "file")
    for name in (
        "etc/machine-id",
        "etc/hostname",
        "etc/resolv.conf",
        "usr/sbin/policy-rc.d",
        "var/log/apt/history.log",
        "var/log/dpkg.log",
        "var/lib/dbus/machine-id",
        "var/lib/apt/lists/deb.debian.org_Packages",
        "var/cache/apt/archives/x.deb",
        "var/cache/ldconfig/aux-cache",
        "tmp/link",
        "var/tmp/link",
    ):
        (fs / name).symlink_to(target)
    (fs / "var/log/real.log").write_text("a line\n")
    (fs / "tmp/dir/sub").mkdir(parents=True)
    (fs / "tmp/dir/sub/link").symlink_to(host / "dir")
    debootstrap.clean_rootfs(str(fs))
    assert _host_state(host) == before
    assert (fs / "etc/hostname").read_text() == "localhost\n" and not (fs / "etc/hostname").is_symlink()
    assert not (fs / "etc/resolv.conf").is_symlink() and not (fs / "usr/sbin/policy-rc.d").is_symlink()
    assert not os.path.lexists(fs / "etc/machine-id")  # a link is removed, never followed
    assert (fs / "var/log/real.log").read_text() == ""
    for gone in ("var/lib/dbus/machine-id", "var/cache/apt/archives/x.deb", "var/cache/ldconfig/aux-cache"):
        assert not os.path.lexists(fs / gone), gone
    assert os.listdir(fs / "tmp") == [] and os.listdir(fs / "var/tmp") == []


def test_clean_rootfs_never_walks_a_directory_link_to_the_host(tmp_path, host):
    fs = _new_root(tmp_path / "fs")
    before = _host_state(host)
    for name in ("tmp", "var/tmp", "var/log", "var/lib/apt/lists", "var/cache/apt/archives", "usr/sbin"):
        shutil.rmtree(fs / name)
        (fs / name).symlink_to(host / "dir")
    debootstrap.clean_rootfs(str(fs))
    assert _host_state(host) == before
    # And a whole /etc that leads out.
    fs2 = _new_root(tmp_path / "fs2")
    (fs2 / "etc").rmdir()
    (fs2 / "etc").symlink_to(host / "dir")
    debootstrap.clean_rootfs(str(fs2))
    assert _host_state(host) == before
    assert sorted(os.listdir(host / "dir")) == ["Packages", "a.log", "keep", "machine-id", "x.deb"]


def test_clean_rootfs_cleans_a_plain_tree(tmp_path):
    fs = _new_root(tmp_path / "fs")
    (fs / "etc/machine-id").write_text("0123456789abcdef\n")
    (fs / "var/log/apt/history.log").write_text("lines\n")
    (fs / "var/lib/apt/lists/deb.debian.org_Packages").write_text("Package: x\n")
    (fs / "var/lib/apt/lists/lock").write_text("")
    (fs / "var/cache/apt/pkgcache.bin").write_text("x")
    (fs / "var/cache/apt/archives/x.deb").write_text("x")
    (fs / "var/cache/apt/archives/lock").write_text("")
    (fs / "var/lib/dpkg/status-old").write_text("x")
    (fs / "var/lib/dpkg/status").write_text("x")
    (fs / "tmp/a/b").mkdir(parents=True)
    (fs / "tmp/a/b/c").write_text("x")
    (fs / "debootstrap/debootstrap.log").write_text("x")
    (fs / "dev/null").write_text("not a device here")
    debootstrap.clean_rootfs(str(fs))
    assert (fs / "etc/machine-id").read_text() == ""
    assert (fs / "var/log/apt/history.log").read_text() == ""
    assert sorted(os.listdir(fs / "var/lib/apt/lists")) == ["partial"]
    assert sorted(os.listdir(fs / "var/cache/apt")) == ["archives"]
    assert sorted(os.listdir(fs / "var/cache/apt/archives")) == ["lock", "partial"]
    assert os.listdir(fs / "var/lib/dpkg") == ["status"]
    assert os.listdir(fs / "tmp") == [] and os.listdir(fs / "dev") == []
    assert not (fs / "debootstrap").exists()
    assert (fs / "etc/hostname").read_text() == "localhost\n"
    assert os.stat(fs / "usr/sbin/policy-rc.d").st_mode & 0o777 == 0o755
