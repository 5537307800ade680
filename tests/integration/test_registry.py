"""Pulling and pushing over the Registry HTTP API v2, against a real docker-registry on 127.0.0.1.

Images get into the registry with skopeo, from OCI layouts written here; what
hako pushes is read back by skopeo and podman. Authentication is tried with
htpasswd (Basic, with and without TLS) and with a token service of the
test's own. Answers no real registry gives (odd JSON, escape codes, a
Location in plain HTTP, a transfer that stalls) come from a scripted registry
of the test's own. Everything (registries, temporary directories, podman's
storage, hako images) is removed after each test or module, also after a
failure.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import http.client
import io
import json
import lzma
import os
import re
import shutil
import signal
import stat
import subprocess
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hako.images.registry import host_platform
from hako.images.store import ImageStore

from ..conftest import HAKO, hako
from .registry_server import (
    INDEX_OCI,
    FrontServer,
    Layout,
    Registry,
    ScriptedRegistry,
    TokenServer,
    free_port,
    make_certificate,
    run,
    skopeo_copy,
    tar_layer,
)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(
        not all(shutil.which(t) for t in ("docker-registry", "skopeo", "openssl", "htpasswd")),
        reason="needs docker-registry, skopeo, openssl and htpasswd (scripts/setup installs them)",
    ),
]

HOST_ARCH = host_platform()[1]
SKOPEO_PLAIN = ("--dest-tls-verify=false",)
# (What skopeo and podman make outside the directories given to them is
# removed at the end of the session: conftest.py, no_peer_leftovers.)


def _tempdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="hako-registry-test-", dir="/var/tmp"))


@pytest.fixture
def workdir():
    path = _tempdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def private_env(workdir):
    """An environment with a HAKO_ROOT of the test's own (pull mechanics, credentials)."""
    return {**os.environ, "HAKO_ROOT": str(workdir / "hako-root")}


@pytest.fixture
def pulled():
    """Images a test pulls into the session's store; removed when it ends."""
    names: list[str] = []
    yield names
    for name in names:
        hako("rmi", "-f", name, check=False)


@pytest.fixture(scope="module")
def busybox_blob(hako_env) -> bytes:
    """The gzipped layer of the session's busybox image: a base that runs here."""
    images = ImageStore(hako_env["root"])
    info = images.layer_info(images.get("busybox:latest").diff_ids()[0])
    return Path(images.blob_path(info["digest"])).read_bytes()


@pytest.fixture(scope="module")
def registry(busybox_blob):
    """An open registry holding test/hello:1 and test/multi:oci / test/multi:docker (three platforms)."""
    base = _tempdir()
    reg = Registry(base / "registry")
    try:
        reg.start()
        layout = Layout(base / "layout")
        bottom = layout.gzipped_layer(busybox_blob)
        hello = layout.layer(tar_layer({"etc/": None, "etc/hello.txt": "hello from the registry\n"}))
        layout.tag(layout.image([bottom, hello], HOST_ARCH), "hello")
        platforms = []
        for arch, variant in (("amd64", None), ("arm64", "v8"), ("s390x", None)):
            top = layout.layer(tar_layer({"etc/": None, "etc/arch.txt": f"made for {arch}\n"}))
            platforms.append(layout.image([bottom, top], arch, variant))
        layout.tag(layout.index(platforms), "multi")
        skopeo_copy(layout, "hello", f"{reg.host}/test/hello:1", *SKOPEO_PLAIN)
        skopeo_copy(layout, "multi", f"{reg.host}/test/multi:oci", *SKOPEO_PLAIN, "--all")
        skopeo_copy(
            layout, "multi", f"{reg.host}/test/multi:docker", *SKOPEO_PLAIN, "--all", "--format", "v2s2"
        )
        yield reg
    finally:
        reg.stop()
        shutil.rmtree(base, ignore_errors=True)


