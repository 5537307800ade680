"""Real peers for the registry tests, all on 127.0.0.1: docker-registry, OCI layouts, a token server, a CA.

* ``Registry`` runs ``docker-registry serve`` on a free port with its storage
  in a directory of the test's (optionally with htpasswd or token auth and
  TLS) and stops it again;
* ``Layout`` writes an OCI image layout (blobs, index.json, oci-layout) that
  ``skopeo copy oci:DIR:TAG docker://...`` pushes into it;
* ``TokenServer`` issues the JWTs a registry with ``auth: token`` accepts,
  signed RS256 by the ``openssl`` program with a key whose self-signed
  certificate is the registry's root certificate bundle;
* ``make_certificate`` makes a self-signed certificate for 127.0.0.1;
* ``ScriptedRegistry`` is a registry of the test's own that answers what the
  test tells it to (any JSON, any header, a Location anywhere, a transfer
  that stalls), to see what hako does with answers no real registry gives.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import http.server
import io
import json
import os
import re
import signal
import socket
import subprocess
import tarfile
import threading
import time
import urllib.parse
from pathlib import Path

INDEX_OCI = "application/vnd.oci.image.index.v1+json"
MANIFEST_OCI = "application/vnd.oci.image.manifest.v1+json"
CONFIG_OCI = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*argv: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """Run a peer's command; a failure raises with its stderr."""
    kwargs.setdefault("text", True)
    result = subprocess.run(argv, capture_output=True, timeout=timeout, **kwargs)
    if result.returncode != 0:
        err = result.stderr if isinstance(result.stderr, str) else result.stderr.decode(errors="replace")
        raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}: {err.strip()[-2000:]}")
    return result


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# TLS ----------------------------------------------------------------------------------
def make_certificate(directory: Path, name: str = "server") -> tuple[Path, Path]:
    """A self-signed certificate (its own CA) for 127.0.0.1 and localhost: (cert, key)."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    run(
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        "-keyout", str(key), "-out", str(cert),
    )  # fmt: skip
    return cert, key


# docker-registry ----------------------------------------------------------------------
class Registry:
    """``docker-registry serve`` on 127.0.0.1; ``auth`` is the config's auth section (or None).

    ``extra`` is YAML appended to the configuration as it is.
    """

    def __init__(
        self, base: Path, auth: dict | None = None, tls: tuple[Path, Path] | None = None, extra: str = ""
    ) -> None:
        self.base = base
        self.storage = base / "storage"
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.tls = tls
        self.auth = auth
        self.extra = extra
        self.log = base / "registry.log"
        self.proc: subprocess.Popen | None = None

    def _config(self) -> str:
        lines = [
            "version: 0.1",
            "log:",
            "  level: warn",
            "  accesslog:",
            "    disabled: false",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.storage}",
            "  delete:",
            "    enabled: true",
            "http:",
            f"  addr: {self.host}",
            "  secret: hako-test-secret",
        ]
        if self.tls:
            lines += ["  tls:", f"    certificate: {self.tls[0]}", f"    key: {self.tls[1]}"]
        if self.auth:
            lines.append("auth:")
            for kind, options in self.auth.items():
                lines.append(f"  {kind}:")
                lines += [f"    {k}: {v}" for k, v in options.items()]
        return "\n".join(lines) + "\n" + self.extra

    def start(self) -> Registry:
        self.storage.mkdir(parents=True, exist_ok=True)
        config = self.base / "registry.yml"
        config.write_text(self._config())
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                ["docker-registry", "serve", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"docker-registry exited {self.proc.returncode}: {self.log.read_text()[-2000:]}"
                )
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"docker-registry did not listen on {self.host}: {self.log.read_text()[-2000:]}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None

    def blob_data(self, digest: str) -> Path:
        """The file the filesystem driver keeps a blob's bytes in."""
        hexpart = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart / "data"

    def access_log(self) -> list[str]:
        return [line for line in self.log.read_text(errors="replace").splitlines() if '"GET /v2/' in line]


