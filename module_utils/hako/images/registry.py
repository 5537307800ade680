"""Pull and push images over the Registry HTTP API v2 (Docker's, the OCI distribution spec).

Pull: the manifest (an OCI index or Docker manifest list picks this host's
platform), the config blob, read strictly (UTF-8 JSON, as the store reads it)
before any layer is fetched, then every layer the store lacks, a few at a time
(``HAKO_MAX_CONCURRENT_TRANSFERS``, default 3), each with a connection of its
own. A layer blob is downloaded to
``tmp/partial/<hex>`` (a later pull resumes it with a Range request), checked
against its digest and unpacked with both digests checked again; the config
and the tag are written only once every layer is in place.

A pull that fails, or is interrupted (Ctrl-C), removes the layers it added:
no layer that no image uses stays. Content that does not match its digest is
refused and nothing of it is kept, its partial downloads included. After a
network failure or Ctrl-C, what was downloaded waits in ``tmp/partial/``
(the whole blobs of the layers removed, the part of a blob cut off) for the
next pull to resume from; nothing else of the pull stays under ``tmp/``.

Push: every layer blob the registry lacks (HEAD, then POST and one PUT to the
upload's Location), the config blob, then an OCI image manifest under the
tag. A layer kept compressed with bzip2 or xz (from an image archive), which
no OCI media type names, is sent gzipped, as `hako image save` writes it.

Authentication follows the 401 answers: ``Bearer`` (a token from the realm
the registry names, asked for with the user's credentials if there are any)
or ``Basic``. Credentials come from ``--creds`` or from ``$HAKO_ROOT/auth.json``
(the containers-auth.json format ``hako login`` writes). HTTPS is the default;
a private CA comes from ``--tls-ca`` or ``/etc/hako/certs.d/HOST:PORT/*.crt``
(``HAKO_CERTS_D``); plain HTTP only with ``insecure=True``, and that holds for
every URL a registry names (a redirect, an upload's Location, a token realm).

Whatever a registry says that ends up in a message (an error's text, a media
type, a platform's name) is shown with its control characters escaped: one
error is one line.

Only the standard library is used, and only on these paths: `hako run` never
imports this module.
"""

from __future__ import annotations

import base64
import codecs
import hashlib
import http.client
import json
import os
import reprlib
import socket
import ssl
import threading
import weakref
from urllib.parse import urlencode, urljoin, urlsplit

from .. import lean, store
from ..errors import HakoError, InvalidValue, NotFound
from . import reference
from .layers import MEDIA_TYPE_GZIP, MEDIA_TYPE_TAR

__all__ = [
    "RegistryError",
    "host_platform",
    "login",
    "logout",
    "on_one_line",
    "parse_creds",
    "parse_platform",
    "pull",
    "push",
    "save_credentials",
]

INDEX_OCI = "application/vnd.oci.image.index.v1+json"
MANIFEST_OCI = "application/vnd.oci.image.manifest.v1+json"
LIST_DOCKER = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_DOCKER = "application/vnd.docker.distribution.manifest.v2+json"
SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
CONFIG_OCI = "application/vnd.oci.image.config.v1+json"
CONFIG_DOCKER = "application/vnd.docker.container.image.v1+json"
LAYER_DOCKER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MEDIA_TYPE_ZSTD = MEDIA_TYPE_TAR + "+zstd"
# Layer media types hako unpacks (the blob's own bytes tell the compression).
LAYER_TYPES = (MEDIA_TYPE_TAR, MEDIA_TYPE_GZIP, MEDIA_TYPE_ZSTD, LAYER_DOCKER_GZIP)
FOREIGN_LAYER_TYPES = (
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
)
ACCEPT = ", ".join((INDEX_OCI, LIST_DOCKER, MANIFEST_OCI, MANIFEST_DOCKER))

DOCKER_HUB_API = "registry-1.docker.io"
DOCKER_HUB_KEYS = ("docker.io", "index.docker.io", "registry-1.docker.io", "https://index.docker.io/v1/")
MAX_MANIFEST = 4 << 20
MAX_CONFIG = 16 << 20
MAX_SMALL_BODY = 1 << 20
MAX_REDIRECTS = 5
CHUNK = 1 << 20
TIMEOUT = 60.0
WORKERS = 3  # layers transferred at once, as Docker's max-concurrent-downloads/uploads
RETRIES = 3  # transfers cut off mid-way, resumed within one pull
USER_AGENT = "hako/0.1"
CERTS_D = "/etc/hako/certs.d"


def _printable(text: str, limit: int | None = 200) -> str:
    """``text`` cut to ``limit`` characters, with what is not printable (escape codes,
    line breaks) escaped as repr escapes it: a registry's words on one harmless line."""
    if limit is not None and len(text) > limit:
        text = text[:limit] + "..."
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlevel = 120, 60, 3


def _shown(value: object) -> str:
    """A value from a registry's JSON or headers in a message: its repr, cut short."""
    try:
        return _REPR.repr(value)
    except RecursionError:
        return "(a value nested too deeply)"


