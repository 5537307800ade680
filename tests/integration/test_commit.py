"""hako commit, tag, history, rmi and image prune against real containers and a real store."""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest import hako

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture
def images():
    """Image tags a test makes; all are removed when it ends."""
    made: list[str] = []
    yield made
    for tag in made:
        hako("rmi", "-f", tag, check=False)
    hako("image", "prune", "-f", check=False)


def inspect_image(ref: str) -> dict:
    return json.loads(hako("image", "inspect", ref).stdout)[0]


def test_a_committed_container_s_changes_are_seen_by_containers_of_the_new_image(
    run_detached, images
) -> None:
    name, _ = run_detached("busybox", "sleep", "60")
    hako("exec", name, "sh", "-c", "echo hello > /root/greeting; rm /etc/hostname; mkdir -p /srv/app")
    # The container's own layer holds just what it changed (inspect shows where).
    overlay = json.loads(hako("inspect", name).stdout)[0]["GraphDriver"]["Data"]
    assert open(os.path.join(overlay["UpperDir"], "root/greeting")).read() == "hello\n"
    assert os.path.isfile(os.path.join(overlay["LowerDir"].split(":")[0], "bin/busybox"))
    images.append("lab/commit:1")
    image_id = hako(
        "commit", "-a", "Jane <jane@example.org>", "-m", "first", name, "lab/commit:1"
    ).stdout.strip()
    assert image_id.startswith("sha256:")
    seen = hako(
        "run", "--rm", "lab/commit:1", "sh", "-c", "cat /root/greeting; ls /etc; ls -d /srv/app"
    ).stdout
    assert "hello" in seen
    assert "hostname" not in seen.split()  # the deletion is a whiteout in the new layer
    assert "/srv/app" in seen
    info = inspect_image("lab/commit:1")
    busybox = inspect_image("busybox")
    assert info["rootfs"]["diff_ids"][:-1] == busybox["rootfs"]["diff_ids"]
    assert info["author"] == "Jane <jane@example.org>"
    assert info["history"][-1]["comment"] == "first"
    assert info["history"][-1]["created_by"] == "sleep 60"
    # The container keeps running after a (pausing) commit.
    assert json.loads(hako("inspect", name).stdout)[0]["State"]["Status"] == "running"


def test_commit_takes_the_container_s_command_and_changes(containers, images) -> None:
    containers.append("cmt-cmd")
    hako(
        "run", "--name", "cmt-cmd", "-e", "GREETING=hi", "-w", "/tmp", "busybox", "sh", "-c", "echo $GREETING"
    )
    images.append("lab/commit:2")
    hako("commit", "cmt-cmd", "lab/commit:2")
    assert hako("run", "--rm", "lab/commit:2").stdout.strip() == "hi"
    assert hako("run", "--rm", "lab/commit:2", "pwd").stdout.strip() == "/tmp"
    images.append("lab/commit:3")
    hako(
        "commit",
        "-c", 'CMD ["sh", "-c", "echo $A-$GREETING; id -u"]',
        "-c", "ENV A=changed",
        "-c", "USER 65534",
        "-c", "LABEL course=linuc",
        "cmt-cmd",
        "lab/commit:3",
    )  # fmt: skip
    assert hako("run", "--rm", "lab/commit:3").stdout.split() == ["changed-hi", "65534"]
    assert inspect_image("lab/commit:3")["config"]["Labels"] == {"course": "linuc"}
    images.append("lab/commit:4")
    hako("commit", "-c", 'ENTRYPOINT ["echo", "entry"]', "-c", 'CMD ["default"]', "cmt-cmd", "lab/commit:4")
    assert hako("run", "--rm", "lab/commit:4").stdout.strip() == "entry default"
    assert hako("run", "--rm", "lab/commit:4", "given").stdout.strip() == "entry given"
    assert hako("run", "--rm", "--entrypoint", "id", "lab/commit:4", "-u").stdout.strip() == "0"


def test_a_user_namespace_container_commits_owners_as_the_container_saw_them(containers, images) -> None:
    containers.append("cmt-userns")
    # Deleting a lower layer's directory and making it again needs overlayfs
    # to write trusted.* attributes: the root is mounted as the host's root.
    hako("run", "--name", "cmt-userns", "--userns", "auto", "busybox", "sh", "-c",
         "mkdir /home/bob && echo hi > /home/bob/x && chown -R 1000:1000 /home/bob"
         " && rm -rf /usr/sbin && mkdir /usr/sbin && touch /usr/sbin/only && rm /bin/vi")  # fmt: skip
    images.append("lab/userns:1")
    hako("commit", "cmt-userns", "lab/userns:1")
    for extra in ([], ["--userns", "auto"]):
        listing = hako("run", "--rm", *extra, "lab/userns:1", "stat", "-c", "%u:%g %n", "/home/bob/x").stdout
        assert listing.strip() == "1000:1000 /home/bob/x"
        seen = hako("run", "--rm", *extra, "lab/userns:1", "sh", "-c", "ls /usr/sbin; ls /bin/vi || :").stdout
        assert seen.split() == ["only"]