# OCI layouts ----------------------------------------------------------------------------
def tar_layer(files: dict[str, bytes | str | None], mtime: int = 1_700_000_000) -> bytes:
    """An uncompressed layer tar: name -> content (None for a directory)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.mtime = mtime
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                data = content.encode() if isinstance(content, str) else content
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Layout:
    """An OCI image layout on disk, written as skopeo reads it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        (path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        self.refs: list[dict] = []
        self._write_index()

    def blob(self, data: bytes, media_type: str) -> dict:
        digest = sha256(data)
        (self.path / "blobs" / "sha256" / digest[7:]).write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def layer(self, tar: bytes) -> tuple[dict, str]:
        """A gzipped layer blob of an uncompressed tar: (descriptor, diff ID)."""
        return self.blob(gzip.compress(tar, mtime=0), LAYER_GZIP), sha256(tar)

    def gzipped_layer(self, blob: bytes) -> tuple[dict, str]:
        """A layer from a blob that is already gzipped (a layer hako keeps)."""
        return self.blob(blob, LAYER_GZIP), sha256(gzip.decompress(blob))

    def image(
        self, layers: list[tuple[dict, str]], arch: str, variant: str | None = None, label: str = ""
    ) -> dict:
        config = {
            "architecture": arch,
            "os": "linux",
            "created": "2024-01-01T00:00:00Z",
            "config": {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"], "Labels": {"t": label}},
            "rootfs": {"type": "layers", "diff_ids": [d for _, d in layers]},
            "history": [
                {"created": "2024-01-01T00:00:00Z", "created_by": f"layer {i}"} for i in range(len(layers))
            ],
        }
        if variant:
            config["variant"] = variant
        config_desc = self.blob(json.dumps(config).encode(), CONFIG_OCI)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_OCI,
            "config": config_desc,
            "layers": [desc for desc, _ in layers],
        }
        desc = self.blob(json.dumps(manifest).encode(), MANIFEST_OCI)
        desc["platform"] = {"architecture": arch, "os": "linux", **({"variant": variant} if variant else {})}
        return desc

    def index(self, manifests: list[dict]) -> dict:
        index = {"schemaVersion": 2, "mediaType": INDEX_OCI, "manifests": manifests}
        return self.blob(json.dumps(index).encode(), INDEX_OCI)

    def tag(self, descriptor: dict, name: str) -> None:
        entry = {k: v for k, v in descriptor.items() if k != "platform"}
        entry["annotations"] = {"org.opencontainers.image.ref.name": name}
        self.refs = [r for r in self.refs if r["annotations"]["org.opencontainers.image.ref.name"] != name]
        self.refs.append(entry)
        self._write_index()

    def _write_index(self) -> None:
        index = {"schemaVersion": 2, "manifests": self.refs}
        (self.path / "index.json").write_text(json.dumps(index))


def skopeo_copy(layout: Layout, tag: str, dest: str, *extra: str) -> None:
    """Push a layout's tag into a registry (``dest`` is host:port/name:tag)."""
    run("skopeo", "copy", "--quiet", *extra, f"oci:{layout.path}:{tag}", f"docker://{dest}", timeout=300)


# Token auth ------------------------------------------------------------------------------
def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _Served:
    """A test HTTP server on 127.0.0.1 (HTTPS with ``tls``: (cert, key)), served by a thread."""

    server: http.server.ThreadingHTTPServer | None = None
    thread: threading.Thread | None = None

    def _serve(self, handler, tls: tuple[Path, Path] | None = None):
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        if tls:
            import ssl

            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(10)
            self.server = None


class TokenServer(_Served):
    """A Docker token service: GET /token?service=&scope= with Basic credentials -> a signed JWT."""

    def __init__(self, base: Path, users: dict[str, str], service: str = "hako-test-registry") -> None:
        self.base = base
        self.users = users
        self.service = service
        self.issuer = "hako-test-issuer"
        self.field = "token"  # or "access_token", as some services answer
        self.key = base / "token.key"
        self.cert = base / "token.crt"
        run(
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=hako-test-token", "-keyout", str(self.key), "-out", str(self.cert),
        )  # fmt: skip
        der = run("openssl", "x509", "-in", str(self.cert), "-outform", "DER", text=False).stdout
        self.x5c = base64.b64encode(der).decode()
        self.requests: list[dict] = []

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/token"

    def auth_config(self) -> dict:
        return {
            "token": {
                "realm": self.realm,
                "service": self.service,
                "issuer": self.issuer,
                "rootcertbundle": str(self.cert),
            }
        }

    def sign(self, claims: dict) -> str:
        header = {"alg": "RS256", "typ": "JWT", "x5c": [self.x5c]}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=signing_input.encode(),
            capture_output=True,
            check=True,
        ).stdout
        return f"{signing_input}.{_b64url(signature)}"

    def issue(self, user: str | None, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind == "repository" and user is not None:
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": user or "",
            "aud": self.service,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": os.urandom(8).hex(),
            "access": access,
        }
        return self.sign(claims)

    def start(self) -> TokenServer:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query)
                user = None
                header = self.headers.get("Authorization", "")
                if header.startswith("Basic "):
                    name, _, password = base64.b64decode(header[6:]).decode().partition(":")
                    if outer.users.get(name) != password:
                        outer.requests.append({"query": query, "user": name, "granted": False})
                        self._answer(401, {"details": "wrong credentials"})
                        return
                    user = name
                outer.requests.append({"query": query, "user": user, "granted": True})
                if url.path != "/token" or query.get("service") != [outer.service]:
                    self._answer(400, {"details": "unknown service"})
                    return
                token = outer.issue(user, query.get("scope", []))
                self._answer(200, {outer.field: token, "expires_in": 300})

            def _answer(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return self._serve(Handler)


# A front with redirects and cut-off transfers --------------------------------------------
class FrontServer(_Served):
    """An HTTP front of a registry, as a CDN-backed registry behaves.

    It wants Basic credentials for /v2/; it answers a blob download with a
    redirect to another host name of its own (``localhost`` instead of
    ``127.0.0.1``), where the blob is served without credentials; and there
    the first download of each blob stops half-way, the connection closed.
    ``seen`` records the requests that reached the blob host.
    """

    def __init__(self, backend: Registry, user: str, password: str) -> None:
        self.backend = backend
        self.basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.seen: list[dict] = []
        self.cut: set[str] = set()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> FrontServer:
        import http.client

        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_HEAD(self) -> None:
                self.do_GET()

            def do_GET(self) -> None:
                path = urllib.parse.urlsplit(self.path).path
                if path.startswith("/direct/"):
                    self._direct(path[len("/direct") :])
                    return
                if self.headers.get("Authorization") != outer.basic:
                    self._reply(
                        401,
                        b'{"errors":[{"code":"UNAUTHORIZED"}]}',
                        {"WWW-Authenticate": 'Basic realm="front"'},
                    )
                    return
                if "/blobs/sha256:" in path and self.command == "GET":
                    location = f"http://localhost:{outer.port}/direct{path}"
                    self._reply(307, b"", {"Location": location})
                    return
                self._proxy(path, {})

            def _direct(self, path: str) -> None:
                digest = path.rsplit("/", 1)[1]
                outer.seen.append(
                    {
                        "digest": digest,
                        "host": self.headers.get("Host"),
                        "authorization": self.headers.get("Authorization"),
                        "range": self.headers.get("Range"),
                    }
                )
                cut = digest not in outer.cut
                outer.cut.add(digest)
                self._proxy(path, {"Range": self.headers["Range"]} if self.headers.get("Range") else {}, cut)

            def _proxy(self, path: str, extra: dict, cut: bool = False) -> None:
                conn = http.client.HTTPConnection(outer.backend.host, timeout=30)
                try:
                    headers = {"Accept": self.headers.get("Accept", "*/*"), **extra}
                    conn.request(self.command, path, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    kept = ("Content-Type", "Docker-Content-Digest", "Content-Range")
                    headers = {k: resp.getheader(k) for k in kept if resp.getheader(k)}
                    length = resp.getheader("Content-Length") or str(len(data))
                    self.send_response(resp.status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", length)
                    self.end_headers()
                    if self.command == "GET":
                        if cut and len(data) > 1:
                            self.wfile.write(data[: len(data) // 2])
                            self.wfile.flush()
                            self.close_connection = True
                        else:
                            self.wfile.write(data)
                finally:
                    conn.close()

            def _reply(self, status: int, body: bytes, headers: dict) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return self._serve(Handler)


# A registry that says what the test wants ------------------------------------------------
class ScriptedRegistry(_Served):
    """A registry API on 127.0.0.1 (HTTPS with ``tls``) that answers from ``routes``.

    ``routes`` maps (method, path) to (status, headers, body) or to a function
    that gets the request handler and answers itself. ``image`` puts an
    image's manifest, config and blobs there; blobs are served with Range
    support. ``stall`` makes the first download of a blob stop half-way and
    wait (until ``release`` is set or the server stops); ``cut`` closes the
    connection half-way through every download of a blob. ``requests``
    records every request: method, path, Range and Authorization.
    """

    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        self.tls = tls
        self.routes: dict[tuple[str, str], object] = {("GET", "/v2/"): (200, {}, b"{}")}
        self.requests: list[dict] = []
        self.stall: set[str] = set()
        self.cut: set[str] = set()
        self.stalled = threading.Event()
        self.release = threading.Event()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def answer(self, method: str, path: str, status: int, body: bytes | dict | list = b"", **headers) -> None:
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
        self.routes[(method, path)] = (status, {k.replace("_", "-"): v for k, v in headers.items()}, data)

    def blob(self, repository: str, data: bytes) -> dict:
        """Serve a blob; its descriptor (without a media type)."""
        digest = sha256(data)
        self.routes[("GET", f"/v2/{repository}/blobs/{digest}")] = lambda h: self._blob(h, digest, data)
        self.routes[("HEAD", f"/v2/{repository}/blobs/{digest}")] = (
            200,
            {"Docker-Content-Digest": digest, "X-Length": str(len(data))},
            b"",
        )
        return {"digest": digest, "size": len(data)}

    def manifest(self, repository: str, tag: str, data: bytes, media_type: str = MANIFEST_OCI) -> str:
        """Serve a manifest (any bytes) under a tag and its digest; the digest."""
        digest = sha256(data)
        for ref in (tag, digest):
            self.routes[("GET", f"/v2/{repository}/manifests/{ref}")] = (
                200,
                {"Content-Type": media_type, "Docker-Content-Digest": digest},
                data,
            )
        return digest

    def image(
        self,
        repository: str,
        tag: str,
        tars: list[bytes],
        config: dict | bytes | None = None,
        encode=None,
        edit=None,
    ) -> dict:
        """Serve an image of gzipped ``tars``.

        ``config`` is merged into its config (or replaces it, as bytes);
        ``encode`` turns the config's JSON bytes into what is served;
        ``edit`` changes the manifest (a dict) before it is served. Returns
        the layers' (descriptor, diff ID), the config's and the manifest's digest.
        """
        import platform

        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
        layers = []
        for tar in tars:
            desc = {"mediaType": LAYER_GZIP, **self.blob(repository, gzip.compress(tar, mtime=0))}
            layers.append((desc, sha256(tar)))
        if not isinstance(config, bytes):
            document = {
                "architecture": arch,
                "os": "linux",
                "config": {"Cmd": ["sh"]},
                "rootfs": {"type": "layers", "diff_ids": [d for _, d in layers]},
                **(config or {}),
            }
            config = json.dumps(document).encode()
        if encode is not None:
            config = encode(config)
        config_desc = {"mediaType": CONFIG_OCI, **self.blob(repository, config)}
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_OCI,
            "config": config_desc,
            "layers": [d for d, _ in layers],
        }
        if edit is not None:
            edit(manifest)
        digest = self.manifest(repository, tag, json.dumps(manifest).encode())
        return {"layers": layers, "config": config_desc["digest"], "digest": digest}

    def _blob(self, handler, digest: str, data: bytes) -> None:
        match = re.fullmatch(r"bytes=(\d+)-", handler.headers.get("Range") or "")
        start = int(match.group(1)) if match else 0
        if start > len(data):
            handler.reply(416, {}, b"")
            return
        headers = {"Content-Type": "application/octet-stream", "Docker-Content-Digest": digest}
        if match:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        handler.send_response(206 if match else 200)
        for k, v in headers.items():
            handler.send_header(k, v)
        handler.send_header("Content-Length", str(len(data) - start))
        handler.end_headers()
        body = data[start:]
        if digest in self.stall or digest in self.cut:
            handler.wfile.write(body[: len(body) // 2])
            handler.wfile.flush()
            if digest in self.stall:
                self.stall.discard(digest)
                self.stalled.set()
                self.release.wait(60)
            handler.close_connection = True
            return
        handler.wfile.write(body)

    def start(self) -> ScriptedRegistry:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = urllib.parse.urlsplit(self.path).path
                outer.requests.append(
                    {
                        "method": self.command,
                        "path": path,
                        "query": urllib.parse.urlsplit(self.path).query,
                        "range": self.headers.get("Range"),
                        "authorization": self.headers.get("Authorization"),
                        "length": len(body),
                    }
                )
                route = outer.routes.get((self.command, path))
                if route is None:
                    self.reply(404, {}, b'{"errors":[{"code":"NOT_FOUND","message":"not here"}]}')
                elif callable(route):
                    route(self)
                else:
                    self.reply(*route)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = _any

            def reply(self, status: int, headers: dict, body: bytes, reason: str | None = None) -> None:
                self.send_response(status, reason)
                length = headers.get("X-Length", str(len(body)))
                for k, v in headers.items():
                    if k != "X-Length":
                        self.send_header(k, v)
                if "Content-Type" not in headers:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", length)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

        return self._serve(Handler, self.tls)

    def stop(self) -> None:
        self.release.set()
        super().stop()
