"""The hako_image module run by ansible-playbook on this machine: build, pull, import, load, absent.

Debian builds are not run here: debootstrap has its own tests
(test_debootstrap.py). Pulls use the registry test_registry.py starts.
"""

from __future__ import annotations

import io
import json
import tarfile

from ..conftest import hako
from .test_ansible_modules import run_playbook, task
from .test_registry import busybox_blob, registry  # noqa: F401 - fixtures used here


def image_ids() -> dict[str, str]:
    """Tag -> image ID of every image in the session's store."""
    listing = json.loads(hako("image", "inspect", *tags()).stdout) if tags() else []
    return {tag: image["Id"] for image in listing for tag in image["RepoTags"]}


def tags() -> list[str]:
    lines = hako("images").stdout.splitlines()[1:]
    return [f"{repo}:{tag}" for repo, tag, *_ in (line.split() for line in lines) if repo != "<none>"]


def remove(*names: str) -> None:
    for name in names:
        hako("rmi", "-f", name, check=False)


def test_build_is_idempotent_and_check_mode_builds_nothing(tmp_path, hako_env) -> None:
    name = "imgtest/bb:1"
    build = {"name": name, "source": "build", "build": {"kind": "busybox"}}
    tasks = [
        task("check mode, missing", "hako_image", _check_mode=True, _diff=True, **build),
        task("missing, absent in check mode", "hako_image", _check_mode=True, name=name, state="absent"),
        task("build", "hako_image", _diff=True, **build),
        task("build again", "hako_image", **build),
        task("forced in check mode", "hako_image", _check_mode=True, force=True, **build),
        task("after forced check mode", "hako_image", **build),
        task("absent in check mode", "hako_image", _check_mode=True, name=name, state="absent"),
        task("absent", "hako_image", _diff=True, name=name, state="absent"),
        task("absent again", "hako_image", name=name, state="absent"),
    ]
    try:
        r = run_playbook(tmp_path, tasks)
    finally:
        remove(name)

    expected = {
        "check mode, missing": (True, ["build"]),
        "missing, absent in check mode": (False, []),
        "build": (True, ["build"]),
        "build again": (False, []),
        "forced in check mode": (True, ["build"]),
        "after forced check mode": (False, []),
        "absent in check mode": (True, ["remove"]),
        "absent": (True, ["remove"]),
        "absent again": (False, []),
    }
    assert {t: (r[t]["changed"], r[t]["actions"]) for t in expected} == expected
    assert r["check mode, missing"]["image"] == {}
    assert r["check mode, missing"]["diff"]["before"] == {"Id": None}
    built = r["build"]["image"]
    assert built["RepoTags"] == [name] and built["Size"] > 0 and built["config"]["Cmd"] == ["sh"]
    assert r["build"]["diff"] == {"before": {"Id": None}, "after": {"Id": built["Id"]}}
    # The same image all along, until it was removed.
    for title in ("build again", "forced in check mode", "after forced check mode"):
        assert r[title]["image"]["Id"] == built["Id"]
    assert r["absent"]["diff"] == {"before": {"Id": built["Id"]}, "after": {"Id": None}}
    assert r["absent"]["image"] == {}
    assert name not in image_ids()


def test_force_builds_again_and_drops_the_old_image(tmp_path, hako_env) -> None:
    # The name first holds an imported image, so the forced build surely
    # makes another one (two busybox builds in the same second are the same image).
    name = "imgtest/forced:1"
    tarball = tmp_path / "rootfs.tar.gz"
    rootfs_tarball(tarball)
    build = {"name": name, "source": "build"}
    tasks = [
        task("import", "hako_image", name=name, source="import", path=str(tarball)),
        task("build, already there", "hako_image", **build),
        task("forced", "hako_image", force=True, **build),
        task("absent", "hako_image", name=name, state="absent"),
    ]
    try:
        r = run_playbook(tmp_path, tasks)
    finally:
        remove(name)
    first, second = r["import"]["image"]["Id"], r["forced"]["image"]["Id"]
    assert (r["build, already there"]["changed"], r["build, already there"]["image"]["Id"]) == (False, first)
    assert first != second
    assert (r["forced"]["changed"], r["forced"]["actions"]) == (True, ["build", "remove old image"])
    assert hako("image", "inspect", first, check=False).returncode != 0


def rootfs_tarball(path) -> None:
    """A tiny root filesystem: /etc/motd and /bin (empty)."""
    with tarfile.open(path, "w:gz") as tar:
        for directory in ("bin", "etc"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        data = b"hello from an imported image\n"
        info = tarfile.TarInfo("etc/motd")
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))