def test_bad_commit_input_is_one_line_and_makes_no_image(run_detached) -> None:
    before = hako("images").stdout
    name, _ = run_detached("busybox", "sleep", "60")
    cases = [
        (["commit", "no-such-container", "x:1"], "no such container"),
        (["commit", "-c", "FOO bar", name, "x:1"], "change"),
        (["commit", "-c", "CMD [1, 2]", name, "x:1"], "change"),
        (["commit", name, "Bad:Tag"], "Bad:Tag"),
        (["commit", "--pause", "maybe", name, "x:1"], "pause"),
    ]
    for argv, word in cases:
        result = hako(*argv, check=False)
        assert result.returncode == 125
        assert len(result.stderr.strip().splitlines()) == 1 and word in result.stderr
    assert hako("images").stdout == before


def test_tag_history_and_rmi_of_one_tag_keep_the_image(images) -> None:
    images += ["lab/tagged:1", "lab/tagged:2"]
    hako("tag", "busybox", "lab/tagged:1")
    hako("tag", "lab/tagged:1", "lab/tagged:2")
    assert set(inspect_image("busybox")["RepoTags"]) >= {"busybox:latest", "lab/tagged:1", "lab/tagged:2"}
    assert hako("rmi", "lab/tagged:1").stdout.strip() == "lab/tagged:1"
    assert "lab/tagged:1" not in inspect_image("busybox")["RepoTags"]
    history = hako("image", "history", "lab/tagged:2").stdout.splitlines()
    assert history[0].split()[:3] == ["IMAGE", "CREATED", "CREATED"]
    assert "hako image build busybox" in history[1]
    result = hako("tag", "busybox", "Not:Valid", check=False)
    assert result.returncode == 125 and "Not:Valid" in result.stderr


def test_an_image_in_use_is_kept_until_its_containers_go(containers, images) -> None:
    images.append("lab/inuse:1")
    hako("tag", "busybox", "lab/inuse:1")
    containers.append("cmt-user")
    hako("create", "--name", "cmt-user", "lab/inuse:1", "true")
    hako("run", "--name", "cmt-user2", "busybox", "true")
    containers.append("cmt-user2")
    images.append("lab/inuse:2")
    image_id = hako("commit", "cmt-user2", "lab/inuse:2").stdout.strip()
    hako("rm", "cmt-user2")
    hako("create", "--name", "cmt-user3", "lab/inuse:2", "true")
    containers.append("cmt-user3")
    refused = hako("rmi", "lab/inuse:2", check=False)
    assert refused.returncode == 1 and "cmt-user3" in refused.stderr
    # -f untags; the data stays while the container stands on it.
    hako("rmi", "-f", "lab/inuse:2")
    assert inspect_image(image_id)["RepoTags"] == []
    hako("image", "prune", "-f")
    assert hako("start", "-a", "cmt-user3").returncode == 0
    hako("rm", "cmt-user3")
    pruned = hako("image", "prune", "-f").stdout
    assert f"deleted: {image_id}" in pruned
    assert hako("image", "inspect", image_id, check=False).returncode != 0


def test_prune_all_removes_unused_tagged_images_and_their_layers(images, hako_env) -> None:
    hako("run", "--name", "cmt-prune", "busybox", "sh", "-c", "echo data > /data")
    image_id = hako("commit", "cmt-prune", "lab/prune:1").stdout.strip()
    images.append("lab/prune:1")
    hako("rm", "cmt-prune")
    top = inspect_image(image_id)["rootfs"]["diff_ids"][-1]
    layer = os.path.join(hako_env["root"], "images", "layers", top[7:])
    assert os.path.isdir(layer)
    kept = hako("image", "prune", "-f").stdout  # dangling only: the tagged image stays
    assert image_id not in kept
    busybox = inspect_image("busybox")["Id"]
    hako("tag", "busybox", "keep-me:1")
    images.append("keep-me:1")
    hako("create", "--name", "cmt-holder", "keep-me:1", "true")
    try:
        pruned = hako("image", "prune", "-a", "-f").stdout
    finally:
        hako("rm", "cmt-holder")
    assert f"deleted: {image_id}" in pruned and busybox not in pruned
    assert "Total reclaimed space: 0B" not in pruned  # its own layer went with it
    assert not os.path.exists(layer)


def test_prune_removes_layers_no_image_uses_and_partial_downloads(hako_env) -> None:
    import io
    import tarfile

    from hako.images.store import ImageStore

    images = ImageStore(hako_env["root"])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("orphan")
        info.size = 6
        tar.addfile(info, io.BytesIO(b"orphan"))
    # What a pull interrupted between its layers and its config leaves.
    orphan = images.unpack_layer(io.BytesIO(buf.getvalue()))
    partial = os.path.join(images.tmp_dir(), "partial")
    os.makedirs(partial, exist_ok=True)
    with open(os.path.join(partial, "ab" * 32), "wb") as f:
        f.write(b"x" * 1000)
    busybox_layers = inspect_image("busybox")["rootfs"]["diff_ids"]
    hako("image", "prune", "-f")
    assert not images.has_layer(orphan["diff_id"])
    assert not os.path.exists(images.blob_path(orphan["digest"]))
    assert not os.path.exists(partial)
    assert all(images.has_layer(d) for d in busybox_layers)