def _json(data: bytes) -> object:
    """A JSON answer (a manifest, an error, a token); ValueError says what is wrong with it."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("nested too deeply") from None


class RegistryError(HakoError):
    """A registry refused, or its answer cannot be used."""

    def __init__(self, message: str, status: int | None = None) -> None:
        # One line, whatever the registry's words in it.
        super().__init__(_printable(message, None))
        self.status = status  # the HTTP status that said no, if one did


def on_one_line(error: HakoError) -> HakoError:
    """``error`` with its message escaped onto one line: an error of the store or the layer
    code can quote what a registry sent (a file name in a layer, say)."""
    text = str(error)
    if not text.isprintable():
        error.args = (_printable(text, None),)
    return error


class TransferError(RegistryError):
    """The network failed: a pull again may work (partial downloads are kept to resume it).

    ``retry`` tells whether asking again at once makes sense: yes for a
    transfer cut off, no for a host that refuses connections or does not
    answer.
    """

    def __init__(self, message: str, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


class _Cancelled(Exception):
    pass


def _is_sha256(value: object) -> bool:
    return isinstance(value, str) and reference.is_digest(value)


# Platforms ----------------------------------------------------------------------
_ARCHES = {
    "x86_64": ("amd64", None),
    "amd64": ("amd64", None),
    "aarch64": ("arm64", "v8"),
    "arm64": ("arm64", "v8"),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "i386": ("386", None),
    "i686": ("386", None),
}


def host_platform() -> tuple[str, str, str | None]:
    """(os, architecture, variant) of this host as image indexes name them."""
    machine = os.uname().machine
    arch, variant = _ARCHES.get(machine, (machine, None))
    return "linux", arch, variant


def parse_platform(text: str) -> tuple[str, str, str | None]:
    """'linux/arm64/v8' -> ('linux', 'arm64', 'v8'); the variant is optional."""
    parts = text.split("/")
    ok = 2 <= len(parts) <= 3 and all(p and p.replace("_", "").isalnum() and p.islower() for p in parts)
    if not ok:
        raise InvalidValue("platform", text, "expected os/arch[/variant], e.g. linux/amd64 or linux/arm64/v8")
    arch, variant = parts[1], parts[2] if len(parts) == 3 else None
    if variant is None and arch == "arm64":
        variant = "v8"
    return parts[0], arch, variant


def _platform_text(platform: dict) -> str:
    parts = [platform.get("os", "?"), platform.get("architecture", "?")]
    if platform.get("variant"):
        parts.append(platform["variant"])
    return "/".join(_printable(str(p), 40) for p in parts)


def pick_manifest(manifests: list, want: tuple[str, str, str | None], name: str) -> dict:
    """The entry of an index or manifest list that fits the platform ``want``."""
    os_name, arch, variant = want
    fits = []
    for entry in manifests:
        platform = entry.get("platform") if isinstance(entry, dict) else None
        if (
            isinstance(platform, dict)
            and platform.get("os") == os_name
            and platform.get("architecture") == arch
        ):
            fits.append(entry)
    exact = [e for e in fits if e["platform"].get("variant") == variant]
    plain = [e for e in fits if not e["platform"].get("variant")]
    # Without a wanted variant, anything of the architecture fits (the plain one first).
    chosen = exact or plain or ([] if variant else fits)
    if not chosen:
        offered = sorted(
            {
                _platform_text(e["platform"])
                for e in manifests
                if isinstance(e, dict) and isinstance(e.get("platform"), dict)
            }
        )
        wanted = "/".join(p for p in want if p)
        raise NotFound(
            f"{name}: no image for {wanted}; it offers {', '.join(offered) or 'no platforms'}"
            " (choose one with --platform)"
        )
    return chosen[0]


# Credentials --------------------------------------------------------------------
def auth_file() -> str:
    return os.path.join(store.root_dir(), "auth.json")


def registry_key(text: str, field: str = "registry") -> str:
    """A registry as auth.json and certs.d name it: host[:port]; Docker Hub is docker.io."""
    value = text.strip()
    for prefix in ("https://", "http://"):
        if value.startswith(prefix):
            value = value[len(prefix) :]
    value = value.rstrip("/")
    if value.endswith("/v1") or value.endswith("/v2"):
        value = value[:-3]
    if value in DOCKER_HUB_KEYS or value == "index.docker.io/v1":
        return "docker.io"
    host, _, port = value.partition(":")
    from .. import text as textutil

    if not value or "/" in value or not textutil.is_hostname(host) or (port and not port.isdigit()):
        raise InvalidValue(field, text, "expected a registry host[:port]")
    return value


def parse_creds(text: str) -> tuple[str, str]:
    """'USER:PASSWORD' -> (user, password); the password is never shown in an error."""
    user, colon, password = text.partition(":")
    if not colon or not user or not password:
        raise InvalidValue("creds", user + ":..." if colon else "(hidden)", "expected USER:PASSWORD")
    return user, password


def _read_auths() -> dict:
    path = auth_file()
    try:
        with open(path, "rb") as f:
            document = json.loads(f.read() or b"{}")
    except FileNotFoundError:
        return {}
    except RecursionError:
        raise InvalidValue("auth file", path, "not JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidValue("auth file", path, f"not JSON: {e}") from None
    if not isinstance(document, dict) or not isinstance(document.get("auths", {}), dict):
        raise InvalidValue("auth file", path, 'expected {"auths": {"host:port": {"auth": "..."}}}')
    return document


def stored_credentials(registry: str) -> tuple[str, str] | None:
    """The credentials `hako login` stored for ``registry``, if any."""
    auths = _read_auths().get("auths", {})
    keys = DOCKER_HUB_KEYS if registry == "docker.io" else (registry,)
    for key in keys:
        entry = auths.get(key)
        if isinstance(entry, dict) and isinstance(entry.get("auth"), str):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise InvalidValue(
                    "auth file", auth_file(), f"the entry for {key} is not base64 USER:PASSWORD"
                )
            return user, password
    return None


def save_credentials(registry: str, user: str, password: str) -> None:
    """Store credentials for ``registry`` in auth.json (mode 0600)."""
    os.makedirs(store.root_dir(), exist_ok=True)
    with store.locked(auth_file() + ".lock"):
        document = _read_auths()
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        document.setdefault("auths", {})[registry] = {"auth": token}
        store.atomic_write(auth_file(), json.dumps(document, indent=2) + "\n", mode=0o600)
        os.chmod(auth_file(), 0o600)


def logout(registry: str) -> None:
    """Forget the credentials stored for ``registry``."""
    if not os.path.exists(auth_file()):
        raise NotFound(f"not logged in to {registry}")
    with store.locked(auth_file() + ".lock"):
        document = _read_auths()
        auths = document.get("auths", {})
        keys = [k for k in (DOCKER_HUB_KEYS if registry == "docker.io" else (registry,)) if k in auths]
        if not keys:
            raise NotFound(f"not logged in to {registry}")
        for key in keys:
            del auths[key]
        store.atomic_write(auth_file(), json.dumps(document, indent=2) + "\n", mode=0o600)


def parse_challenges(header: str) -> list[tuple[str, dict]]:
    """WWW-Authenticate -> [(scheme in lowercase, {param: value})], quoted values unquoted."""
    challenges: list[tuple[str, dict]] = []
    i, n = 0, len(header)
    while i < n:
        while i < n and header[i] in " ,":
            i += 1
        start = i
        while i < n and header[i] not in " ,=":
            i += 1
        word = header[start:i]
        j = i
        while j < n and header[j] == " ":
            j += 1
        if word and (j >= n or header[j] != "="):
            challenges.append((word.lower(), {}))
            i = j
            continue
        if not word:
            i += 1
            continue
        # A parameter of the current challenge: key=value or key="quoted, value".
        i = j + 1
        while i < n and header[i] == " ":
            i += 1
        if i < n and header[i] == '"':
            i += 1
            value = []
            while i < n and header[i] != '"':
                if header[i] == "\\" and i + 1 < n:
                    i += 1
                value.append(header[i])
                i += 1
            i += 1
            text = "".join(value)
        else:
            start = i
            while i < n and header[i] != ",":
                i += 1
            text = header[start:i].strip()
        if challenges:
            challenges[-1][1][word.lower()] = text
    return challenges


# TLS ------------------------------------------------------------------------------
def tls_context(registry: str, tls_ca: str | None = None) -> ssl.SSLContext:
    """The system's trust, plus --tls-ca, plus certs.d/<registry>/*.crt (and a client *.cert/*.key)."""
    context = ssl.create_default_context()
    if tls_ca:
        try:
            context.load_verify_locations(cafile=tls_ca)
        except (OSError, ssl.SSLError) as e:
            raise InvalidValue("tls-ca", tls_ca, getattr(e, "strerror", None) or str(e)) from None
    directory = os.path.join(os.environ.get("HAKO_CERTS_D", CERTS_D), registry)
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        names = []
    for name in names:
        path = os.path.join(directory, name)
        try:
            if name.endswith(".crt"):
                context.load_verify_locations(cafile=path)
            elif name.endswith(".cert"):
                context.load_cert_chain(path, path[: -len(".cert")] + ".key")
        except (OSError, ssl.SSLError) as e:
            raise InvalidValue("certificate", path, getattr(e, "strerror", None) or str(e)) from None
    return context


