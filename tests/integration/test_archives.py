"""Image archives and root filesystem tarballs: hako image import, load, save and hako export.

Real tarballs, real overlayfs, and the peers that write and check image
archives (skopeo, umoci, oci-image-tool, podman), all as root.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import os
import shutil
import signal
import stat
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest
from hako.images import busybox

from ..conftest import HAKO, hako, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (overlayfs, owners, the image store)")

ARCH = busybox.architecture()
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# Helpers ------------------------------------------------------------------------
def hako_bytes(*args: str, input: bytes | None = None, env=None, timeout: float = 60):
    """Run hako with binary standard input and output."""
    return subprocess.run([*HAKO, *args], input=input, capture_output=True, env=env, timeout=timeout)


def images_dir() -> Path:
    return Path(os.environ["HAKO_ROOT"], "images")


def store_state() -> dict:
    """What the image store holds: layers, blobs, configs, tags."""
    root = images_dir()

    def names(sub: str) -> set[str]:
        path = root / sub
        return set(os.listdir(path)) if path.is_dir() else set()

    tags = json.loads((root / "tags.json").read_text()) if (root / "tags.json").exists() else {}
    return {
        "layers": names("layers"),
        "blobs": names("blobs/sha256"),
        "configs": names("configs"),
        "tags": tags,
    }


def tmp_entries() -> list[str]:
    path = images_dir() / "tmp"
    return sorted(os.listdir(path)) if path.is_dir() else []


def assert_one_line_error(result, *words: str) -> None:
    stderr = result.stderr.decode() if isinstance(result.stderr, bytes) else result.stderr
    assert result.returncode == 125, stderr
    assert stderr.startswith("hako: ") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr
    for word in words:
        assert word in stderr, stderr


def image_id(name: str) -> str:
    return json.loads(hako("image", "inspect", name).stdout)[0]["Id"]


def has_image(name: str) -> bool:
    return hako("image", "inspect", name, check=False).returncode == 0


@pytest.fixture
def images():
    """Names (or IDs) of images a test makes; all are removed when it ends."""
    made: list[str] = []
    yield made
    for name in reversed(made):
        hako("image", "rm", "-f", name, check=False)


def make_rootfs(path: Path, files: dict[str, str] | None = None) -> Path:
    """A busybox root filesystem (the host's busybox-static) with extra files."""
    path.mkdir()
    path.chmod(0o755)
    busybox.populate_rootfs(str(path), busybox.find_busybox())
    for name, content in (files or {}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(content)
    return path


def tar_of(directory: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(str(directory), arcname=".")
    return buf.getvalue()


def compress(data: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(data)
    if how == "xz":
        return lzma.compress(data)
    if how == "zstd":
        return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True).stdout
    return data


def archive(*entries) -> bytes:
    """A tar of (name, kind, extra) entries; kind is file, dir, symlink or hardlink."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, extra in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_600_000_000
            data = None
            if kind == "file":
                data = extra.encode()
                info.size, info.mode = len(data), 0o644
            elif kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, extra
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, extra
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


@pytest.fixture(scope="module")
def rootfs_tarball(tmp_path_factory) -> bytes:
    """An uncompressed root filesystem tarball: busybox and /lab/hello."""
    base = tmp_path_factory.mktemp("rootfs")
    data = tar_of(make_rootfs(base / "fs", {"lab/hello": "hello from the tarball\n"}))
    yield data
    shutil.rmtree(base)


# Import -------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["none", "gzip", "xz", "zstd"])
def test_an_imported_rootfs_runs_with_its_files(tmp_path, images, rootfs_tarball, how) -> None:
    path = tmp_path / "rootfs.tar"
    path.write_bytes(compress(rootfs_tarball, how))
    name = f"archtest/import-{how}:1"
    images.append(name)
    out = hako("image", "import", str(path), "--name", name, "-c", "CMD cat /lab/hello", "-m", "lab rootfs")
    new_id = out.stdout.strip()
    assert new_id.startswith("sha256:") and new_id == image_id(name)
    assert hako("run", "--rm", name).stdout == "hello from the tarball\n"
    doc = json.loads(hako("image", "inspect", name).stdout)[0]
    assert doc["config"] == {"Env": [PATH_ENV], "Cmd": ["/bin/sh", "-c", "cat /lab/hello"]}
    assert doc["architecture"] == ARCH and doc["os"] == "linux" and doc["created"]
    assert doc["history"][0]["comment"] == "lab rootfs"
    assert len(doc["rootfs"]["diff_ids"]) == 1
    # The layer's diff ID is the digest of the uncompressed tarball.
    assert doc["rootfs"]["diff_ids"][0] == "sha256:" + hashlib.sha256(rootfs_tarball).hexdigest()
    assert tmp_entries() == []


def test_import_without_a_change_sets_no_command(tmp_path, images, rootfs_tarball) -> None:
    path = tmp_path / "rootfs.tar.gz"
    path.write_bytes(gzip.compress(rootfs_tarball))
    images.append("archtest/plain:1")
    hako("import", str(path), "archtest/plain:1")  # Docker's positional form
    doc = json.loads(hako("image", "inspect", "archtest/plain:1").stdout)[0]
    assert doc["config"] == {"Env": [PATH_ENV]}
    assert doc["history"][0]["comment"] == f"Imported from {path}"
    assert hako("run", "--rm", "archtest/plain:1", "cat", "/lab/hello").stdout == "hello from the tarball\n"


def test_import_from_standard_input(images, rootfs_tarball) -> None:
    images.append("archtest/stdin:1")
    result = hako_bytes("image", "import", "-", "archtest/stdin:1", input=gzip.compress(rootfs_tarball))
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().strip() == image_id("archtest/stdin:1")
    assert hako("run", "--rm", "archtest/stdin:1", "cat", "/lab/hello").stdout == "hello from the tarball\n"


@pytest.mark.parametrize(
    "args, words",
    [
        (["--name", "Bad:Name"], "not a valid image reference"),
        (["-c", "FROM scratch"], "expected one of CMD"),
        (["-c", "CMD [not json"], "JSON form"),
    ],
)
def test_import_checks_its_name_and_changes_before_reading(tmp_path, rootfs_tarball, args, words) -> None:
    path = tmp_path / "rootfs.tar"
    path.write_bytes(rootfs_tarball)
    before = store_state()
    assert_one_line_error(hako("image", "import", str(path), *args, check=False), words)
    assert store_state() == before and tmp_entries() == []


@pytest.fixture
def outside(tmp_path) -> Path:
    """A directory no archive may write into."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "precious").write_text("keep me")
    return path


HOSTILE = {
    "tar-slip": (
        lambda out: archive(("lab", "dir", None), ("lab/../../../../../outside/evil", "file", "x")),
        "'..'",
    ),
    "absolute": (lambda out: archive((f"{out}/evil", "file", "x")), "absolute path"),
    "symlink-escape": (
        lambda out: archive(("escape", "symlink", str(out)), ("escape/evil", "file", "x")),
        "passes through 'escape'",
    ),
    "hardlink-escape": (
        lambda out: archive(
            ("lab", "dir", None), ("up", "symlink", str(out)), ("lab/evil", "hardlink", "up/precious")
        ),
        "passes through 'up'",
    ),
    "too-many-entries": (
        lambda out: archive(*((f"f{i}", "file", "") for i in range(30))),
        "HAKO_MAX_LAYER_ENTRIES=20",
    ),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_hostile_tarball_is_refused_and_leaves_nothing(tmp_path, outside, images, kind) -> None:
    make, words = HOSTILE[kind]
    path = tmp_path / "hostile.tar.gz"
    path.write_bytes(gzip.compress(make(outside)))
    before = store_state()
    images.append("archtest/hostile:1")
    env = dict(os.environ, HAKO_MAX_LAYER_ENTRIES="20")
    result = hako("image", "import", str(path), "--name", "archtest/hostile:1", check=False, env=env)
    assert_one_line_error(result, words)
    assert not has_image("archtest/hostile:1")
    assert store_state() == before
    assert tmp_entries() == []
    assert sorted(p.name for p in outside.iterdir()) == ["precious"]
    assert (outside / "precious").read_text() == "keep me" and (outside / "precious").stat().st_nlink == 1


@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
def test_a_damaged_tarball_leaves_no_image(tmp_path, images, rootfs_tarball, damage) -> None:
    data = gzip.compress(rootfs_tarball)
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        middle = len(data) // 2
        data = data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 64]) + data[middle + 64 :]
    path = tmp_path / "damaged.tar.gz"
    path.write_bytes(data)
    before = store_state()
    images.append("archtest/damaged:1")
    result = hako("image", "import", str(path), "archtest/damaged:1", check=False)
    assert_one_line_error(result)
    assert not has_image("archtest/damaged:1")
    assert store_state() == before
    assert tmp_entries() == []


def test_an_import_killed_midway_leaves_no_image(images, rootfs_tarball) -> None:
    images.append("archtest/killed:1")
    before = store_state()
    proc = subprocess.Popen(
        [*HAKO, "image", "import", "-", "archtest/killed:1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        data = gzip.compress(rootfs_tarball)
        proc.stdin.write(data[: len(data) // 2])
        proc.stdin.flush()
        wait_for(lambda: any(e.startswith("layer-") for e in tmp_entries()))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdin.close()
    assert not has_image("archtest/killed:1")
    # What the killed import staged is not an image, and the next writer clears it.
    assert store_state()["configs"] == before["configs"]
    tiny = gzip.compress(archive(("x", "file", "x")))
    images.append("archtest/tiny:1")
    assert hako_bytes("image", "import", "-", "archtest/tiny:1", input=tiny).returncode == 0
    assert tmp_entries() == []
    assert store_state()["layers"] - before["layers"] == {image_layer("archtest/tiny:1")}


def image_layer(name: str) -> str:
    doc = json.loads(hako("image", "inspect", name).stdout)[0]
    return doc["rootfs"]["diff_ids"][-1].split(":", 1)[1]


# An OCI layout the tests build themselves -------------------------------------------
def _blob(layout: Path, data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": "sha256:" + digest, "size": len(data)}


def _image(layout: Path, layer_tars: list[bytes], arch: str = ARCH, cmd=("sh",)) -> tuple[dict, str]:
    """Store an image's blobs in ``layout``; its manifest's descriptor and its image ID."""
    layers = []
    for data in layer_tars:
        layers.append(
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **_blob(layout, gzip.compress(data))}
        )
    config = {
        "architecture": arch,
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {"Env": [PATH_ENV], "Cmd": list(cmd)},
        "rootfs": {
            "type": "layers",
            "diff_ids": ["sha256:" + hashlib.sha256(d).hexdigest() for d in layer_tars],
        },
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "test"} for _ in layer_tars],
    }
    config_desc = {
        "mediaType": "application/vnd.oci.image.config.v1+json",
        **_blob(layout, json.dumps(config).encode()),
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": layers,
    }
    descriptor = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        **_blob(layout, json.dumps(manifest).encode()),
    }
    return descriptor, config_desc["digest"]


def _write_index(layout: Path, manifests: list[dict]) -> None:
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }
    (layout / "index.json").write_text(json.dumps(index))


def _new_layout(path: Path) -> Path:
    (path / "blobs" / "sha256").mkdir(parents=True)
    return path


@pytest.fixture(scope="module")
def layered(tmp_path_factory):
    """An OCI layout of a two-layer image whose second layer deletes a file and makes a directory opaque,
    and skopeo's OCI archive and docker-archive of it."""
    base = tmp_path_factory.mktemp("layered")
    files = {"data/keep": "v1\n", "data/gone": "gone\n", "opq/old1": "1\n", "opq/old2": "2\n"}
    first = tar_of(make_rootfs(base / "fs", files))
    second = archive(
        ("data", "dir", None),
        ("data/.wh.gone", "file", ""),
        ("data/keep", "file", "v2\n"),
        ("opq", "dir", None),
        ("opq/.wh..wh..opq", "file", ""),
        ("opq/new", "file", "new\n"),
    )
    layout = _new_layout(base / "layout")
    descriptor, config_digest = _image(layout, [first, second])
    _write_index(layout, [{**descriptor, "annotations": {"org.opencontainers.image.ref.name": "lab"}}])
    oci = base / "layered-oci.tar"
    docker = base / "layered-docker.tar"
    subprocess.run(
        ["skopeo", "copy", "-q", f"oci:{layout}:lab", f"oci-archive:{oci}:archtest/layered:oci"], check=True
    )
    subprocess.run(
        ["skopeo", "copy", "-q", f"oci:{layout}:lab", f"docker-archive:{docker}:archtest/layered:docker"],
        check=True,
    )
    manifest = json.loads((layout / "blobs" / descriptor["digest"].replace(":", "/")).read_text())
    second_layer = {
        "oci": "blobs/sha256/" + manifest["layers"][1]["digest"][7:],
        "docker": hashlib.sha256(second).hexdigest() + ".tar",
    }
    yield {"layout": layout, "oci": oci, "docker": docker, "id": config_digest, "second_layer": second_layer}
    shutil.rmtree(base)


VIEW = "ls -A /data; echo -; ls -A /opq; echo -; cat /data/keep /opq/new"
EXPECTED_VIEW = "keep\n-\nnew\n-\nv2\nnew\n"


def _layer_inodes(image: str) -> dict[str, int]:
    doc = json.loads(hako("image", "inspect", image).stdout)[0]
    return {d: (images_dir() / "layers" / d[7:] / "fs").stat().st_ino for d in doc["rootfs"]["diff_ids"]}


def test_load_of_skopeo_archives_gives_the_layered_view(layered, images) -> None:
    images += ["archtest/layered:oci", "archtest/layered:docker"]
    out = hako("image", "load", "-i", str(layered["oci"])).stdout
    assert out == "Loaded image: archtest/layered:oci\n"
    assert image_id("archtest/layered:oci") == layered["id"]
    assert hako("run", "--rm", "archtest/layered:oci", "sh", "-c", VIEW).stdout == EXPECTED_VIEW
    inodes = _layer_inodes("archtest/layered:oci")
    # A docker-archive from stdin: skopeo wrote its layers uncompressed, yet
    # they are the same layers (same diff IDs), already stored: not unpacked again.
    result = hako_bytes("load", input=layered["docker"].read_bytes())
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == "Loaded image: archtest/layered:docker\n"
    assert image_id("archtest/layered:docker") == layered["id"]
    assert _layer_inodes("archtest/layered:docker") == inodes
    assert hako("run", "--rm", "archtest/layered:docker", "sh", "-c", VIEW).stdout == EXPECTED_VIEW
    assert tmp_entries() == []


def test_load_of_a_docker_archive_into_an_empty_store_and_a_tag(layered, images) -> None:
    images += ["archtest/layered:docker", "archtest/renamed:1"]
    before = store_state()
    gz = gzip.compress(layered["docker"].read_bytes())
    result = hako_bytes("load", "--tag", "archtest/renamed:1", input=gz)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines() == [
        "Loaded image: archtest/layered:docker",
        "Loaded image: archtest/renamed:1",
    ]
    assert image_id("archtest/renamed:1") == layered["id"]
    assert len(store_state()["layers"] - before["layers"]) == 2
    assert hako("run", "--rm", "archtest/renamed:1", "sh", "-c", VIEW).stdout == EXPECTED_VIEW


def test_load_of_an_oci_layout_directory(layered, images) -> None:
    # Its ref name "lab" is a tag of the layout, not an image name: --tag gives one.
    images.append("archtest/fromdir:1")
    out = hako("load", "-i", str(layered["layout"]), "-t", "archtest/fromdir:1").stdout
    assert out == "Loaded image: archtest/fromdir:1\n"
    assert image_id("archtest/fromdir:1") == layered["id"]


def _flip_inside(path: Path, name: str) -> None:
    """Change bytes in the middle of an archive member (its tar header stays as it was)."""
    with tarfile.open(path) as tar:
        member = tar.getmember(name)
    middle = member.offset_data + member.size // 2
    with open(path, "r+b") as f:
        f.seek(middle)
        data = f.read(16)
        f.seek(middle)
        f.write(bytes(b ^ 0x55 for b in data))


@pytest.mark.parametrize("kind", ["oci", "docker"])
def test_load_of_a_corrupted_archive_is_refused_and_keeps_nothing(layered, images, tmp_path, kind) -> None:
    images.append(f"archtest/layered:{kind}")
    damaged = tmp_path / "damaged.tar"
    shutil.copy(layered[kind], damaged)
    # The second layer's blob: the first one is unpacked by then, and must go again.
    name = layered["second_layer"][kind]
    _flip_inside(damaged, name)
    before = store_state()
    result = hako("image", "load", "-i", str(damaged), check=False)
    assert_one_line_error(result, name)
    assert not has_image(f"archtest/layered:{kind}")
    assert store_state() == before
    assert tmp_entries() == []


def test_load_refuses_a_layer_that_is_not_what_the_config_says(tmp_path, images) -> None:
    # Both blobs match their digests, but the config's diff ID is of other content.
    layout = _new_layout(tmp_path / "layout")
    good = archive(("a", "file", "a"))
    descriptor, _ = _image(layout, [good])
    manifest = json.loads((layout / "blobs" / descriptor["digest"].replace(":", "/")).read_text())
    config_path = layout / "blobs" / manifest["config"]["digest"].replace(":", "/")
    config = json.loads(config_path.read_text())
    config["rootfs"]["diff_ids"] = ["sha256:" + hashlib.sha256(b"other").hexdigest()]
    manifest["config"].update(_blob(layout, json.dumps(config).encode()))
    descriptor = {"mediaType": descriptor["mediaType"], **_blob(layout, json.dumps(manifest).encode())}
    _write_index(
        layout, [{**descriptor, "annotations": {"org.opencontainers.image.ref.name": "archtest/lie:1"}}]
    )
    images.append("archtest/lie:1")
    before = store_state()
    result = hako("load", "-i", str(layout), check=False)
    assert_one_line_error(result, manifest["layers"][0]["digest"][7:], "refused")
    assert store_state() == before and not has_image("archtest/lie:1")


def test_load_of_an_index_with_several_platforms_takes_the_hosts(tmp_path, images) -> None:
    layout = _new_layout(tmp_path / "layout")
    other_arch = "arm64" if ARCH != "arm64" else "amd64"
    name = {"org.opencontainers.image.ref.name": "archtest/multi:1"}
    mine, mine_id = _image(layout, [archive(("arch", "file", ARCH))], ARCH)
    theirs, theirs_id = _image(layout, [archive(("arch", "file", other_arch))], other_arch)
    _write_index(
        layout,
        [
            {**theirs, "platform": {"os": "linux", "architecture": other_arch}, "annotations": name},
            {**mine, "platform": {"os": "linux", "architecture": ARCH}, "annotations": name},
        ],
    )
    images.append("archtest/multi:1")
    assert hako("load", "-i", str(layout)).stdout == "Loaded image: archtest/multi:1\n"
    assert image_id("archtest/multi:1") == mine_id
    assert theirs_id[7:] + ".json" not in store_state()["configs"]


def test_load_of_what_is_no_image_archive_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "x.tar"
    path.write_bytes(archive(("hello", "file", "x")))
    assert_one_line_error(hako("load", "-i", str(path), check=False), "neither an OCI image archive")
    assert_one_line_error(hako("load", "-i", str(tmp_path / "missing.tar"), check=False), "no such file")
    assert tmp_entries() == []


# Hostile archives: nothing read without bound, nothing followed out ------------------------
# A load that reads without bound never ends: these ask for a quick answer.
QUICK = 30


def _small_layout(path: Path, name: str) -> tuple[Path, dict, dict]:
    """A layout of a one-layer image named ``name``: the layout, its manifest and the index's descriptor."""
    layout = _new_layout(path)
    descriptor, _ = _image(layout, [archive(("a", "file", "a"))])
    _write_index(layout, [{**descriptor, "annotations": {"org.opencontainers.image.ref.name": name}}])
    manifest = json.loads((layout / "blobs" / descriptor["digest"].replace(":", "/")).read_text())
    return layout, manifest, descriptor


def _blob_path(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest[7:]


def _refused(images, source: Path, name: str, *words: str) -> None:
    images.append(name)
    before = store_state()
    result = hako("load", "-i", str(source), check=False, timeout=QUICK)
    assert_one_line_error(result, *words)
    assert not has_image(name)
    assert store_state() == before
    assert tmp_entries() == []


def _link_to_zero(blob: Path, outside: Path) -> None:
    blob.unlink()
    blob.symlink_to("/dev/zero")


def _char_device(blob: Path, outside: Path) -> None:
    blob.unlink()
    os.mknod(blob, stat.S_IFCHR | 0o644, os.makedev(1, 5))  # what /dev/zero is


def _fifo(blob: Path, outside: Path) -> None:
    blob.unlink()
    os.mkfifo(blob)


def _relative_link_out(blob: Path, outside: Path) -> None:
    shutil.move(blob, outside / blob.name)
    blob.symlink_to(os.path.relpath(outside / blob.name, blob.parent))


def _directory_link_out(blob: Path, outside: Path) -> None:
    # The blob itself is a regular file, reached through blobs/sha256 -> a directory outside.
    sha256 = blob.parent
    moved = outside / "sha256"
    shutil.move(sha256, moved)
    sha256.symlink_to(moved)


BAD_BLOBS = {
    "link-to-dev-zero": (_link_to_zero, "out of the layout"),
    "char-device": (_char_device, "not a regular file"),
    "fifo": (_fifo, "not a regular file"),
    "relative-link-out": (_relative_link_out, "out of the layout"),
    "directory-link-out": (_directory_link_out, "out of the layout"),
}


@pytest.mark.parametrize("kind", sorted(BAD_BLOBS))
def test_load_refuses_a_layout_blob_that_is_no_file_of_the_layout(tmp_path, outside, images, kind) -> None:
    layout, manifest, _ = _small_layout(tmp_path / "layout", f"archtest/blob-{kind}:1")
    damage, words = BAD_BLOBS[kind]
    damage(_blob_path(layout, manifest["layers"][0]["digest"]), outside)
    _refused(images, layout, f"archtest/blob-{kind}:1", words)
    assert (outside / "precious").read_text() == "keep me"


def test_load_follows_a_link_that_stays_in_the_layout(tmp_path, images) -> None:
    layout, manifest, _ = _small_layout(tmp_path / "layout", "archtest/inlink:1")
    blob = _blob_path(layout, manifest["layers"][0]["digest"])
    (layout / "kept").mkdir()
    shutil.move(blob, layout / "kept" / "layer")
    blob.symlink_to("../../kept/layer")
    images.append("archtest/inlink:1")
    assert hako("load", "-i", str(layout), timeout=QUICK).stdout == "Loaded image: archtest/inlink:1\n"
    assert tmp_entries() == []


SIZES = {
    "layer-short": ("layer", lambda size: size - 1, "bytes"),
    "layer-long": ("layer", lambda size: size + 1, "bytes"),
    "layer-huge": ("layer", lambda size: 10**15, "bytes"),
    "layer-negative": ("layer", lambda size: -1, "size"),
    "layer-text": ("layer", str, "size"),
    "layer-float": ("layer", float, "size"),
    "layer-bool": ("layer", lambda size: True, "size"),
    "layer-missing": ("layer", lambda size: None, "size"),
    "config-short": ("config", lambda size: size - 1, "bytes"),
    "config-text": ("config", str, "size"),
    "manifest-short": ("manifest", lambda size: size - 1, "bytes"),
    "manifest-huge": ("manifest", lambda size: 10**15, "bytes"),
    "manifest-negative": ("manifest", lambda size: -5, "size"),
}


def _set_size(descriptor: dict, change) -> None:
    size = change(descriptor["size"])
    if size is None:
        del descriptor["size"]
    else:
        descriptor["size"] = size


@pytest.mark.parametrize("form", ["layout", "archive"])
@pytest.mark.parametrize("case", sorted(SIZES))
def test_load_refuses_a_blob_whose_size_is_not_its_descriptors(tmp_path, images, case, form) -> None:
    name = "archtest/size:1"
    layout, manifest, descriptor = _small_layout(tmp_path / "layout", name)
    which, change, words = SIZES[case]
    if which == "manifest":
        _set_size(descriptor, change)
    else:
        _set_size(manifest["layers"][0] if which == "layer" else manifest["config"], change)
        descriptor.update(_blob(layout, json.dumps(manifest).encode()))
    _write_index(layout, [{**descriptor, "annotations": {"org.opencontainers.image.ref.name": name}}])
    source = layout
    if form == "archive":
        source = tmp_path / "image.tar"
        source.write_bytes(tar_of(layout))
    _refused(images, source, name, words)


def _docker_archive(
    members: list[tuple[tarfile.TarInfo, bytes]], config: bytes, layers: list[str], **entry
) -> bytes:
    """A docker-save archive: manifest.json (its one entry changed by ``entry``), c.json and ``members``."""
    manifest = [{"Config": "c.json", "RepoTags": ["archtest/d:1"], "Layers": layers, **entry}]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("manifest.json", json.dumps(manifest).encode()), ("c.json", config)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info, data in members:
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _member(name: str, data: bytes = b"", **attributes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in attributes.items():
        setattr(info, key, value)
    return info, data


def _config_of(layers: list[bytes]) -> dict:
    return {
        "architecture": ARCH,
        "os": "linux",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(d).hexdigest() for d in layers]},
    }


@pytest.mark.parametrize("how", ["none", "gzip"])
def test_load_refuses_a_sparse_member_of_a_docker_archive(tmp_path, images, how) -> None:
    # A sparse member stores no bytes and stands for a petabyte of zeros.
    layer = archive(("a", "file", "a"))
    sparse = _member("0123/layer.tar", pax_headers={"GNU.sparse.map": "0,0", "GNU.sparse.size": str(10**15)})
    data = _docker_archive([sparse], json.dumps(_config_of([layer])).encode(), ["0123/layer.tar"])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.getmember("0123/layer.tar").issparse()
    path = tmp_path / "sparse.tar"
    path.write_bytes(compress(data, how))
    _refused(images, path, "archtest/d:1", "0123/layer.tar", "sparse")


def test_load_refuses_a_member_larger_than_its_archive(tmp_path, images) -> None:
    layer = archive(("a", "file", "a"))
    long = _member("0123/layer.tar", layer, pax_headers={"size": str(10**12)})
    path = tmp_path / "long.tar"
    path.write_bytes(_docker_archive([long], json.dumps(_config_of([layer])).encode(), ["0123/layer.tar"]))
    _refused(images, path, "archtest/d:1", "0123/layer.tar", "more than the archive holds")


def test_load_of_a_docker_archive_with_a_linked_layer(tmp_path, images) -> None:
    # docker save (before Docker 25) links a layer that is there twice to one copy.
    layer = archive(("a", "file", "a"))
    members = [
        _member("1/layer.tar", type=tarfile.SYMTYPE, linkname="../2/layer.tar"),
        _member("2/layer.tar", layer),
    ]
    config = json.dumps(_config_of([layer, layer])).encode()
    path = tmp_path / "twice.tar"
    path.write_bytes(_docker_archive(members, config, ["1/layer.tar", "2/layer.tar"]))
    images.append("archtest/d:1")
    assert hako("load", "-i", str(path), timeout=QUICK).stdout == "Loaded image: archtest/d:1\n"
    assert tmp_entries() == []


# Documents of the wrong shape: one line that names the file, no traceback --------------------
def _utf16_config(layout: Path, manifest: dict) -> None:
    config = json.loads(_blob_path(layout, manifest["config"]["digest"]).read_text())
    manifest["config"].update(_blob(layout, json.dumps(config).encode("utf-16")))


def _config_list(layout: Path, manifest: dict) -> None:
    manifest["config"].update(_blob(layout, b"[1, 2]"))


def _config_not_an_object(layout: Path, manifest: dict) -> None:
    config = json.loads(_blob_path(layout, manifest["config"]["digest"]).read_text())
    config["config"] = ["sh"]
    manifest["config"].update(_blob(layout, json.dumps(config).encode()))


def _digest_number(layout: Path, manifest: dict) -> None:
    manifest["layers"][0]["digest"] = 123


def _config_missing(layout: Path, manifest: dict) -> None:
    del manifest["config"]


def _layers_object(layout: Path, manifest: dict) -> None:
    manifest["layers"] = {"0": manifest["layers"][0]}


BAD_MANIFESTS = {
    "config-utf16": (_utf16_config, "UTF-8"),
    "config-list": (_config_list, "not an image config"),
    "config-config-list": (_config_not_an_object, "not an image config"),
    "layer-digest-number": (_digest_number, "123"),
    "config-missing": (_config_missing, "config"),
    "layers-object": (_layers_object, "layers"),
}


@pytest.mark.parametrize("kind", sorted(BAD_MANIFESTS))
def test_load_refuses_a_manifest_or_config_of_the_wrong_shape(tmp_path, images, kind) -> None:
    name = f"archtest/shape-{kind}:1"
    layout, manifest, descriptor = _small_layout(tmp_path / "layout", name)
    change, words = BAD_MANIFESTS[kind]
    change(layout, manifest)
    descriptor.update(_blob(layout, json.dumps(manifest).encode()))
    _write_index(layout, [{**descriptor, "annotations": {"org.opencontainers.image.ref.name": name}}])
    _refused(images, layout, name, words)


BAD_DOCUMENTS = {
    "index-list": ("index.json", b"[]", "index.json"),
    "index-deep": ("index.json", b'{"manifests": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "index.json"),
    "index-latin1": ("index.json", '{"manifests": [], "x": "\u00e9"}'.encode("latin-1"), "UTF-8"),
    "index-digest-number": (
        "index.json",
        json.dumps({"manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": 5}]}),
        "5",
    ),
    "layout-list": ("oci-layout", b"[]", "oci-layout"),
}


@pytest.mark.parametrize("kind", sorted(BAD_DOCUMENTS))
def test_load_refuses_an_index_of_the_wrong_shape(tmp_path, images, kind) -> None:
    name = f"archtest/index-{kind}:1"
    layout, _, _ = _small_layout(tmp_path / "layout", name)
    file, content, words = BAD_DOCUMENTS[kind]
    (layout / file).write_bytes(content if isinstance(content, bytes) else content.encode())
    _refused(images, layout, name, file, words)


DOCKER_ENTRIES = {
    "repotags-number": ({"RepoTags": 5}, "RepoTags"),
    "repotags-text": ({"RepoTags": "archtest/d:1"}, "RepoTags"),
    "repotags-numbers": ({"RepoTags": [1, 2]}, "RepoTags"),
    "layers-number": ({"Layers": 5}, "Layers"),
    "config-number": ({"Config": 5}, "Config"),
}


@pytest.mark.parametrize("kind", sorted(DOCKER_ENTRIES))
def test_load_refuses_a_docker_manifest_of_the_wrong_shape(tmp_path, images, kind) -> None:
    layer = archive(("a", "file", "a"))
    change, word = DOCKER_ENTRIES[kind]
    config = json.dumps(_config_of([layer])).encode()
    path = tmp_path / "docker.tar"
    path.write_bytes(
        _docker_archive([_member("0123/layer.tar", layer)], config, ["0123/layer.tar"], **change)
    )
    _refused(images, path, "archtest/d:1", "manifest.json", word)


@pytest.mark.parametrize("kind", sorted(DOCKER_ENTRIES))
def test_a_docker_manifest_of_the_wrong_shape_beside_an_oci_index_is_ignored(tmp_path, images, kind) -> None:
    # The OCI index names the images; Docker's manifest.json only adds names, if it can.
    layout, manifest, _ = _small_layout(tmp_path / "layout", "archtest/both:1")
    entry = {
        "Config": "blobs/sha256/" + manifest["config"]["digest"][7:],
        "RepoTags": ["archtest/both:2"],
        "Layers": ["blobs/sha256/" + manifest["layers"][0]["digest"][7:]],
        **DOCKER_ENTRIES[kind][0],
    }
    (layout / "manifest.json").write_text(json.dumps([entry]))
    images.append("archtest/both:1")
    assert hako("load", "-i", str(layout), timeout=QUICK).stdout == "Loaded image: archtest/both:1\n"
    assert tmp_entries() == []


# Save ---------------------------------------------------------------------------
def test_save_is_a_valid_oci_archive_that_loads_back_the_same_image(tmp_path, images, rootfs_tarball) -> None:
    source = tmp_path / "rootfs.tar.gz"
    source.write_bytes(gzip.compress(rootfs_tarball))
    images.append("archtest/saved:1")
    saved_id = hako("import", str(source), "archtest/saved:1", "-c", "CMD cat /lab/hello").stdout.strip()
    out = tmp_path / "saved.tar"
    hako("image", "save", "archtest/saved:1", "-o", str(out))
    with tarfile.open(out) as tar:
        names = tar.getnames()
        assert names[:5] == ["oci-layout", "index.json", "manifest.json", "blobs", "blobs/sha256"]
        assert names[5:] == sorted(names[5:])
        index = json.load(tar.extractfile("index.json"))
        docker = json.load(tar.extractfile("manifest.json"))
        tar.extractall(tmp_path / "layout")
    [entry] = index["manifests"]
    assert entry["annotations"] == {
        "org.opencontainers.image.ref.name": "archtest/saved:1",
        "io.containerd.image.name": "docker.io/archtest/saved:1",
    }
    assert (
        docker[0]["RepoTags"] == ["archtest/saved:1"]
        and docker[0]["Config"] == "blobs/sha256/" + saved_id[7:]
    )
    # The layer blob is the store's, byte for byte.
    layer = json.loads((tmp_path / "layout" / "blobs" / entry["digest"].replace(":", "/")).read_text())[
        "layers"
    ][0]
    assert layer["digest"] == "sha256:" + hashlib.sha256(source.read_bytes()).hexdigest()
    # The peers accept it.
    subprocess.run(["oci-image-tool", "validate", "--type", "image", str(tmp_path / "layout")], check=True)
    bundle = tmp_path / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--image", f"{tmp_path / 'layout'}:archtest/saved:1", str(bundle)], check=True
    )
    assert (bundle / "rootfs" / "lab" / "hello").read_text() == "hello from the tarball\n"
    inspect = json.loads(
        subprocess.run(["skopeo", "inspect", f"oci-archive:{out}"], check=True, capture_output=True).stdout
    )
    assert inspect["Digest"] == entry["digest"] and inspect["Layers"] == [layer["digest"]]
    # Saved again, to standard output: the same bytes.
    with open(tmp_path / "again.tar", "wb") as f:
        subprocess.run([*HAKO, "save", "archtest/saved:1"], stdout=f, check=True)
    assert (tmp_path / "again.tar").read_bytes() == out.read_bytes()
    # And back: the same image ID, and it runs.
    hako("image", "rm", "archtest/saved:1")
    assert hako("load", "-i", str(out)).stdout == "Loaded image: archtest/saved:1\n"
    assert image_id("archtest/saved:1") == saved_id
    assert hako("run", "--rm", "archtest/saved:1").stdout == "hello from the tarball\n"


