"""The Debian builder's parts that need no debootstrap: options, build key, cache, progress."""

from __future__ import annotations

import io

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