def test_import_and_load(tmp_path, hako_env) -> None:
    tarball, saved = tmp_path / "rootfs.tar.gz", tmp_path / "saved.tar"
    rootfs_tarball(tarball)
    imported = {
        "name": "imgtest/imported:1",
        "source": "import",
        "path": str(tarball),
        "changes": ['CMD ["/bin/sh"]', "ENV LANG=C.UTF-8"],
    }
    hako("image", "build", "-t", "imgtest/saved:1", "busybox")
    hako("image", "save", "imgtest/saved:1", "-o", str(saved))
    saved_id = image_ids()["imgtest/saved:1"]
    hako("rmi", "imgtest/saved:1")
    loaded = {"name": "imgtest/loaded:1", "source": "load", "path": str(saved)}
    tasks = [
        task("import in check mode", "hako_image", _check_mode=True, **imported),
        task("import", "hako_image", **imported),
        task("import again", "hako_image", **imported),
        task("load in check mode", "hako_image", _check_mode=True, **loaded),
        task("load", "hako_image", **loaded),
        task("load again", "hako_image", **loaded),
    ]
    try:
        r = run_playbook(tmp_path, tasks)
        ids = image_ids()
    finally:
        remove("imgtest/imported:1", "imgtest/loaded:1", "imgtest/saved:1")

    expected = {
        "import in check mode": (True, ["import"]),
        "import": (True, ["import"]),
        "import again": (False, []),
        "load in check mode": (True, ["load"]),
        "load": (True, ["load"]),
        "load again": (False, []),
    }
    assert {t: (r[t]["changed"], r[t]["actions"]) for t in expected} == expected
    config = r["import"]["image"]["config"]
    assert config["Cmd"] == ["/bin/sh"] and "LANG=C.UTF-8" in config["Env"]
    assert r["import again"]["image"]["Id"] == r["import"]["image"]["Id"] == ids["imgtest/imported:1"]
    # The archive's own name comes back with the image, which is the one saved.
    assert r["load"]["image"]["Id"] == saved_id == ids["imgtest/loaded:1"]
    assert set(r["load"]["image"]["RepoTags"]) == {"imgtest/loaded:1", "imgtest/saved:1"}
    for name in ("imgtest/imported:1", "imgtest/loaded:1", "imgtest/saved:1"):
        assert name not in image_ids()


def test_an_image_in_use_is_kept_unless_forced(tmp_path, containers, hako_env) -> None:
    name = "imgtest/used:1"
    hako("image", "build", "-t", name, "busybox")
    containers.append("imgtest-user")
    hako("create", "--name", "imgtest-user", name, "true")
    tasks = [
        task("absent", "hako_image", _ignore_errors=True, name=name, state="absent"),
        task("absent, forced", "hako_image", name=name, state="absent", force=True),
    ]
    try:
        r = run_playbook(tmp_path, tasks)
    finally:
        hako("rm", "-f", "imgtest-user", check=False)
        remove(name)
    assert r["absent"]["_status"] == "failed"
    assert "imgtest-user" in r["absent"]["msg"] and "force" in r["absent"]["msg"]
    assert (r["absent, forced"]["changed"], r["absent, forced"]["actions"]) == (True, ["remove"])


def test_bad_options_fail_naming_the_option(tmp_path, hako_env) -> None:
    bad = {
        "no source": ({"name": "imgtest/bad:1"}, "source"),
        "unknown source": ({"name": "imgtest/bad:1", "source": "steal"}, "source"),
        "load without path": ({"name": "imgtest/bad:1", "source": "load"}, "path"),
        "no such file": ({"name": "imgtest/bad:1", "source": "load", "path": "/nonexistent.tar"}, "path"),
        "debian option on busybox": (
            {"name": "imgtest/bad:1", "source": "build", "build": {"suite": "bookworm"}},
            "build.suite",
        ),
        "bad debian variant": (
            {"name": "imgtest/bad:1", "source": "build", "build": {"kind": "debian", "variant": "huge"}},
            "build.variant",
        ),
        "path with build": ({"name": "imgtest/bad:1", "source": "build", "path": "/tmp/x.tar"}, "path"),
        "bad name": ({"name": "Not A Name", "source": "build"}, "name"),
        "unknown option": ({"name": "imgtest/bad:1", "source": "build", "colour": "red"}, "colour"),
    }
    tasks = [task(title, "hako_image", _ignore_errors=True, **options) for title, (options, _) in bad.items()]
    r = run_playbook(tmp_path, tasks)
    for title, (_, option) in bad.items():
        assert r[title]["_status"] == "failed", title
        assert option in r[title]["msg"], (title, r[title]["msg"])
    assert "imgtest/bad:1" not in image_ids()


def test_pull_from_a_registry_is_idempotent_and_the_image_runs(tmp_path, hako_env, registry) -> None:  # noqa: F811
    name = f"{registry.host}/test/hello:1"
    pull = {"name": name, "source": "pull", "pull": {"insecure": True}}
    tasks = [
        task("pull in check mode", "hako_image", _check_mode=True, **pull),
        task("pull", "hako_image", **pull),
        task("pull again", "hako_image", **pull),
        task("without insecure", "hako_image", force=True, name=name, source="pull", _ignore_errors=True),
    ]
    try:
        r = run_playbook(tmp_path, tasks)
        assert (r["pull in check mode"]["changed"], r["pull in check mode"]["image"]) == (True, {})
        assert r["pull"]["changed"] and r["pull"]["image"]["RepoTags"] == [name]
        assert r["pull"]["image"]["RepoDigests"]
        assert not r["pull again"]["changed"]
        assert r["without insecure"]["_status"] == "failed"
        assert hako("run", "--rm", name, "cat", "/etc/hello.txt").stdout == "hello from the registry\n"
    finally:
        remove(name)