def remote_digest(reference: str, *options: str) -> str:
    """The digest of the manifest a reference names in the registry (as skopeo reads it)."""
    raw = run("skopeo", "inspect", "--raw", *options, f"docker://{reference}", text=False).stdout
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def error_line(result) -> str:
    """The one line hako's error is; progress lines may come before it."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("hako:")]
    assert len(lines) == 1, result.stderr
    assert result.stderr.rstrip("\n").splitlines()[-1] == lines[0], result.stderr
    return lines[0]


def files_below(path: Path) -> list[str]:
    return (
        sorted(str(p.relative_to(path)) for p in path.rglob("*") if not p.is_dir()) if path.exists() else []
    )


# Pulling -------------------------------------------------------------------------------
def test_a_pulled_image_runs(registry, pulled) -> None:
    name = f"{registry.host}/test/hello:1"
    pulled.append(name)
    result = hako("pull", "--insecure", name)
    assert result.stdout.strip() == name
    assert "Pull complete" in result.stderr
    assert f"Digest: {remote_digest(name, '--tls-verify=false')}" in result.stderr
    assert hako("run", "--rm", name, "cat", "/etc/hello.txt").stdout == "hello from the registry\n"
    info = json.loads(hako("image", "inspect", name).stdout)[0]
    assert info["RepoTags"] == [name]
    assert info["RepoDigests"] == [f"{registry.host}/test/hello@{remote_digest(name, '--tls-verify=false')}"]


def test_a_second_pull_finds_every_layer_in_place(registry, pulled) -> None:
    name = f"{registry.host}/test/hello:1"
    pulled.append(name)
    hako("pull", "--insecure", name)
    again = hako("pull", "--insecure", name)
    assert again.stderr.count("Already exists") == 2, again.stderr
    assert "Pull complete" not in again.stderr
    assert f"Status: Image is up to date for {name}" in again.stderr


@pytest.mark.parametrize("kind", ["oci", "docker"])
def test_a_multi_platform_image_gives_the_hosts_own(registry, pulled, kind) -> None:
    name = f"{registry.host}/test/multi:{kind}"
    pulled.append(name)
    hako("pull", "--insecure", name)
    assert hako("run", "--rm", name, "cat", "/etc/arch.txt").stdout == f"made for {HOST_ARCH}\n"
    # The repo digest is the index's (as Docker records it), not the platform manifest's.
    info = json.loads(hako("image", "inspect", name).stdout)[0]
    pulled.append(info["Id"])  # untagged by the next pull, not gone
    assert info["RepoDigests"] == [f"{registry.host}/test/multi@{remote_digest(name, '--tls-verify=false')}"]
    assert info["architecture"] == HOST_ARCH
    other = "s390x"
    hako("pull", "--insecure", "--platform", f"linux/{other}", name)
    assert json.loads(hako("image", "inspect", name).stdout)[0]["architecture"] == other


def test_no_platform_that_fits_is_a_clear_error(registry, private_env) -> None:
    name = f"{registry.host}/test/multi:oci"
    result = hako("pull", "--insecure", "--platform", "linux/riscv64", name, check=False, env=private_env)
    assert result.returncode == 125
    line = error_line(result)
    assert "no image for linux/riscv64" in line
    assert "linux/amd64, linux/arm64/v8, linux/s390x" in line
    assert files_below(Path(private_env["HAKO_ROOT"], "images", "layers")) == []


def test_pull_by_digest(registry, pulled) -> None:
    digest = remote_digest(f"{registry.host}/test/hello:1", "--tls-verify=false")
    name = f"{registry.host}/test/hello@{digest}"
    pulled.append(name)
    result = hako("pull", "--insecure", name)
    assert result.stdout.strip() == name
    assert hako("run", "--rm", name, "cat", "/etc/hello.txt").stdout == "hello from the registry\n"
    # A pull by digest tags nothing.
    assert f"{registry.host}/test/hello" not in hako("images").stdout
    missing = f"{registry.host}/test/hello@sha256:{'0' * 64}"
    result = hako("pull", "--insecure", missing, check=False)
    assert result.returncode == 125
    assert "no such manifest" in error_line(result)


def test_pull_refuses_bad_input_in_one_line(registry, private_env) -> None:
    cases = [
        (["pull", "Not/Valid"], "invalid value for image: 'Not/Valid'"),
        (["pull", f"{registry.host}/test/hello@sha256:123"], "sha256: and 64 hex digits"),
        (
            ["pull", "--platform", "amd64", f"{registry.host}/test/hello:1"],
            "invalid value for platform: 'amd64'",
        ),
        (["pull", "--creds", "alice", f"{registry.host}/test/hello:1"], "invalid value for creds"),
        (["pull", "--insecure", f"{registry.host}/test/nothing:1"], "no such manifest"),
        # Plain HTTP only when asked for.
        (["pull", f"{registry.host}/test/hello:1"], "if the registry serves plain HTTP, use --insecure"),
        (["pull", "--insecure", f"127.0.0.1:{free_port()}/test/hello:1"], "connection refused"),
        (["push", "--insecure", "no-such-image:1"], "no such image"),
        (["push", "--insecure", "busybox", f"{registry.host}/test/x@sha256:{'1' * 64}"], "not to a digest"),
        (["logout", "127.0.0.1:1"], "not logged in to 127.0.0.1:1"),
        (["login", "-u", "alice", "--password-stdin", "https://x/y/z"], "invalid value for registry"),
    ]
    for argv, expected in cases:
        result = hako(*argv, check=False, env=private_env, input="pw\n")
        assert result.returncode == 125, (argv, result.stderr)
        line = error_line(result)
        assert expected in line, (argv, line)
        assert "alice:" not in line
    env = {**private_env, "HAKO_MAX_CONCURRENT_TRANSFERS": "0"}
    result = hako("pull", "--insecure", f"{registry.host}/test/hello:1", check=False, env=env)
    assert "invalid value for HAKO_MAX_CONCURRENT_TRANSFERS: '0'" in error_line(result)
    images = Path(private_env["HAKO_ROOT"], "images")
    assert files_below(images / "layers") == [] and files_below(images / "configs") == []
    assert files_below(images / "tmp") == []


def test_a_schema1_manifest_is_refused(busybox_blob, workdir, private_env) -> None:
    # docker-registry 2.8 takes schema 1 manifests only when told to.
    reg = Registry(workdir / "registry", extra="compatibility:\n  schema1:\n    enabled: true\n")
    try:
        reg.start()
        layout = Layout(workdir / "layout")
        layout.tag(layout.image([layout.gzipped_layer(busybox_blob)], HOST_ARCH), "old")
        skopeo_copy(layout, "old", f"{reg.host}/test/old:1", *SKOPEO_PLAIN, "--format", "v2s1")
        result = hako("pull", "--insecure", f"{reg.host}/test/old:1", check=False, env=private_env)
        assert result.returncode == 125
        assert "schema 1" in error_line(result)
    finally:
        reg.stop()


# Damaged and interrupted downloads -------------------------------------------------------
@pytest.mark.parametrize("damage", ["blob", "diff_id"])
def test_damaged_content_is_refused_and_nothing_is_kept(busybox_blob, workdir, private_env, damage) -> None:
    """A blob whose bytes do not match its digest, or a layer whose tar does not match the config."""
    reg = Registry(workdir / "registry")
    try:
        reg.start()
        layout = Layout(workdir / "layout")
        good = layout.layer(tar_layer({"good.bin": os.urandom(200_000)}))
        bad = layout.layer(tar_layer({"bad.bin": os.urandom(200_000)}))
        if damage == "diff_id":
            bad = (bad[0], "sha256:" + "ab" * 32)
        layout.tag(layout.image([layout.gzipped_layer(busybox_blob), good, bad], HOST_ARCH), "d")
        skopeo_copy(layout, "d", f"{reg.host}/test/damaged:1", *SKOPEO_PLAIN)
        if damage == "blob":
            data = reg.blob_data(bad[0]["digest"])
            size = data.stat().st_size
            data.write_bytes(os.urandom(size))
        # One layer at a time, in order: the first two are unpacked when the third is refused.
        env = {**private_env, "HAKO_MAX_CONCURRENT_TRANSFERS": "1"}
        result = hako("pull", "--insecure", f"{reg.host}/test/damaged:1", check=False, env=env)
        assert result.returncode == 125
        assert result.stderr.count("Pull complete") == 2
        line = error_line(result)
        assert "refused" in line and (bad[0]["digest"] if damage == "blob" else bad[1]) in line, line
        # Not even the layers that were fine (the busybox one, good.bin's) are kept.
        images = Path(private_env["HAKO_ROOT"], "images")
        assert files_below(images / "configs") == []
        assert files_below(images / "layers") == []
        assert files_below(images / "blobs") == []
        assert files_below(images / "tmp") == []
        assert not (images / "tags.json").exists() or json.loads((images / "tags.json").read_text()) == {}
    finally:
        reg.stop()


def _statuses(registry: Registry, digest: str) -> list[int]:
    """The HTTP statuses of the registry's answers to GETs of one blob, in order."""
    found = []
    for line in registry.access_log():
        match = re.search(r'"GET /v2/\S+/blobs/(\S+) HTTP/1.1" (\d+)', line)
        if match and match.group(1) == digest:
            found.append(int(match.group(2)))
    return found