# HTTP -----------------------------------------------------------------------------
class Endpoint:
    """How to reach one registry: its API host, the scheme, TLS, credentials."""

    def __init__(
        self,
        registry: str,
        insecure: bool = False,
        tls_ca: str | None = None,
        creds: tuple[str, str] | None = None,
    ) -> None:
        self.registry = registry
        self.netloc = DOCKER_HUB_API if registry == "docker.io" else registry
        self.scheme = "http" if insecure else "https"
        self.insecure = insecure
        self.tls_ca = tls_ca
        self.creds = creds
        self._context: ssl.SSLContext | None = None

    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.netloc}"

    def context(self) -> ssl.SSLContext:
        if self._context is None:
            self._context = tls_context(self.registry, self.tls_ca)
        return self._context


def upload_url(started_at: str, location: str, digest: str) -> str:
    """Where to PUT a blob: the Location an upload's POST answered (relative to the URL
    posted to, or absolute; maybe with a query of its own, such as ``_state``), plus ?digest=."""
    url = urljoin(started_at, location)
    return url + ("&" if urlsplit(url).query else "?") + urlencode({"digest": digest})


def _error_text(resp: http.client.HTTPResponse, data: bytes) -> str:
    """What a registry's error answer says ({"errors": [{"code", "message"}]}) in a few words.

    Anything else (other JSON, plain text) gives its first line; control
    characters are escaped.
    """
    try:
        document = _json(data)
    except ValueError:
        document = None
    errors = document.get("errors") if isinstance(document, dict) else None
    said = []
    for e in errors if isinstance(errors, list) else ():
        if isinstance(e, dict):
            words = [w for w in (e.get("code"), e.get("message")) if isinstance(w, str) and w]
            if words:
                said.append(": ".join(words))
    text = "; ".join(said) or data[:200].decode("utf-8", "replace").strip().split("\n", 1)[0].strip()
    return _printable(f"{resp.status} {resp.reason}", 100) + (f" ({_printable(text)})" if text else "")