def test_save_of_several_images_loads_into_podman(tmp_path, images, layered) -> None:
    images.append("archtest/layered:oci")
    hako("load", "-i", str(layered["oci"]))
    out = tmp_path / "two.tar"
    hako("save", "-o", str(out), "busybox", "archtest/layered:oci")
    with tarfile.open(out) as tar:
        index = json.load(tar.extractfile("index.json"))
    names = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
    assert names == ["busybox:latest", "archtest/layered:oci"]
    # podman load takes it (it reads Docker's manifest.json), with the same image IDs.
    conf = tmp_path / "containers.conf"
    conf.write_text('[engine]\ncgroup_manager="cgroupfs"\nevents_logger="file"\n[containers]\nnetns="none"\n')
    # Podman wants a short runroot (at most 50 characters).
    short = tempfile.mkdtemp(prefix="hako-podman-", dir="/tmp")
    podman = ["podman", "--root", f"{short}/root", "--runroot", f"{short}/run", "--storage-driver", "vfs"]
    env = dict(os.environ, CONTAINERS_CONF=str(conf))
    try:
        loaded = subprocess.run(
            [*podman, "load", "-q", "-i", str(out)], env=env, capture_output=True, timeout=120
        )
        assert loaded.returncode == 0, loaded.stderr
        listed = subprocess.run(
            [*podman, "images", "--no-trunc", "--format", "{{.ID}}"],
            check=True,
            env=env,
            capture_output=True,
            text=True,
        ).stdout.split()
    finally:
        shutil.rmtree(short, ignore_errors=True)
    assert sorted(i.removeprefix("sha256:") for i in listed) == sorted(
        [image_id("busybox")[7:], image_id("archtest/layered:oci")[7:]]
    )


