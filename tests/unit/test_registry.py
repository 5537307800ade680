"""The registry client's pure parts: challenges, platforms, registry names, credentials."""

from __future__ import annotations

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
