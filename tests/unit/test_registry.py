"""The registry client's pure parts: challenges, platforms, registry names, credentials, URLs,
error texts and image configs."""

from __future__ import annotations

import json
import re

import pytest
from hako.errors import InvalidValue, NotFound
from hako.images import registry


def test_a_bearer_challenge_with_a_quoted_comma() -> None:
    header = (
        'Bearer realm="https://auth.example/token",service="reg.example",scope="repository:a/b:pull,push"'
    )
    assert registry.parse_challenges(header) == [
        (
            "bearer",
            {
                "realm": "https://auth.example/token",
                "service": "reg.example",
                "scope": "repository:a/b:pull,push",
            },
        )
    ]


def test_several_challenges_and_plain_values() -> None:
    header = 'Basic realm="r\\"x", Bearer realm=https://t/token , service=s'
    assert registry.parse_challenges(header) == [
        ("basic", {"realm": 'r"x'}),
        ("bearer", {"realm": "https://t/token", "service": "s"}),
    ]
    assert registry.parse_challenges("Negotiate") == [("negotiate", {})]
    assert registry.parse_challenges("") == []


def entry(arch: str, variant: str | None = None, os: str = "linux") -> dict:
    platform = {"os": os, "architecture": arch, **({"variant": variant} if variant else {})}
    return {"digest": f"sha256:{arch}{variant or ''}", "platform": platform}


def test_the_platform_picked_from_an_index() -> None:
    manifests = [entry("amd64", os="windows"), entry("arm", "v7"), entry("arm64", "v8"), entry("amd64")]
    assert registry.pick_manifest(manifests, ("linux", "amd64", None), "x")["digest"] == "sha256:amd64"
    assert registry.pick_manifest(manifests, ("linux", "arm64", "v8"), "x")["digest"] == "sha256:arm64v8"
    # arm64 without a variant fits a v8 host; an attestation entry (unknown/unknown) never fits.
    loose = [
        {"digest": "sha256:att", "platform": {"os": "unknown", "architecture": "unknown"}},
        entry("arm64"),
    ]
    assert registry.pick_manifest(loose, ("linux", "arm64", "v8"), "x")["digest"] == "sha256:arm64"


def test_no_fitting_platform_names_what_there_is() -> None:
    with pytest.raises(NotFound, match=r"no image for linux/s390x; it offers linux/amd64, linux/arm/v7"):
        registry.pick_manifest([entry("arm", "v7"), entry("amd64")], ("linux", "s390x", None), "x")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("linux/amd64", ("linux", "amd64", None)), ("linux/arm64", ("linux", "arm64", "v8")),
     ("linux/arm/v7", ("linux", "arm", "v7"))],
)  # fmt: skip
def test_platforms(text, expected) -> None:
    assert registry.parse_platform(text) == expected


@pytest.mark.parametrize("text", ["amd64", "linux/", "Linux/amd64", "linux/amd64/v1/x", "linux/am d64"])
def test_bad_platforms(text) -> None:
    with pytest.raises(InvalidValue, match="platform"):
        registry.parse_platform(text)


@pytest.mark.parametrize(
    ("text", "key"),
    [("127.0.0.1:5000", "127.0.0.1:5000"), ("https://reg.example/", "reg.example"),
     ("https://index.docker.io/v1/", "docker.io"), ("registry-1.docker.io", "docker.io"),
     ("http://localhost:5000/v2/", "localhost:5000")],
)  # fmt: skip
def test_registry_keys(text, key) -> None:
    assert registry.registry_key(text) == key


@pytest.mark.parametrize("text", ["", "reg.example/path", "-bad-", "host:port"])
def test_bad_registry_names(text) -> None:
    with pytest.raises(InvalidValue, match="registry"):
        registry.registry_key(text)


def test_creds_never_show_the_password() -> None:
    assert registry.parse_creds("alice:pa:ss") == ("alice", "pa:ss")
    for text in ("alice", "alice:", ":secret", "secret"):
        with pytest.raises(InvalidValue) as caught:
            registry.parse_creds(text)
        assert "secret" not in str(caught.value)


@pytest.mark.parametrize(
    ("location", "url"),
    [
        ("/v2/a/b/blobs/uploads/u1", "https://r:5000/v2/a/b/blobs/uploads/u1?digest=sha256%3Aab"),
        ("u2?_state=x%3D", "https://r:5000/v2/a/b/blobs/uploads/u2?_state=x%3D&digest=sha256%3Aab"),
        ("https://store.example/up?sig=1&exp=2", "https://store.example/up?sig=1&exp=2&digest=sha256%3Aab"),
    ],
)
def test_the_url_a_blob_is_put_to(location, url) -> None:
    assert registry.upload_url("https://r:5000/v2/a/b/blobs/uploads/", location, "sha256:ab") == url


# What a registry says, shown safely ------------------------------------------------------
def test_what_is_not_printable_is_escaped_and_long_text_cut() -> None:
    assert registry._printable("a\x1b[31m\nb\r\u202e\x07 c") == "a\\x1b[31m\\nb\\r\\u202e\\x07 c"
    assert registry._printable("x" * 300, 10) == "x" * 10 + "..."
    # Every message a RegistryError carries is one line.
    assert str(registry.RegistryError("one\ntwo\x1b[2J")) == "one\\ntwo\\x1b[2J"