def test_save_to_a_terminal_or_of_a_missing_image_is_refused(tmp_path, terminal) -> None:
    result = hako("save", "archtest/none:1", "-o", str(tmp_path / "x.tar"), check=False)
    assert_one_line_error(result, "no such image")
    assert list(tmp_path.iterdir()) == []
    t = terminal("save", "busybox")
    t.expect("terminal")
    assert t.wait() == 125


def test_save_writes_into_a_device_and_through_a_link(tmp_path) -> None:
    hako("save", "busybox", "-o", "/dev/null")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    (tmp_path / "link.tar").symlink_to("real.tar")
    hako("save", "busybox", "-o", str(tmp_path / "link.tar"))
    assert (tmp_path / "link.tar").is_symlink()
    with tarfile.open(tmp_path / "real.tar") as tar:
        assert "index.json" in tar.getnames()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.tar", "real.tar"]


# Export -------------------------------------------------------------------------
def _tar_view(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return {m.name: m for m in tar.getmembers()}


def _file_in(path: Path, name: str) -> str:
    with tarfile.open(path) as tar:
        return tar.extractfile(name).read().decode()


CHANGE = "echo changed > /etc/hostname; rm /bin/vi; mkdir /new; echo new > /new/file"


def test_export_of_a_stopped_container_shows_its_changes(tmp_path, containers) -> None:
    containers.append("archtest-export")
    hako("run", "--name", "archtest-export", "busybox", "sh", "-c", CHANGE)
    out = tmp_path / "fs.tar"
    hako("export", "archtest-export", "-o", str(out))
    view = _tar_view(out)
    assert _file_in(out, "etc/hostname") == "changed\n"
    assert _file_in(out, "new/file") == "new\n"
    assert "bin/vi" not in view and "bin/busybox" in view and "bin/sh" in view
    assert not any(m.ischr() or m.isblk() for m in view.values())
    assert tmp_entries() == []


def test_export_of_a_running_container_to_stdout(tmp_path, run_detached) -> None:
    name, _ = run_detached("busybox", "sleep", "600")
    hako("exec", name, "sh", "-c", CHANGE)
    out = tmp_path / "fs.tar"
    with open(out, "wb") as f:
        subprocess.run([*HAKO, "export", name], stdout=f, check=True)
    view = _tar_view(out)
    assert _file_in(out, "etc/hostname") == "changed\n" and "new/file" in view
    assert "bin/vi" not in view
    assert tmp_entries() == []


def _mounts_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/mountinfo") as f:
            return f.read()
    except OSError:
        return ""


def test_an_export_killed_midway_leaves_no_mount(containers) -> None:
    containers.append("archtest-killed")
    hako("run", "--name", "archtest-killed", "busybox", "true")
    # Nobody reads the pipe: the export blocks, its overlay mounted, once the pipe is full.
    read_end, write_end = os.pipe()
    proc = subprocess.Popen([*HAKO, "export", "archtest-killed"], stdout=write_end, stderr=subprocess.DEVNULL)
    os.close(write_end)
    try:

        def child_with_mount():
            try:
                with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
                    children = [int(c) for c in f.read().split()]
            except OSError:
                return None
            return next((c for c in children if "export-" in _mounts_of(c)), None)

        child = wait_for(child_with_mount)
        staged = next(line.split()[4] for line in _mounts_of(child).splitlines() if "export-" in line)
        assert staged not in _mounts_of(os.getpid())  # the mount is the child's alone
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        wait_for(lambda: not os.path.exists(f"/proc/{child}"))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(read_end)
    holders = [p for p in os.listdir("/proc") if p.isdigit() and staged in _mounts_of(int(p))]
    assert holders == []
    hako("save", "busybox", "-o", "/dev/null")  # the next writer clears what the killed one staged
    assert tmp_entries() == []


def test_export_undoes_a_user_namespace_shift(tmp_path, containers) -> None:
    containers.append("archtest-userns")
    script = "echo hi > /root/f; chown 1000:1000 /root/f"
    hako("run", "--name", "archtest-userns", "--userns", "auto", "busybox", "sh", "-c", script)
    out = tmp_path / "fs.tar"
    hako("export", "-o", str(out), "archtest-userns")
    view = _tar_view(out)
    assert (view["root/f"].uid, view["root/f"].gid) == (1000, 1000)
    assert (view["etc/passwd"].uid, view["bin/busybox"].uid, view["root"].uid) == (0, 0, 0)


def test_export_of_a_missing_container_is_a_clear_error(tmp_path) -> None:
    result = hako("export", "archtest-no-such", "-o", str(tmp_path / "fs.tar"), check=False)
    assert_one_line_error(result, "no such container: archtest-no-such")
    assert list(tmp_path.iterdir()) == []


# Output -------------------------------------------------------------------------
def test_output_never_writes_through_a_link_at_its_temporary_name(tmp_path) -> None:
    from hako.images import archive as archives

    victim = tmp_path / "victim"
    victim.write_text("keep me")
    target = tmp_path / "out.tar"
    # The name a temporary file next to the target once had: predictable by anyone who can write there.
    (tmp_path / f".out.tar.{os.getpid()}.tmp").symlink_to(victim)
    with archives.output(str(target)) as f:
        f.write(b"the archive")
    assert victim.read_text() == "keep me"
    assert not target.is_symlink() and target.read_bytes() == b"the archive"
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".out.tar.{os.getpid()}.tmp", "out.tar", "victim"]


def test_output_leaves_nothing_when_writing_fails(tmp_path) -> None:
    from hako.images import archive as archives

    target = tmp_path / "out.tar"
    with pytest.raises(RuntimeError), archives.output(str(target)) as f:
        f.write(b"half")
        raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "old.tar").write_bytes(b"old")
    with pytest.raises(RuntimeError), archives.output(str(tmp_path / "old.tar")) as f:
        raise RuntimeError("stop")
    assert [p.name for p in tmp_path.iterdir()] == ["old.tar"] and (
        tmp_path / "old.tar"
    ).read_bytes() == b"old"