class Client:
    """Requests to one repository of one registry; safe to share between threads.

    Every thread has its own keep-alive connection per host. The
    Authorization header (Basic, or a Bearer token fetched on the first 401)
    goes to the registry's host only, never to a host a redirect names. A URL
    the registry names is used only if it is HTTPS (or plain HTTP with
    --insecure). ``abort`` ends every transfer under way, from any thread.
    """

    def __init__(self, endpoint: Endpoint, repository: str | None, actions: str = "pull") -> None:
        self.endpoint = endpoint
        self.repository = repository
        self.actions = actions
        self._auth: str | None = None
        self._auth_lock = threading.Lock()
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._all_lock = threading.Lock()
        self._sockets: weakref.WeakSet = weakref.WeakSet()  # every socket a request went out on
        self._aborted = False

    @property
    def name(self) -> str:
        return f"{self.endpoint.registry}/{self.repository}" if self.repository else self.endpoint.registry

    def close(self) -> None:
        with self._all_lock:
            for conn in self._all:
                conn.close()
            self._all.clear()

    def abort(self) -> None:
        """End the transfers under way (Ctrl-C): their sockets are shut down, no request follows."""
        with self._all_lock:
            self._aborted = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut_down(sock)

    def checked_url(self, base: str, location: str, what: str) -> str:
        """``location`` (maybe relative to ``base``) as a URL hako may send to: HTTPS, or plain
        HTTP with --insecure. Otherwise a RegistryError names ``what`` it was."""
        try:
            url = urljoin(base, location)
            parts = urlsplit(url)
            parts.port  # noqa: B018 - a port that is not a number raises ValueError
            if not all(c.isprintable() and c != " " for c in url):
                raise ValueError(url)
        except ValueError:
            raise RegistryError(f"{self.name}: {what} {_shown(location)}: refused (not a URL)") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RegistryError(
                f"{self.name}: {what} {_shown(url)}: refused (hako sends only to https URLs, "
                "and to http ones with --insecure)"
            )
        if parts.scheme == "http" and not self.endpoint.insecure:
            raise RegistryError(
                f"{self.name}: {what} {_shown(url)} is plain HTTP: refused (allowed only with --insecure)"
            )
        return url

    # Connections ------------------------------------------------------------------
    def _connection(self, scheme: str, netloc: str) -> tuple[http.client.HTTPConnection, bool]:
        conns = self._local.__dict__.setdefault("conns", {})
        conn = conns.get((scheme, netloc))
        if conn is not None:
            return conn, True
        if scheme == "https":
            conn = http.client.HTTPSConnection(
                netloc, timeout=TIMEOUT, context=self.endpoint.context(), blocksize=CHUNK
            )
        elif scheme == "http" and self.endpoint.insecure:
            conn = http.client.HTTPConnection(netloc, timeout=TIMEOUT, blocksize=CHUNK)
        else:
            raise RegistryError(f"{self.name}: {_shown(scheme + '://' + netloc)}: refused (not https)")
        conns[(scheme, netloc)] = conn
        with self._all_lock:
            self._all.append(conn)
        return conn, False

    def _drop_all(self) -> None:
        """Close this thread's connections (after a failure mid-answer)."""
        conns = self._local.__dict__.get("conns", {})
        for conn in conns.values():
            conn.close()
        conns.clear()

    def _drop(self, scheme: str, netloc: str) -> None:
        conn = self._local.__dict__.get("conns", {}).pop((scheme, netloc), None)
        if conn is not None:
            conn.close()

    def _send(self, method: str, url: str, headers: dict, body) -> http.client.HTTPResponse:
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        start = body.tell() if hasattr(body, "tell") else None
        for attempt in (0, 1):
            if self._aborted:
                raise TransferError(f"{self.name}: cancelled", retry=False)
            conn, reused = self._connection(parts.scheme, parts.netloc)
            try:
                conn.request(method, target, body=body, headers=headers)
                if conn.sock is not None:
                    with self._all_lock:
                        self._sockets.add(conn.sock)
                        aborted = self._aborted
                    if aborted:
                        _shut_down(conn.sock)
                return conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                # A kept-alive connection the server had closed: once more on a new one.
                self._drop(parts.scheme, parts.netloc)
                if not reused or attempt:
                    raise self._network_error(e, parts.netloc) from None
                if start is not None:
                    body.seek(start)
            except ssl.SSLCertVerificationError as e:
                self._drop(parts.scheme, parts.netloc)
                certs = os.path.join(os.environ.get("HAKO_CERTS_D", CERTS_D), self.endpoint.registry)
                raise RegistryError(
                    f"{parts.netloc}: its TLS certificate is not trusted ({e.verify_message}): "
                    f"give its CA with --tls-ca FILE or put it in {certs}/ca.crt"
                ) from None
            except ssl.SSLError as e:
                self._drop(parts.scheme, parts.netloc)
                raise RegistryError(
                    f"{parts.netloc}: TLS failed ({e.reason or e}); "
                    "if the registry serves plain HTTP, use --insecure"
                ) from None
            except (OSError, http.client.HTTPException) as e:
                self._drop(parts.scheme, parts.netloc)
                raise self._network_error(e, parts.netloc) from None
        raise AssertionError("unreachable")

    @staticmethod
    def _network_error(e: BaseException, netloc: str) -> TransferError:
        if isinstance(e, ConnectionRefusedError):
            return TransferError(f"cannot connect to {netloc}: connection refused", retry=False)
        if isinstance(e, socket.timeout):
            return TransferError(f"{netloc} did not answer within {TIMEOUT:.0f} s", retry=False)
        if isinstance(e, socket.gaierror):
            host = netloc.rsplit(":", 1)[0]
            return TransferError(f"cannot find the registry host {host}: {e.strerror}", retry=False)
        why = getattr(e, "strerror", None) or str(e) or type(e).__name__
        return TransferError(f"connection to {netloc} failed: {why}")

    def _finish(self, resp: http.client.HTTPResponse, limit: int = MAX_SMALL_BODY) -> bytes:
        """Read a small answer whole (so the connection can carry the next request)."""
        chunks, total = [], 0
        try:
            while True:
                chunk = resp.read(min(CHUNK, limit + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
                if total > limit:
                    resp.close()
                    self._drop_all()
                    raise RegistryError(f"{self.name}: an answer larger than {limit} bytes: refused")
            if resp.length:
                # read(n) ends quietly where a connection did: the length says what is missing.
                raise http.client.IncompleteRead(b"", resp.length)
        except (OSError, http.client.HTTPException) as e:
            self._drop_all()
            raise TransferError(f"{self.name}: the answer was cut off ({e!r})") from None
        return b"".join(chunks)

    # Requests -----------------------------------------------------------------------
    def request(
        self,
        method: str,
        url: str,
        headers: dict | None = None,
        body=None,
        ok: tuple[int, ...] = (200,),
        stream: bool = False,
        limit: int = MAX_SMALL_BODY,
        what: str = "",
    ) -> tuple[http.client.HTTPResponse, bytes]:
        """Send a request (auth, redirects, a stale connection handled); (response, body).

        With ``stream`` the body is left to the caller to read (or close) for
        an answer in ``ok``; otherwise it is read whole, up to ``limit``.
        """
        if method in ("GET", "HEAD") and not stream:
            # Idempotent and read whole: a transfer cut off is simply asked for again.
            for attempt in range(RETRIES + 1):
                try:
                    return self._request(method, url, headers, body, ok, stream, limit, what)
                except TransferError as e:
                    if attempt == RETRIES or not e.retry:
                        raise
        return self._request(method, url, headers, body, ok, stream, limit, what)

    def _request(self, method, url, headers, body, ok, stream, limit, what):
        url = self.checked_url(self.endpoint.base + "/", url, "a request to")
        start = body.tell() if hasattr(body, "tell") else None
        auth_tries = 0
        for _hop in range(MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            ours = parts.netloc == self.endpoint.netloc and parts.scheme == self.endpoint.scheme
            sent = self._auth if ours else None
            all_headers = {"User-Agent": USER_AGENT, **(headers or {})}
            if sent:
                all_headers["Authorization"] = sent
            resp = self._send(method, url, all_headers, body)
            if resp.status == 401 and ours:
                self._finish(resp)
                if auth_tries >= 2:
                    raise self._denied(resp)
                auth_tries += 1
                self._authenticate(resp.getheader("WWW-Authenticate") or "", sent)
                if start is not None:
                    body.seek(start)
                continue
            if resp.status in (301, 302, 303, 307, 308) and resp.getheader("Location"):
                self._finish(resp)
                target = self.checked_url(url, resp.getheader("Location"), "a redirect to")
                if resp.status == 303:
                    method, body, start = "GET", None, None
                elif start is not None:
                    body.seek(start)
                url = target
                continue
            if stream and resp.status in ok:
                return resp, b""
            data = self._finish(resp, limit if resp.status in ok else MAX_SMALL_BODY)
            if resp.status not in ok:
                raise self._refused(resp, data, what or f"{method} {parts.path}")
            return resp, data
        raise RegistryError(f"{self.name}: more than {MAX_REDIRECTS} redirects")

    def _refused(self, resp: http.client.HTTPResponse, data: bytes, what: str) -> RegistryError:
        if resp.status == 400 and self.endpoint.insecure and b"HTTPS server" in data:
            return RegistryError(f"{self.endpoint.netloc} serves HTTPS: leave out --insecure")
        if resp.status == 403:
            return self._denied(resp)
        return RegistryError(f"{self.name}: {what}: {_error_text(resp, data)}", resp.status)

    def _denied(self, resp: http.client.HTTPResponse) -> RegistryError:
        if self.endpoint.creds:
            why = f"the credentials for {self.endpoint.registry} were refused or do not allow {self.actions}"
        else:
            why = self._login_hint()
        return RegistryError(f"{self.name}: access denied ({resp.status}): {why}", resp.status)

    # Authentication -----------------------------------------------------------------
    def _login_hint(self) -> str:
        return f"authentication required: hako login {self.endpoint.registry} (or --creds USER:PASSWORD)"

    def _basic(self) -> str | None:
        if not self.endpoint.creds:
            return None
        user, password = self.endpoint.creds
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def _authenticate(self, header: str, sent: str | None) -> None:
        with self._auth_lock:
            if self._auth != sent:
                return  # another thread has already answered this challenge
            challenges = dict(parse_challenges(header))
            if "bearer" in challenges:
                self._auth = "Bearer " + self._token(challenges["bearer"])
            elif "basic" in challenges:
                basic = self._basic()
                if basic is None:
                    raise RegistryError(f"{self.name}: {self._login_hint()}")
                if sent == basic:
                    raise RegistryError(f"{self.endpoint.registry}: wrong username or password")
                self._auth = basic
            else:
                raise RegistryError(
                    f"{self.endpoint.registry}: asks for an authentication hako does not know: {header!r}"
                )

    def _token(self, params: dict) -> str:
        realm = params.get("realm", "")
        try:
            parts = urlsplit(realm)
            parts.port  # noqa: B018 - a port that is not a number raises ValueError
        except ValueError:
            parts = urlsplit("")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RegistryError(f"{self.endpoint.registry}: its token realm {_shown(realm)} is not a URL")
        if parts.scheme == "http" and not self.endpoint.insecure:
            raise RegistryError(
                f"{self.endpoint.registry}: its token service {_shown(realm)} is plain HTTP:"
                " allow it with --insecure"
            )
        scopes = params.get("scope", "").split()
        if self.repository:
            mine = f"repository:{self.repository}:{self.actions}"
            if mine not in scopes:
                scopes.append(mine)
        query = [("service", params["service"])] if params.get("service") else []
        query += [("scope", s) for s in scopes]
        headers = {"User-Agent": USER_AGENT}
        basic = self._basic()
        if basic:
            query.append(("account", self.endpoint.creds[0]))
            headers["Authorization"] = basic
        url = realm + ("&" if parts.query else "?") + urlencode(query)
        resp = self._send("GET", url, headers, None)
        data = self._finish(resp)
        if resp.status in (401, 403):
            if basic:
                raise RegistryError(f"{self.endpoint.registry}: wrong username or password")
            raise RegistryError(f"{self.name}: {self._login_hint()}")
        if resp.status != 200:
            raise RegistryError(
                f"{self.endpoint.registry}: token service {_shown(realm)}: {_error_text(resp, data)}"
            )
        try:
            answer = _json(data)
        except ValueError:
            answer = None
        token = (answer.get("token") or answer.get("access_token")) if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"{self.endpoint.registry}: token service {_shown(realm)} sent no token")
        if not (token.isascii() and token.isprintable()):
            why = "sent a token that is not printable ASCII"
            raise RegistryError(f"{self.endpoint.registry}: token service {_shown(realm)} {why}")
        return token

    # The API --------------------------------------------------------------------------
    def ping(self) -> None:
        """GET /v2/ (with credentials, answering any challenge): raises unless the registry says yes."""
        self.request("GET", "/v2/", what="GET /v2/")

    def manifest(self, target: str) -> tuple[dict, str, str]:
        """(manifest, media type, digest) of a tag or digest; a digest asked for is checked."""
        label = f"{self.name}{'@' if reference.is_digest(target) else ':'}{target}"
        path = f"/v2/{self.repository}/manifests/{target}"
        try:
            resp, data = self.request("GET", path, {"Accept": ACCEPT}, limit=MAX_MANIFEST, what="manifest")
        except RegistryError as e:
            if e.status == 404:
                raise NotFound(f"{label}: no such manifest in the registry") from None
            raise
        try:
            manifest = _json(data)
        except ValueError as e:
            raise RegistryError(f"{label}: the manifest is not JSON ({e})") from None
        if not isinstance(manifest, dict):
            raise RegistryError(f"{label}: the manifest is not a JSON object")
        media_type = (resp.getheader("Content-Type") or "").split(";")[0].strip()
        if media_type not in (INDEX_OCI, LIST_DOCKER, MANIFEST_OCI, MANIFEST_DOCKER, *SCHEMA1):
            media_type = manifest.get("mediaType") or ""
            if not media_type:
                media_type = INDEX_OCI if "manifests" in manifest else MANIFEST_OCI
        if media_type in SCHEMA1 or manifest.get("schemaVersion") == 1:
            raise RegistryError(
                f"{label}: an image manifest of schema 1 (deprecated long ago): hako does not pull it;"
                " push the image again with a current tool"
            )
        if media_type not in (INDEX_OCI, LIST_DOCKER, MANIFEST_OCI, MANIFEST_DOCKER):
            raise RegistryError(f"{label}: not an image manifest ({_shown(media_type)})")
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        said = resp.getheader("Docker-Content-Digest")
        if reference.is_digest(target) and digest != target:
            raise RegistryError(f"{label}: the manifest sent has digest {digest}: refused")
        if said and said.startswith("sha256:") and said != digest:
            raise RegistryError(
                f"{label}: the registry says its digest is {_shown(said)}, its content's is {digest}"
            )
        return manifest, media_type, digest

    def blob_bytes(self, descriptor: dict, limit: int) -> bytes:
        """A small blob (a config), checked against its descriptor."""
        digest, size = descriptor["digest"], descriptor["size"]
        if size > limit:
            raise RegistryError(f"{self.name}: blob {digest} is {size} bytes (more than {limit}): refused")
        _resp, data = self.request(
            "GET", f"/v2/{self.repository}/blobs/{digest}", limit=limit, what=f"blob {digest}"
        )
        got = "sha256:" + hashlib.sha256(data).hexdigest()
        if got != digest or len(data) != size:
            raise RegistryError(f"{self.name}: blob {digest}: the data's digest is {got}: refused")
        return data

    def has_blob(self, digest: str) -> bool:
        resp, _ = self.request("HEAD", f"/v2/{self.repository}/blobs/{digest}", ok=(200, 404))
        return resp.status == 200

    def upload_blob(self, digest: str, body, size: int) -> None:
        """POST an upload, then PUT the whole blob to where the registry said, with ?digest=."""
        resp, _ = self.request(
            "POST", f"/v2/{self.repository}/blobs/uploads/", ok=(202, 201), what="starting an upload"
        )
        if resp.status == 201:
            return
        location = resp.getheader("Location")
        if not location:
            raise RegistryError(f"{self.name}: the upload started has no Location")
        started = self.endpoint.base + f"/v2/{self.repository}/blobs/uploads/"
        # The blob goes where the registry says only over HTTPS (plain HTTP with --insecure).
        self.checked_url(started, location, "the upload's Location")
        url = upload_url(started, location, digest)
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        self.request("PUT", url, headers, body, ok=(201,), what=f"uploading blob {digest}")

    def put_manifest(self, tag: str, data: bytes, media_type: str) -> str | None:
        resp, _ = self.request(
            "PUT",
            f"/v2/{self.repository}/manifests/{tag}",
            {"Content-Type": media_type},
            data,
            ok=(201, 200),
            what=f"putting manifest {tag}",
        )
        return resp.getheader("Docker-Content-Digest")

    def download(self, descriptor: dict, f, cancel: threading.Event) -> tuple[bool, str]:
        """Download a blob into ``f`` (a file opened a+b) after what it holds: (resumed?, digest).

        The caller compares the digest. A transfer cut off mid-way is resumed
        a few times; a registry that ignores Range sends it all again.
        """
        digest, size = descriptor["digest"], descriptor["size"]
        sha, have = _hash_file(f, size)
        resumed = have > 0
        path = f"/v2/{self.repository}/blobs/{digest}"
        failures = 0
        while have < size:
            if cancel.is_set():
                raise _Cancelled()
            headers = {"Range": f"bytes={have}-"} if have else {}
            try:
                resp, _ = self.request(
                    "GET", path, headers, ok=(200, 206, 416), stream=True, what=f"blob {digest}"
                )
                start = (resp.getheader("Content-Range") or "").startswith(f"bytes {have}-")
                if resp.status == 416 or (resp.status == 206 and not start):
                    resp.close()
                    raise TransferError(f"the registry refused to resume at byte {have}", retry=True)
                if resp.status == 200 and have:
                    # The registry sends it all again.
                    f.truncate(0)
                    sha, have, resumed = hashlib.sha256(), 0, False
                have = self._receive(resp, f, sha, have, size, digest, cancel)
                if have < size:
                    raise TransferError(f"the registry sent {have} of {size} bytes")
            except TransferError as e:
                # Mostly a reset or a connection ended early: on from where the data ends.
                self._drop_all()
                if cancel.is_set():
                    raise _Cancelled() from None
                failures += 1
                if failures > RETRIES or not e.retry:
                    raise TransferError(
                        f"{self.name}: downloading blob {digest} failed ({e}); pull again to resume",
                        retry=False,
                    ) from None
                if "refused to resume" in str(e):
                    f.truncate(0)  # from the start then
                sha, have = _hash_file(f, size)
                resumed = resumed or have > 0
        return resumed, "sha256:" + sha.hexdigest()

    def _receive(self, resp, f, sha, have: int, size: int, digest: str, cancel: threading.Event) -> int:
        """Append an answer's body to ``f``; how much ``f`` holds then."""
        try:
            while True:
                if cancel.is_set():
                    resp.close()
                    raise _Cancelled()
                try:
                    # What has arrived, not a whole CHUNK: what a Ctrl-C or a cut leaves
                    # in the file is all that came.
                    chunk = resp.read1(CHUNK)
                    if not chunk:
                        resp.read()  # the answer's end: its connection can carry the next request
                except (OSError, http.client.HTTPException) as e:
                    if cancel.is_set():
                        raise _Cancelled() from None
                    retry = not isinstance(e, socket.timeout)
                    raise TransferError(f"the transfer broke off: {e!r}", retry=retry) from None
                if not chunk:
                    return have
                have += len(chunk)
                if have > size:
                    resp.close()
                    raise RegistryError(
                        f"{self.name}: blob {digest} is longer than its {size} bytes: refused"
                    )
                f.write(chunk)
                sha.update(chunk)
        finally:
            f.flush()


def _shut_down(sock) -> None:
    """End a socket's traffic (a thread blocked reading it wakes up); it may be closed already."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # not SSLSocket's: that drops the TLS state
    except OSError:
        pass


class _UntilCancelled:
    """A file read as if it ended where ``cancel`` was set (so an unpack under way stops)."""

    def __init__(self, f, cancel: threading.Event) -> None:
        self._f = f
        self._cancel = cancel

    def read(self, n: int = -1) -> bytes:
        return b"" if self._cancel.is_set() else self._f.read(n)


def _hash_file(f, limit: int):
    """(sha256 of what ``f`` holds, its size); what is beyond ``limit`` bytes is cut off first."""
    size = f.seek(0, os.SEEK_END)
    if size > limit:
        f.truncate(0)
        size = 0
    sha = hashlib.sha256()
    f.seek(0)
    while True:
        chunk = f.read(CHUNK)
        if not chunk:
            break
        sha.update(chunk)
    f.seek(0, os.SEEK_END)
    return sha, size


# Pull -----------------------------------------------------------------------------
class PullResult:
    __slots__ = ("image", "reference", "digest", "updated")

    def __init__(self, image, ref: str, digest: str, updated: bool) -> None:
        self.image = image
        self.reference = ref
        self.digest = digest
        self.updated = updated


def _check_descriptor(descriptor: object, what: str, name: str) -> dict:
    if not isinstance(descriptor, dict):
        raise RegistryError(f"{name}: the manifest's {what} is not a descriptor")
    digest, size = descriptor.get("digest"), descriptor.get("size")
    if not _is_sha256(digest):
        raise RegistryError(
            f"{name}: the manifest's {what} has digest {_shown(digest)}: hako takes sha256 digests only"
        )
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise RegistryError(f"{name}: the manifest's {what} has size {_shown(size)}")
    return descriptor


def parse_config(data: bytes, what: str) -> tuple[dict, list[str]]:
    """An image config as the store reads it (UTF-8 JSON, no byte order mark): (config, diff IDs).

    Anything else is a RegistryError naming ``what``: a config the store
    could not read must be refused before any layer is fetched for it.
    """
    why = None
    config: object = None
    if data.startswith(codecs.BOM_UTF8):
        why = "it starts with a byte order mark"
    else:
        try:
            config = lean.loads(data.decode("utf-8"))
        except UnicodeDecodeError:
            why = "not UTF-8"
        except RecursionError:
            why = "JSON nested too deeply"
        except ValueError as e:
            why = f"not JSON: {e}"
    if why is None and not isinstance(config, dict):
        why = "not a JSON object"
    if why is not None:
        raise RegistryError(f"{what} is not an image config ({why})")
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list):
        raise RegistryError(f"{what} is not an image config (no rootfs.diff_ids list)")
    for diff_id in diff_ids:
        if not _is_sha256(diff_id):
            raise RegistryError(f"{what} has a layer ID {_shown(diff_id)}: sha256 only")
    return config, diff_ids


def _nothing(_line: str) -> None:
    pass


def pull(
    images,
    name: str,
    *,
    insecure: bool = False,
    tls_ca: str | None = None,
    creds: tuple[str, str] | None = None,
    platform: tuple[str, str, str | None] | None = None,
    progress=None,
) -> PullResult:
    """Pull ``name`` into ``images`` (an ImageStore); tag it unless it was named by digest.

    Whatever ends it early (an error, Ctrl-C) removes the layers it added.
    """
    progress = progress or _nothing
    ref = reference.remote(name)
    local = reference.parse(name)
    _workers()  # a bad setting is an error before anything is fetched
    creds = creds or stored_credentials(ref.registry)
    client = Client(Endpoint(ref.registry, insecure, tls_ca, creds), ref.repository, "pull")
    want = platform or host_platform()
    label = f"{ref.name}@{ref.digest}" if ref.digest else f"{ref.name}:{ref.tag}"
    added: list[str] = []  # the layers this pull put in the store
    try:
        target = ref.digest or ref.tag
        progress(f"{target}: Pulling from {ref.repository}")
        manifest, media_type, digest = client.manifest(target)
        top_digest = digest
        if media_type in (INDEX_OCI, LIST_DOCKER):
            entries = manifest.get("manifests")
            if not isinstance(entries, list):
                raise RegistryError(f"{label}: the index lists no manifests")
            chosen = _check_descriptor(pick_manifest(entries, want, label), "platform manifest", label)
            manifest, media_type, digest = client.manifest(chosen["digest"])
            if media_type not in (MANIFEST_OCI, MANIFEST_DOCKER):
                raise RegistryError(
                    f"{label}: the index for {'/'.join(p for p in want if p)} names a {media_type}"
                )
        config_desc = _check_descriptor(manifest.get("config"), "config", label)
        if config_desc.get("mediaType") not in (CONFIG_OCI, CONFIG_DOCKER, None):
            raise RegistryError(
                f"{label}: not a container image (its config is {_shown(config_desc.get('mediaType'))})"
            )
        layer_descs = manifest.get("layers")
        if not isinstance(layer_descs, list):
            raise RegistryError(f"{label}: the manifest lists no layers")
        layer_descs = [_check_descriptor(d, f"layer {i + 1}", label) for i, d in enumerate(layer_descs)]
        for d in layer_descs:
            kind = d.get("mediaType")
            if kind in FOREIGN_LAYER_TYPES or d.get("urls"):
                raise RegistryError(
                    f"{label}: layer {d['digest']} is a foreign layer ({_shown(kind)}): not pulled"
                )
            if kind not in LAYER_TYPES:
                raise RegistryError(
                    f"{label}: layer {d['digest']} has media type {_shown(kind)}, not a tar layer"
                )
        image_id = config_desc["digest"]
        config_bytes = client.blob_bytes(config_desc, MAX_CONFIG)
        config, diff_ids = parse_config(config_bytes, f"{label}: its config {image_id}")
        if len(diff_ids) != len(layer_descs):
            raise RegistryError(
                f"{label}: the config names {len(diff_ids)} layers, the manifest {len(layer_descs)}"
            )
        image_platform = (config.get("os"), config.get("architecture"))
        if image_platform != want[:2]:
            shown = "/".join(_printable(str(p), 40) for p in image_platform)
            progress(f"WARNING: the image is for {shown}, this host is {'/'.join(want[:2])}")
        fetched = _fetch_layers(client, images, layer_descs, diff_ids, progress, added)
        repo_digest = f"{local.name}@{top_digest}"
        tag = None if ref.digest else f"{local.name}:{local.tag}"
        before = _image_id(images, tag or repo_digest)
        image = images.add_image_config(config_bytes, image_id, tag, meta={"repo_digests": [repo_digest]})
    except BaseException as e:
        # After a network failure or Ctrl-C, what was downloaded is kept to resume from.
        _remove_added(images, added, keep_blobs=isinstance(e, (TransferError, KeyboardInterrupt)))
        raise
    finally:
        client.close()
    updated = fetched or before != image_id
    progress(f"Digest: {top_digest}")
    if updated:
        progress(f"Status: Downloaded newer image for {tag or repo_digest}")
    else:
        progress(f"Status: Image is up to date for {tag or repo_digest}")
    return PullResult(image, str(ref), top_digest, updated)


def _remove_added(images, added: list[str], keep_blobs: bool) -> None:
    """Remove the layers a pull added (those no image uses); with ``keep_blobs`` their blobs
    stay in tmp/partial/, where the next pull finds them whole."""
    if not added:
        return
    partial = os.path.join(images.tmp_dir(), "partial")
    kept = []
    if keep_blobs:
        os.makedirs(partial, exist_ok=True)
        for diff_id in added:
            digest = (images.layer_info(diff_id) or {}).get("digest")
            if not _is_sha256(digest):
                continue
            target = os.path.join(partial, digest[7:])
            try:
                os.link(images.blob_path(digest), target)
            except OSError:
                continue  # a partial download of it there already (another pull's), or no blob
            kept.append((diff_id, target))
    images.remove_unused_layers(added)
    for diff_id, target in kept:
        if images.has_layer(diff_id):
            _unlink(target)  # an image uses it after all: nothing to resume
    _rmdir(partial)


def _workers() -> int:
    """How many layers move at once: HAKO_MAX_CONCURRENT_TRANSFERS, or 3."""
    value = os.environ.get("HAKO_MAX_CONCURRENT_TRANSFERS", str(WORKERS))
    if not value.isdigit() or not 1 <= int(value) <= 64:
        raise InvalidValue("HAKO_MAX_CONCURRENT_TRANSFERS", value, "a number from 1 to 64")
    return int(value)


def _image_id(images, name: str) -> str | None:
    try:
        return images.get(name).id
    except NotFound:
        return None


def _fetch_layers(client: Client, images, descs: list, diff_ids: list, progress, added: list) -> bool:
    """Download and unpack the layers the store lacks, a few at a time; True if any was.

    Each layer added is appended to ``added`` as soon as it is in place.
    """
    todo: dict[str, dict] = {}
    for desc, diff_id in zip(descs, diff_ids):
        short = desc["digest"][7:19]
        if images.has_layer(diff_id):
            progress(f"{short}: Already exists")
        elif diff_id not in todo:
            todo[diff_id] = desc
            progress(f"{short}: Pulling fs layer")
    if not todo:
        return False
    partial = os.path.join(images.tmp_dir(), "partial")
    os.makedirs(partial, exist_ok=True)
    cancel = threading.Event()

    def fetch(item: tuple[str, dict]) -> None:
        diff_id, desc = item
        if _fetch_layer(client, images, partial, desc, diff_id, cancel, progress):
            added.append(diff_id)  # (list.append is atomic)

    try:
        # On Ctrl-C the transfers end now, an unpack under way stops; the downloads stay.
        errors = _in_threads(list(todo.items()), fetch, client, cancel)
    except BaseException:
        _rmdir(partial)
        raise
    if errors:
        first = next((e for e in errors if not isinstance(e, TransferError)), errors[0])
        if not isinstance(first, TransferError):
            # Refused content: nothing of this pull is kept, not even its partial
            # downloads. (After a network failure they are what the next pull
            # resumes from.)
            for desc in todo.values():
                _unlink(os.path.join(partial, desc["digest"][7:]))
        _rmdir(partial)
        raise first
    _rmdir(partial)
    return True


def _fetch_layer(client: Client, images, partial: str, desc: dict, diff_id: str, cancel, progress) -> bool:
    """One layer: download (resuming), verify, unpack; True if this call added it."""
    digest = desc["digest"]
    short = digest[7:19]
    path = os.path.join(partial, digest[7:])
    import fcntl

    while True:
        f = open(path, "a+b")  # closed below, after the unpack
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # another pull of the same blob waits here
            try:
                same = os.stat(path).st_ino == os.fstat(f.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
        except BaseException:
            f.close()
            raise
        f.close()
    try:
        if images.has_layer(diff_id):
            _unlink(path)
            progress(f"{short}: Already exists")
            return False
        if f.seek(0, os.SEEK_END):
            progress(f"{short}: Resuming download")
        for attempt in (0, 1):
            resumed, got = client.download(desc, f, cancel)
            if got == digest:
                break
            f.truncate(0)
            if resumed and attempt == 0:
                progress(f"{short}: The partial download was damaged: downloading it again")
                continue
            _unlink(path)
            raise RegistryError(f"{client.name}: blob {digest}: the data's digest is {got}: refused")
        progress(f"{short}: Download complete")
        f.seek(0)
        try:
            images.unpack_layer(
                _UntilCancelled(f, cancel),
                expected_diff_id=diff_id,
                expected_digest=digest,
                media_type=desc.get("mediaType"),
                field="layer",
            )
        except BaseException:
            if cancel.is_set():
                raise _Cancelled() from None  # the download, whole, stays for the next pull
            raise
        _unlink(path)
        progress(f"{short}: Pull complete")
        return True
    except _Cancelled:
        if not os.fstat(f.fileno()).st_size:
            _unlink(path)  # nothing downloaded: nothing to resume
        raise
    except InvalidValue:
        _unlink(path)
        raise
    except OSError as e:
        # The disk, not the network (that is TransferError): say which file.
        raise HakoError(f"pulling layer {digest}: {e.strerror or e} ({e.filename or path})") from None
    finally:
        f.close()


def _in_threads(items: list, job, client: Client, cancel: threading.Event) -> list[BaseException]:
    """``job(item)`` for each item, in a few threads (HAKO_MAX_CONCURRENT_TRANSFERS); the errors.

    The first error sets ``cancel``: the other threads take no new item. On
    Ctrl-C the client's transfers are cut and the threads waited for.
    """
    pending = list(items)
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker() -> None:
        while not cancel.is_set():
            with lock:
                if not pending:
                    return
                item = pending.pop(0)
            try:
                job(item)
            except _Cancelled:
                return
            except BaseException as e:  # noqa: BLE001 - handed to the main thread
                with lock:
                    errors.append(e)
                cancel.set()
                return

    def stop() -> None:
        cancel.set()
        client.abort()

    _run_workers(min(_workers(), len(items)), worker, stop)
    return errors


def _run_workers(count: int, worker, stop) -> None:
    """Run ``worker`` in ``count`` threads and wait until all have ended.

    If this thread is interrupted (Ctrl-C) meanwhile, ``stop`` tells the
    workers to end, and they are waited for all the same before the
    interruption goes on: nothing of theirs is left half-done. (The waiting
    is on events of their own: an interrupted Thread.join can take a running
    thread for ended.)
    """
    done: list[threading.Event] = []

    def run(event: threading.Event) -> None:
        try:
            worker()
        finally:
            event.set()

    try:
        for _ in range(count):
            event = threading.Event()
            threading.Thread(target=run, args=(event,), daemon=True).start()
            done.append(event)
        for event in done:
            event.wait()
    except BaseException:
        stop()
        for event in done:
            event.wait()
        raise


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _rmdir(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass


# Push -----------------------------------------------------------------------------
def push(
    images,
    source: str,
    destination: str | None = None,
    *,
    insecure: bool = False,
    tls_ca: str | None = None,
    creds: tuple[str, str] | None = None,
    progress=None,
) -> tuple[str, int, str]:
    """Push a stored image as an OCI image manifest; (digest, manifest size, reference pushed).

    Layer blobs go as stored, except bzip2 and xz ones: those are gzipped
    again first (under tmp/, removed afterwards), as `hako image save` does.
    """
    from . import archive

    progress = progress or _nothing
    _workers()
    if destination is not None:
        _push_target(destination)  # bad input first, before anything is looked up
    image = images.get(source)
    if destination is None:
        if source.startswith("sha256:") or source == image.id[7 : 7 + len(source)]:
            raise InvalidValue("image", source, "an image ID needs a destination: hako push ID NAME[:TAG]")
        destination = source
    ref, local = _push_target(destination)
    config_bytes = images.config_bytes(image.id)
    if "sha256:" + hashlib.sha256(config_bytes).hexdigest() != image.id:
        raise RegistryError(f"image {image.id}: its stored config does not match its ID")
    for diff_id in image.diff_ids():
        info = images.layer_info(diff_id) or {}
        blob = images.blob_path(info["digest"]) if _is_sha256(info.get("digest")) else ""
        if not blob or not os.path.isfile(blob):
            raise NotFound(f"image {source}: layer {diff_id} has no blob to push")
    creds = creds or stored_credentials(ref.registry)
    client = Client(Endpoint(ref.registry, insecure, tls_ca, creds), ref.repository, "pull,push")
    progress(f"The push refers to repository [{ref.name}]")
    try:
        client.ping()
        with images.staging("push") as staged:
            # digest -> (path, size): the stored blob, or its gzipped copy in ``staged``.
            blobs: dict[str, tuple] = {}
            layer_descs = [
                archive._layer_blob(images, image, diff_id, staged, blobs) for diff_id in image.diff_ids()
            ]
            _push_blobs(client, blobs, layer_descs, progress)
        config_digest = image.id
        if not client.has_blob(config_digest):
            client.upload_blob(config_digest, config_bytes, len(config_bytes))
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_OCI,
            "config": {"mediaType": CONFIG_OCI, "digest": config_digest, "size": len(config_bytes)},
            "layers": layer_descs,
        }
        data = json.dumps(manifest, separators=(",", ":")).encode()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        said = client.put_manifest(ref.tag, data, MANIFEST_OCI)
        if said and said != digest:
            raise RegistryError(f"{ref}: the registry stored the manifest as {_shown(said)}, not {digest}")
    finally:
        client.close()
    images.update_meta(image.id, {"repo_digests": [f"{local.name}@{digest}"]})
    return digest, len(data), f"{ref.name}:{ref.tag}"


def _push_target(destination: str) -> tuple[reference.Reference, reference.Reference]:
    ref = reference.remote(destination)
    if ref.digest:
        raise InvalidValue("destination", destination, "push to a tag, not to a digest")
    return ref, reference.parse(destination)


def _push_blobs(client: Client, blobs: dict, descs: list, progress) -> None:
    """Upload the layer blobs ``descs`` name that the registry lacks (``blobs``: digest -> (path, size))."""

    def upload(desc: dict) -> None:
        short = desc["digest"][7:19]
        if client.has_blob(desc["digest"]):
            progress(f"{short}: Layer already exists")
            return
        with open(blobs[desc["digest"]][0], "rb") as f:
            client.upload_blob(desc["digest"], f, desc["size"])
        progress(f"{short}: Pushed")

    errors = _in_threads(list({d["digest"]: d for d in descs}.values()), upload, client, threading.Event())
    if errors:
        raise errors[0]


# Login ----------------------------------------------------------------------------
def login(
    registry: str, user: str, password: str, *, insecure: bool = False, tls_ca: str | None = None
) -> None:
    """Check ``user``/``password`` against the registry: GET /v2/, answering its challenge with them."""
    client = Client(Endpoint(registry, insecure, tls_ca, (user, password)), None)
    try:
        client.ping()
    finally:
        client.close()