class _Answer:
    def __init__(self, status: int = 500, reason: str = "Internal Server Error") -> None:
        self.status = status
        self.reason = reason


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (
            b'{"errors":[{"code":"DENIED","message":"no"},{"code":"X"}]}',
            "500 Internal Server Error (DENIED: no; X)",
        ),
        (b'{"errors":[{"code":"DENIED\\u001b[31m","message":"a\\nb"}]}', "(DENIED\\x1b[31m: a\\nb)"),
        (b'{"errors": 5}', '500 Internal Server Error ({"errors": 5})'),
        (
            b'{"errors": [5, "x", {"code": ["y"]}]}',
            '500 Internal Server Error ({"errors": [5, "x", {"code": ["y"]}]})',
        ),
        (b"[" * 100_000, "500 Internal Server Error (" + "[" * 200 + ")"),
        (b"oops\x1b[1m\r\nsecond line", "500 Internal Server Error (oops\\x1b[1m)"),
        (b"", "500 Internal Server Error"),
    ],
)
def test_an_error_answer_in_a_few_words(body, text) -> None:
    said = registry._error_text(_Answer(), body)
    assert text in said and said.isprintable()


def test_an_error_reason_phrase_is_escaped() -> None:
    assert registry._error_text(_Answer(502, "Bad\x1b[31m"), b"") == "502 Bad\\x1b[31m"


def client(insecure: bool = False) -> registry.Client:
    return registry.Client(registry.Endpoint("reg.example:5000", insecure), "a/b")


def test_a_url_the_registry_names_is_https_or_resolved_against_it() -> None:
    base = "https://reg.example:5000/v2/a/b/blobs/uploads/"
    for location, url in [
        ("/v2/a/b/blobs/uploads/u1", "https://reg.example:5000/v2/a/b/blobs/uploads/u1"),
        ("u2?_state=x", "https://reg.example:5000/v2/a/b/blobs/uploads/u2?_state=x"),
        ("//store.example/up", "https://store.example/up"),
        ("https://store.example/up?sig=1", "https://store.example/up?sig=1"),
    ]:
        assert client().checked_url(base, location, "the upload's Location") == url
    # Plain HTTP only with --insecure.
    assert client(True).checked_url(base, "http://store.example/up", "x") == "http://store.example/up"


@pytest.mark.parametrize(
    ("location", "why"),
    [
        ("http://store.example/up", "is plain HTTP: refused"),
        ("ftp://store.example/up", "hako sends only to https URLs"),
        ("file:///etc/passwd", "hako sends only to https URLs"),
        ("http://[::1/up", "refused (not a URL)"),
        ("https://store.example:port/up", "refused (not a URL)"),
        ("https://store.example/a b", "refused (not a URL)"),
        ("https://store.example/a\x1b[31m", "refused (not a URL)"),
    ],
)
def test_a_url_hako_does_not_send_to(location, why) -> None:
    with pytest.raises(registry.RegistryError, match=re.escape(why)) as caught:
        client().checked_url("https://reg.example:5000/v2/", location, "the upload's Location")
    assert str(caught.value).isprintable()
    if location.startswith(("ftp:", "file:", "http://[")):
        with pytest.raises(registry.RegistryError, match=re.escape(why)):
            client(True).checked_url("http://reg.example:5000/v2/", location, "the upload's Location")


# Image configs, read as the store reads them ------------------------------------------------
DIFF_ID = "sha256:" + "ab" * 32
CONFIG = json.dumps({"os": "linux", "rootfs": {"type": "layers", "diff_ids": [DIFF_ID]}}).encode()


def test_a_config_is_read_with_its_diff_ids() -> None:
    config, diff_ids = registry.parse_config(CONFIG, "its config")
    assert config["os"] == "linux" and diff_ids == [DIFF_ID]


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\xef\xbb\xbf" + CONFIG, "it starts with a byte order mark"),
        (CONFIG.decode().encode("utf-16"), "not UTF-8"),
        (CONFIG.decode().encode("utf-16-le"), "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b"[]", "not a JSON object"),
        (b'{"rootfs": []}', "no rootfs.diff_ids list"),
        (b'{"rootfs": {"diff_ids": 5}}', "no rootfs.diff_ids list"),
        (b'{"rootfs": {"diff_ids": ["md5:00"]}}', "a layer ID 'md5:00': sha256 only"),
        (b'{"rootfs": {"diff_ids": [5]}}', "a layer ID 5: sha256 only"),
        (CONFIG + b"x", "not JSON"),
    ],
)
def test_a_config_the_store_could_not_read_is_refused(data, why) -> None:
    with pytest.raises(registry.RegistryError, match=re.escape(why)) as caught:
        registry.parse_config(data, "its config")
    assert str(caught.value).startswith("its config ") and str(caught.value).isprintable()


def test_any_error_of_a_pull_is_put_on_one_line() -> None:
    error = InvalidValue("hard link target", "x", "evil\x1b[31m\nname: no earlier such entry")
    assert registry.on_one_line(error) is error
    assert (
        str(error) == "invalid value for hard link target: 'x' (evil\\x1b[31m\\nname: no earlier such entry)"
    )
    plain = NotFound("no such image: a")
    assert str(registry.on_one_line(plain)) == "no such image: a"