def test_partial_downloads_are_resumed_or_started_again(registry, workdir, private_env) -> None:
    """A correct partial download is resumed with a Range request; a wrong one is discarded."""
    layout = Layout(workdir / "layout")
    payload_a, payload_b = os.urandom(300_000), os.urandom(300_000)
    a = layout.layer(tar_layer({"a.bin": payload_a}))
    b = layout.layer(tar_layer({"b.bin": payload_b}))
    layout.tag(layout.image([a, b], HOST_ARCH), "r")
    name = f"{registry.host}/test/resume:1"
    skopeo_copy(layout, "r", name, *SKOPEO_PLAIN)
    partial = Path(private_env["HAKO_ROOT"], "images", "tmp", "partial")
    partial.mkdir(parents=True)
    blob_a = (layout.path / "blobs" / "sha256" / a[0]["digest"][7:]).read_bytes()
    (partial / a[0]["digest"][7:]).write_bytes(blob_a[: len(blob_a) // 2])
    (partial / b[0]["digest"][7:]).write_bytes(b"\0" * (b[0]["size"] // 2))

    result = hako("pull", "--insecure", name, env=private_env)
    assert result.stderr.count("Resuming download") == 2
    assert "damaged: downloading it again" in result.stderr
    assert _statuses(registry, a[0]["digest"]) == [206]
    assert _statuses(registry, b[0]["digest"]) == [206, 200]
    images = ImageStore(private_env["HAKO_ROOT"])
    assert (Path(images.layer_dir(a[1])) / "a.bin").read_bytes() == payload_a
    assert (Path(images.layer_dir(b[1])) / "b.bin").read_bytes() == payload_b
    assert files_below(Path(images.root) / "tmp") == []


def test_redirects_drop_credentials_and_cut_transfers_resume(registry, workdir, private_env) -> None:
    """Blobs behind a redirect to another host get no Authorization; a cut-off transfer goes on."""
    layout = Layout(workdir / "layout")
    payload = os.urandom(400_000)
    layer = layout.layer(tar_layer({"big.bin": payload}))
    layout.tag(layout.image([layer], HOST_ARCH), "f")
    skopeo_copy(layout, "f", f"{registry.host}/test/front:1", *SKOPEO_PLAIN)
    front = FrontServer(registry, "alice", "s3cret").start()
    port = front.port
    try:
        name = f"{front.host}/test/front:1"
        refused = hako("pull", "--insecure", name, check=False, env=private_env)
        assert "authentication required: hako login" in error_line(refused)
        hako("pull", "--insecure", "--creds", "alice:s3cret", name, env=private_env)
    finally:
        front.stop()
    layer_requests = [r for r in front.seen if r["digest"] == layer[0]["digest"]]
    # Cut after half: the second request asks for the rest.
    assert [r["range"] for r in layer_requests][0] is None
    assert re.fullmatch(r"bytes=\d+-", layer_requests[1]["range"] or "")
    assert all(r["host"] == f"localhost:{port}" for r in front.seen)
    assert all(r["authorization"] is None for r in front.seen)
    images = ImageStore(private_env["HAKO_ROOT"])
    assert (Path(images.layer_dir(layer[1])) / "big.bin").read_bytes() == payload


# Pushing ---------------------------------------------------------------------------------
@contextlib.contextmanager
def podman():
    """Podman with its own storage (vfs) and configuration; all of it removed afterwards."""
    # A short path: podman wants a runroot of at most 50 characters.
    base = Path(tempfile.mkdtemp(prefix="hako-podman-", dir="/tmp"))
    (base / "tmp").mkdir()
    conf = base / "containers.conf"
    conf.write_text(
        '[containers]\nnetns = "none"\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'
        f'[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\nimage_copy_tmp_dir = "{base}/tmp"\n'
        f'tmp_dir = "{base}/tmp"\n[network]\nnetwork_config_dir = "{base}/networks"\n'
    )
    storage = base / "storage.conf"
    storage.write_text(f'[storage]\ndriver = "vfs"\ngraphroot = "{base}/root"\nrunroot = "{base}/runroot"\n')
    env = {**os.environ, "CONTAINERS_CONF": str(conf), "CONTAINERS_STORAGE_CONF": str(storage)}
    argv = [
        "podman",
        "--root",
        str(base / "root"),
        "--runroot",
        str(base / "runroot"),
        "--storage-driver",
        "vfs",
    ]

    def call(*args: str) -> subprocess.CompletedProcess:
        return run(*argv, *args, env=env, timeout=300)

    try:
        yield call
    finally:
        if (base / "root").exists():
            subprocess.run([*argv, "rmi", "-af"], env=env, capture_output=True, timeout=300)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.skipif(shutil.which("podman") is None, reason="needs podman")
def test_a_pushed_image_is_read_by_skopeo_and_podman(registry, workdir, private_env) -> None:
    busybox = json.loads(hako("image", "inspect", "busybox").stdout)[0]
    name = f"{registry.host}/pushed/busybox:1"
    result = hako("push", "--insecure", "busybox", name)
    match = re.fullmatch(r"1: digest: (sha256:[0-9a-f]{64}) size: (\d+)\n", result.stdout)
    assert match, result.stdout
    digest = match.group(1)
    assert "Pushed" in result.stderr
    inspected = json.loads(run("skopeo", "inspect", "--tls-verify=false", f"docker://{name}").stdout)
    assert inspected["Digest"] == digest
    raw = json.loads(run("skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{name}").stdout)
    assert raw["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert raw["config"]["digest"] == busybox["Id"]
    assert (
        f"{registry.host}/pushed/busybox@{digest}"
        in json.loads(hako("image", "inspect", "busybox").stdout)[0]["RepoDigests"]
    )
    # Again: every blob is there already, and the manifest is the same.
    again = hako("push", "--insecure", "busybox", name)
    assert "Layer already exists" in again.stderr and "Pushed" not in again.stderr
    assert digest in again.stdout
    with podman() as call:
        image_id = call("pull", "--quiet", "--tls-verify=false", name).stdout.strip()
        assert image_id == busybox["Id"].split(":", 1)[1]
        assert call("image", "inspect", "--format", "{{.Digest}}", name).stdout.strip() == digest
    # And back into a store of its own: the same image.
    hako("pull", "--insecure", name, env=private_env)
    back = json.loads(hako("image", "inspect", name, env=private_env).stdout)[0]
    assert back["Id"] == busybox["Id"]


def test_push_with_one_name_sends_to_where_the_image_came_from(registry, pulled) -> None:
    name = f"{registry.host}/test/hello:1"
    pulled.append(name)
    hako("pull", "--insecure", name)
    result = hako("push", "--insecure", name)
    assert result.stderr.count("Layer already exists") == 2
    assert remote_digest(name, "--tls-verify=false") in result.stdout


# Authentication --------------------------------------------------------------------------
@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain-http"])
def test_basic_auth_with_login_and_logout(busybox_blob, workdir, private_env, tls) -> None:
    """docker-registry 2.8 takes htpasswd auth without TLS too; with TLS, the CA is --tls-ca or in certs.d."""
    htpasswd = workdir / "htpasswd"
    htpasswd.write_text(run("htpasswd", "-Bbn", "alice", "s3cret").stdout)
    certs = workdir / "skopeo-certs"
    certs.mkdir()
    pair = make_certificate(workdir) if tls else None
    cert = pair[0] if pair else None
    if cert:
        shutil.copy(cert, certs / "ca.crt")
    reg = Registry(
        workdir / "registry", auth={"htpasswd": {"realm": "hako-test", "path": htpasswd}}, tls=pair
    )
    access = ["--tls-ca", str(cert)] if tls else ["--insecure"]
    try:
        reg.start()
        layout = Layout(workdir / "layout")
        layout.tag(layout.image([layout.gzipped_layer(busybox_blob)], HOST_ARCH), "b")
        name = f"{reg.host}/test/basic:1"
        skopeo_copy(layout, "b", name, "--dest-creds", "alice:s3cret", f"--dest-cert-dir={certs}",
                    *(() if tls else SKOPEO_PLAIN))  # fmt: skip

        def pull(*extra: str):
            return hako("pull", *access, *extra, name, check=False, env=private_env)

        assert "authentication required: hako login" in error_line(pull())
        assert "wrong username or password" in error_line(pull("--creds", "alice:wrong"))
        if tls:
            untrusted = hako("pull", "--creds", "alice:s3cret", name, check=False, env=private_env)
            assert "TLS certificate is not trusted" in error_line(untrusted)
            https = hako("pull", "--insecure", "--creds", "alice:s3cret", name, check=False, env=private_env)
            assert "serves HTTPS: leave out --insecure" in error_line(https)

        auth_file = Path(private_env["HAKO_ROOT"], "auth.json")
        login = ["login", *access, "-u", "alice", "--password-stdin", reg.host]
        wrong = hako(*login, input="nope\n", check=False, env=private_env)
        assert wrong.returncode == 125 and "wrong username or password" in error_line(wrong)
        assert not auth_file.exists()
        login = hako(
            "login", *access, "-u", "alice", "--password-stdin", reg.host, input="s3cret\n", env=private_env
        )
        assert login.stdout == "Login Succeeded\n"
        assert stat.S_IMODE(auth_file.stat().st_mode) == 0o600
        stored = json.loads(auth_file.read_text())
        assert stored == {"auths": {reg.host: {"auth": base64.b64encode(b"alice:s3cret").decode()}}}

        assert "Pull complete" in pull().stderr
        pushed = hako("push", *access, name, f"{reg.host}/test/basic:2", env=private_env)
        assert "digest: sha256:" in pushed.stdout
        if tls:
            # The CA from certs.d instead of --tls-ca.
            certs_d = workdir / "certs.d"
            (certs_d / reg.host).mkdir(parents=True)
            shutil.copy(cert, certs_d / reg.host / "ca.crt")
            env = {**private_env, "HAKO_CERTS_D": str(certs_d)}
            assert "Image is up to date" in hako("pull", name, env=env).stderr

        assert (
            hako("logout", reg.host, env=private_env).stdout == f"Removed login credentials for {reg.host}\n"
        )
        assert json.loads(auth_file.read_text()) == {"auths": {}}
        assert "authentication required: hako login" in error_line(pull())
    finally:
        reg.stop()


def test_token_auth(busybox_blob, workdir, private_env) -> None:
    """A Bearer challenge: a token from the realm, asked for with the stored credentials."""
    tokens = TokenServer(workdir, {"alice": "s3cret"}).start()
    reg = Registry(workdir / "registry", auth=tokens.auth_config())
    try:
        reg.start()
        layout = Layout(workdir / "layout")
        layout.tag(layout.image([layout.gzipped_layer(busybox_blob)], HOST_ARCH), "t")
        name = f"{reg.host}/test/token:1"
        skopeo_copy(layout, "t", name, "--dest-creds", "alice:s3cret", *SKOPEO_PLAIN)

        anonymous = hako("pull", "--insecure", name, check=False, env=private_env)
        assert "access denied" in error_line(anonymous)
        wrong = hako("pull", "--insecure", "--creds", "alice:nope", name, check=False, env=private_env)
        assert "wrong username or password" in error_line(wrong)
        hako(
            "login",
            "--insecure",
            "-u",
            "alice",
            "--password-stdin",
            reg.host,
            input="s3cret\n",
            env=private_env,
        )
        tokens.requests.clear()
        assert "Pull complete" in hako("pull", "--insecure", name, env=private_env).stderr
        assert tokens.requests[0]["user"] == "alice"
        assert tokens.requests[0]["query"]["scope"] == ["repository:test/token:pull"]
        assert tokens.requests[0]["query"]["account"] == ["alice"]

        tokens.requests.clear()
        tokens.field = "access_token"
        hako("push", "--insecure", name, f"{reg.host}/test/token-copy:1", env=private_env)
        assert ["repository:test/token-copy:pull,push"] in [r["query"].get("scope") for r in tokens.requests]
        digest = remote_digest(
            f"{reg.host}/test/token-copy:1", "--tls-verify=false", "--creds", "alice:s3cret"
        )
        assert (
            f"{reg.host}/test/token-copy@{digest}"
            in json.loads(hako("image", "inspect", name, env=private_env).stdout)[0]["RepoDigests"]
        )
    finally:
        reg.stop()
        tokens.stop()


# Answers no registry should give -----------------------------------------------------------
ODD = "test/odd"
ODD_MANIFEST = f"/v2/{ODD}/manifests/1"
SMALL_TAR = tar_layer({"hello.txt": "hello\n"})
MANIFEST_OCI = "application/vnd.oci.image.manifest.v1+json"
DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.fixture
def scripted():
    """A scripted registry on plain HTTP, for one test."""
    reg = ScriptedRegistry().start()
    try:
        yield reg
    finally:
        reg.stop()


def entries_below(path: Path) -> list[str]:
    """Every file and directory below ``path``."""
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def clean_error(result, expected: str) -> str:
    """The one error line, which says ``expected``; no traceback, no control character anywhere."""
    assert result.returncode == 125, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert all(c == "\n" or c.isprintable() for c in result.stderr), repr(result.stderr)
    line = error_line(result)
    assert expected in line, line
    return line


def assert_nothing_kept(root: str, partial: tuple[str, ...] = ()) -> None:
    """No layer, blob, config or tag; under tmp/ only the partial downloads named."""
    images = Path(root, "images")
    for part in ("layers", "configs"):
        assert entries_below(images / part) == [], (part, entries_below(images / part))
    assert files_below(images / "blobs") == []
    assert not (images / "tags.json").exists() or json.loads((images / "tags.json").read_text()) == {}
    expected = ["partial", *sorted(f"partial/{p}" for p in partial)] if partial else []
    assert entries_below(images / "tmp") == expected


def _index(platform: object) -> bytes:
    entry = {"mediaType": MANIFEST_OCI, "digest": "sha256:" + "a" * 64, "size": 10, "platform": platform}
    return json.dumps({"schemaVersion": 2, "mediaType": INDEX_OCI, "manifests": [entry]}).encode()


def _layer(**fields) -> list:
    return [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **fields}]


def _token_answer(reg: ScriptedRegistry, body: bytes) -> None:
    realm = f'Bearer realm="http://{reg.host}/token",service="odd"'
    reg.answer("GET", ODD_MANIFEST, 401, {"errors": []}, WWW_Authenticate=realm)
    reg.answer("GET", "/token", 200, body)


def _hard_link_to_nothing(name: str) -> bytes:
    """A layer tar whose one entry, named ``name``, is a hard link to no earlier entry."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        link = tarfile.TarInfo(name)
        link.type, link.linkname = tarfile.LNKTYPE, "nothing"
        tar.addfile(link)
    return buf.getvalue()


def _unprintable_reason(reg: ScriptedRegistry) -> None:
    reg.routes[("GET", ODD_MANIFEST)] = lambda h: h.reply(502, {}, b"", reason="Bad\x1b[31m Gateway")


ODD_ANSWERS = {
    # JSON of a shape hako does not expect.
    "a manifest nested deeply": (lambda r: r.manifest(ODD, "1", DEEP), "nested too deeply"),
    "errors that are a number": (
        lambda r: r.answer("GET", ODD_MANIFEST, 500, {"errors": 5}),
        "manifest: 500 Internal Server Error",
    ),
    "errors of odd entries": (
        lambda r: r.answer("GET", ODD_MANIFEST, 500, {"errors": [{"code": ["x"], "message": {}}, "s", 7]}),
        "manifest: 500 Internal Server Error",
    ),
    "errors nested deeply": (
        lambda r: r.answer("GET", ODD_MANIFEST, 500, DEEP),
        "manifest: 500 Internal Server Error",
    ),
    "a platform that is a string": (
        lambda r: r.manifest(ODD, "1", _index("linux/amd64"), INDEX_OCI),
        "no image for",
    ),
    "manifests that are an object": (
        lambda r: r.manifest(ODD, "1", json.dumps({"manifests": {}}).encode(), INDEX_OCI),
        "the index lists no manifests",
    ),
    "a config that is a list": (
        lambda r: r.image(ODD, "1", [SMALL_TAR], edit=lambda m: m.update(config=[])),
        "config is not a descriptor",
    ),
    "layers that are an object": (
        lambda r: r.image(ODD, "1", [SMALL_TAR], edit=lambda m: m.update(layers={})),
        "the manifest lists no layers",
    ),
    **{
        f"a layer of size {size!r}": (
            lambda r, size=size: r.image(
                ODD,
                "1",
                [SMALL_TAR],
                edit=lambda m: m.update(layers=_layer(digest="sha256:" + "b" * 64, size=size)),
            ),
            f"layer 1 has size {size!r}",
        )
        for size in (-1, "12", 1.5, True, None)
    },
    "a layer without a digest": (
        lambda r: r.image(ODD, "1", [SMALL_TAR], edit=lambda m: m.update(layers=_layer(size=3))),
        "layer 1 has digest None",
    ),
    "diff_ids that are a number": (
        lambda r: r.image(ODD, "1", [SMALL_TAR], config={"rootfs": {"diff_ids": 5}}),
        "rootfs.diff_ids",
    ),
    "a rootfs that is a list": (
        lambda r: r.image(ODD, "1", [SMALL_TAR], config={"rootfs": []}),
        "rootfs.diff_ids",
    ),
    "diff_ids that are not sha256": (
        lambda r: r.image(ODD, "1", [SMALL_TAR], config={"rootfs": {"diff_ids": ["md5:00"]}}),
        "'md5:00'",
    ),
    "a config that is a JSON list": (
        lambda r: r.image(ODD, "1", [SMALL_TAR], config=b"[]"),
        "not a JSON object",
    ),
    "a config nested deeply": (lambda r: r.image(ODD, "1", [SMALL_TAR], config=DEEP), "nested too deeply"),
    "a redirect to no URL": (
        lambda r: r.answer("GET", ODD_MANIFEST, 307, Location="http://[::1/x"),
        "a redirect to 'http://[::1/x'",
    ),
    "a token nested deeply": (lambda r: _token_answer(r, DEEP), "sent no token"),
    "a token that is a list": (lambda r: _token_answer(r, b'{"token": ["x"]}'), "sent no token"),
    # Text from the registry with escape codes and line breaks.
    "an error message with escape codes": (
        lambda r: r.answer(
            "GET",
            ODD_MANIFEST,
            500,
            {"errors": [{"code": "DENIED\x1b[31m", "message": "one\ntwo\x1b]0;title\x07\u202e"}]},
        ),
        "DENIED\\x1b[31m: one\\ntwo\\x1b]0;title\\x07\\u202e",
    ),
    "a plain error with escape codes": (
        lambda r: r.answer("GET", ODD_MANIFEST, 500, b"\x1b[2Joops\rmore\nnext line"),
        "(\\x1b[2Joops\\rmore)",
    ),
    "a reason phrase with escape codes": (_unprintable_reason, "502 Bad\\x1b[31m Gateway"),
    "a media type with escape codes": (
        lambda r: r.manifest(
            ODD,
            "1",
            json.dumps({"schemaVersion": 2, "mediaType": "evil\x1b[2J\u202e"}).encode(),
            "text/x\x1b[1m",
        ),
        "not an image manifest ('evil\\x1b[2J\\u202e')",
    ),
    "a config media type with escape codes": (
        lambda r: r.image(ODD, "1", [SMALL_TAR], edit=lambda m: m["config"].update(mediaType="x\x1b[1m")),
        "its config is 'x\\x1b[1m'",
    ),
    "a layer media type with escape codes": (
        lambda r: r.image(ODD, "1", [SMALL_TAR], edit=lambda m: m["layers"][0].update(mediaType="x\x1b[1m")),
        "media type 'x\\x1b[1m'",
    ),
    "a digest header with escape codes": (
        lambda r: r.answer(
            "GET",
            ODD_MANIFEST,
            200,
            {"schemaVersion": 2, "mediaType": MANIFEST_OCI},
            Content_Type=MANIFEST_OCI,
            Docker_Content_Digest="sha256:\x1b[31mx",
        ),
        "its digest is 'sha256:\\x1b[31mx'",
    ),
    "a file name in a layer with escape codes": (
        lambda r: r.image(ODD, "1", [_hard_link_to_nothing("evil\x1b[31m\nname")]),
        "(evil\\x1b[31m\\nname: no earlier such entry)",
    ),
    "platforms with escape codes": (
        lambda r: r.manifest(ODD, "1", _index({"os": "linux\x1b[1m", "architecture": "amd64\n"}), INDEX_OCI),
        "it offers linux\\x1b[1m/amd64\\n",
    ),
}


@pytest.mark.parametrize("case", list(ODD_ANSWERS))
def test_an_odd_answer_is_one_clean_error_line(scripted, private_env, case) -> None:
    setup, expected = ODD_ANSWERS[case]
    setup(scripted)
    result = hako("pull", "--insecure", f"{scripted.host}/{ODD}:1", check=False, env=private_env)
    clean_error(result, expected)
    assert_nothing_kept(private_env["HAKO_ROOT"])


def test_an_odd_platform_in_the_config_is_warned_about_escaped(scripted, private_env) -> None:
    scripted.image(ODD, "1", [SMALL_TAR], config={"os": "linux\x1b[31m", "architecture": "arm\nfake"})
    result = hako("pull", "--insecure", f"{scripted.host}/{ODD}:1", env=private_env)
    assert all(c == "\n" or c.isprintable() for c in result.stderr), repr(result.stderr)
    assert "WARNING: the image is for linux\\x1b[31m/arm\\nfake, this host is linux/" in result.stderr


@pytest.mark.parametrize(
    ("encode", "expected"),
    [
        (lambda data: b"\xef\xbb\xbf" + data, "it starts with a byte order mark"),
        (lambda data: data.decode().encode("utf-16"), "not UTF-8"),
    ],
    ids=["bom", "utf-16"],
)
def test_a_config_the_store_cannot_read_is_refused_before_any_layer(
    scripted, private_env, encode, expected
) -> None:
    """JSON that Python's json reads (it guesses the encoding) but the store, strictly UTF-8, does not."""
    image = scripted.image(ODD, "1", [SMALL_TAR], encode=encode)
    result = hako("pull", "--insecure", f"{scripted.host}/{ODD}:1", check=False, env=private_env)
    clean_error(result, expected)
    layer_digest = image["layers"][0][0]["digest"]
    assert not [r for r in scripted.requests if r["path"].endswith(layer_digest)]
    assert_nothing_kept(private_env["HAKO_ROOT"])


def _interrupt(argv: list[str], env: dict, when) -> str:
    """Run hako, press Ctrl-C (SIGINT) as soon as ``when(stderr so far)`` says so; its stderr.

    It must end within 10 seconds, with status 130 and no traceback.
    """
    proc = subprocess.Popen([*HAKO, *argv], env=env, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []

    def read() -> None:
        for line in proc.stderr:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while not when("".join(lines)):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        start = time.monotonic()
        proc.wait(timeout=30)
        took = time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(10)
    err = "".join(lines)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Exception" not in err, err
    assert took < 10, took
    return err


@pytest.mark.parametrize("how", ["cut-off", "ctrl-c-in-a-download", "ctrl-c-in-an-unpack"])
def test_a_pull_that_stops_keeps_no_layer_only_what_resumes(scripted, private_env, how) -> None:
    """A transfer that fails for good, or Ctrl-C: the layers this pull added go; the downloads wait.

    The blob of a layer that was in place goes back to tmp/partial/, whole,
    beside what there is of the one stopped: a pull again fetches only the
    rest. Nothing else of the pull stays under tmp/ (an unpack stopped half-way
    included).
    """
    payload_a = os.urandom(300_000)
    if how == "ctrl-c-in-an-unpack":
        # Many files that do not compress: an unpack that takes a while, and
        # reads its blob as it goes (so that it stops where the blob is cut).
        files_b = {f"b/{i // 500}/{i}": os.urandom(4096) for i in range(6000)}
    else:
        files_b = {"b.bin": os.urandom(300_000)}
    image = scripted.image(ODD, "1", [tar_layer({"a.bin": payload_a}), tar_layer(files_b)])
    (a, a_diff), (b, b_diff) = image["layers"]
    name = f"{scripted.host}/{ODD}:1"
    root = private_env["HAKO_ROOT"]
    store = Path(root, "images")
    # One layer at a time, in order: a is in place when b stops.
    env = {**private_env, "HAKO_MAX_CONCURRENT_TRANSFERS": "1"}
    if how == "cut-off":
        scripted.cut.add(b["digest"])
        result = hako("pull", "--insecure", name, check=False, env=env)
        assert result.stderr.count("Pull complete") == 1
        clean_error(result, "pull again to resume")
    elif how == "ctrl-c-in-a-download":
        scripted.stall.add(b["digest"])

        def stalled(_err: str) -> bool:
            # b's download has begun and stopped half-way; a is in place.
            part = store / "tmp" / "partial" / b["digest"][7:]
            if not (scripted.stalled.is_set() and part.exists() and part.stat().st_size):
                return False
            assert (store / "layers" / a_diff[7:] / "fs" / "a.bin").is_file()
            # Asked for once, on the connection a came on.
            assert len([r for r in scripted.requests if r["path"].endswith(b["digest"])]) == 1
            return True

        _interrupt(["pull", "--insecure", name], env, stalled)
    else:
        _interrupt(["pull", "--insecure", name], env, lambda err: err.count("Download complete") == 2)
    assert_nothing_kept(root, partial=(a["digest"][7:], b["digest"][7:]))
    partial = store / "tmp" / "partial"
    assert (partial / a["digest"][7:]).read_bytes() == gzip.compress(tar_layer({"a.bin": payload_a}), mtime=0)
    if how == "ctrl-c-in-an-unpack":
        assert (partial / b["digest"][7:]).stat().st_size == b["size"]
    else:
        assert 0 < (partial / b["digest"][7:]).stat().st_size < b["size"]

    scripted.cut.clear()
    scripted.release.set()
    scripted.requests.clear()
    again = hako("pull", "--insecure", name, env=env)
    assert again.stderr.count("Resuming download") == 2
    assert not [r for r in scripted.requests if r["path"].endswith(a["digest"])]
    get_b = [r for r in scripted.requests if r["path"].endswith(b["digest"])]
    if how == "ctrl-c-in-an-unpack":
        assert get_b == []
    else:
        assert len(get_b) == 1 and re.fullmatch(r"bytes=[1-9]\d*-", get_b[0]["range"] or ""), get_b
    images = ImageStore(root)
    assert (Path(images.layer_dir(a_diff)) / "a.bin").read_bytes() == payload_a
    for file, content in list(files_b.items())[::499]:
        if content is not None:
            assert (Path(images.layer_dir(b_diff)) / file).read_bytes() == content
    assert entries_below(store / "tmp") == []


# Pushing safely ----------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["http", "ftp", "relative"])
def test_an_upload_location_never_takes_a_blob_off_https(workdir, where) -> None:
    """An HTTPS registry whose upload Location is plain HTTP (or not HTTP at all): nothing is put."""
    cert, key = make_certificate(workdir)
    reg = ScriptedRegistry((cert, key)).start()
    plain = ScriptedRegistry().start()
    try:
        location = {
            "http": f"http://{plain.host}/upload/1",
            "ftp": f"ftp://{plain.host}/upload/1",
            # Relative: against the registry's own https URL.
            "relative": "/v2/test/push/blobs/uploads/1?_state=x",
        }[where]
        reg.answer("POST", "/v2/test/push/blobs/uploads/", 202, Location=location)
        reg.answer("PUT", "/v2/test/push/blobs/uploads/1", 201)
        reg.answer("PUT", "/v2/test/push/manifests/1", 201)
        plain.answer("PUT", "/upload/1", 201)
        result = hako("push", "--tls-ca", str(cert), "busybox", f"{reg.host}/test/push:1", check=False)
        assert plain.requests == []
        if where == "relative":
            assert result.returncode == 0, result.stderr
            puts = [r for r in reg.requests if r["method"] == "PUT" and "/uploads/" in r["path"]]
            assert len(puts) == 2, reg.requests  # the layer and the config
            assert all(r["query"].startswith("_state=x&digest=sha256%3A") and r["length"] for r in puts)
        else:
            line = clean_error(result, "refused")
            assert ("is plain HTTP" if where == "http" else "hako sends only to https URLs") in line, line
            assert not [r for r in reg.requests if r["method"] == "PUT"]
    finally:
        reg.stop()
        plain.stop()


def test_a_layer_stored_with_xz_is_pushed_gzipped(registry, workdir, private_env) -> None:
    """No OCI media type names xz (or bzip2): push sends the layer gzipped, as save does."""
    images = ImageStore(private_env["HAKO_ROOT"])
    tar = tar_layer({"etc/": None, "etc/xz.txt": "from an xz layer\n"})
    info = images.unpack_layer(io.BytesIO(lzma.compress(tar)))
    assert info["media_type"] == "application/vnd.oci.image.layer.v1.tar+xz"
    config = {
        "architecture": HOST_ARCH,
        "os": "linux",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [info["diff_id"]]},
    }
    image = images.add_image(config, "xz/layer:1")
    name = f"{registry.host}/pushed/xz:1"
    result = hako("push", "--insecure", "xz/layer:1", name, env=private_env)
    assert "Pushed" in result.stderr
    raw = json.loads(run("skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{name}").stdout)
    [layer] = raw["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    conn = http.client.HTTPConnection(registry.host, timeout=30)
    try:
        conn.request("GET", f"/v2/pushed/xz/blobs/{layer['digest']}")
        blob = conn.getresponse().read()
    finally:
        conn.close()
    assert "sha256:" + hashlib.sha256(blob).hexdigest() == layer["digest"] and len(blob) == layer["size"]
    assert "sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest() == info["diff_id"]
    assert entries_below(Path(images.root) / "tmp") == []
    # The same image back.
    other = {**os.environ, "HAKO_ROOT": str(workdir / "other")}
    hako("pull", "--insecure", name, env=other)
    assert json.loads(hako("image", "inspect", name, env=other).stdout)[0]["Id"] == image.id
