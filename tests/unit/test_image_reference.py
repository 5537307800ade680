"""Image references (registry, repository, tag, digest) and Dockerfile-style config changes."""

from __future__ import annotations

import pytest
from hako.errors import InvalidValue
from hako.images import changes, reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("busybox", "", "busybox", "latest", None),
        ("lab/debian:12", "", "lab/debian", "12", None),
        ("127.0.0.1:5000/lab/debian:12", "127.0.0.1:5000", "lab/debian", "12", None),
        ("localhost/app", "localhost", "app", "latest", None),
        ("registry.example.org/a/b/c:v1.0", "registry.example.org", "a/b/c", "v1.0", None),
        (f"127.0.0.1:5000/lab/debian@{DIGEST}", "127.0.0.1:5000", "lab/debian", None, DIGEST),
        (f"lab/debian:12@{DIGEST}", "", "lab/debian", "12", DIGEST),
    ],
)
def test_parse_splits_a_reference_as_docker_does(text, registry, repository, tag, digest) -> None:
    ref = reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)


@pytest.mark.parametrize(
    "text",
    ["", "UPPER", "a b", "../etc", "name:", ":tag", "name:-x", "host:99999999/app", "a//b",
     "name@sha256:abc", "name@md5:" + "0" * 32, "-lead/x", "x" * 256],
)  # fmt: skip
def test_parse_refuses_what_is_not_a_reference(text) -> None:
    with pytest.raises(InvalidValue) as caught:
        reference.parse(text)
    assert caught.value.value == text


def test_remote_defaults_to_docker_hub_and_library() -> None:
    ref = reference.remote("debian:12")
    assert (ref.registry, ref.repository, str(ref)) == (
        "docker.io",
        "library/debian",
        "docker.io/library/debian:12",
    )
    assert reference.remote("127.0.0.1:5000/x").registry == "127.0.0.1:5000"


def test_normalize_keeps_the_registry_and_refuses_digests() -> None:
    assert reference.normalize("127.0.0.1:5000/lab/app") == "127.0.0.1:5000/lab/app:latest"
    assert reference.normalize("docker.io/library/debian:12") == "debian:12"
    assert reference.normalize("docker.io/lab/app") == "lab/app:latest"
    assert reference.normalize("docker.io/library/a/b") == "library/a/b:latest"
    with pytest.raises(InvalidValue):
        reference.normalize(f"app@{DIGEST}")


def test_changes_apply_dockerfile_instructions_in_order() -> None:
    config = {"Env": ["PATH=/bin", "A=1"], "Cmd": ["sh"], "Labels": {"x": "1"}}
    out = changes.apply(
        config,
        [
            'CMD ["echo", "hi"]',
            "ENTRYPOINT /bin/run --fast",
            'ENV A=2 B="two words"',
            "env C 3",
            "LABEL y=2",
            "EXPOSE 80 53/udp",
            "WORKDIR /srv",
            "USER nobody:nogroup",
            "STOPSIGNAL SIGINT",
            "VOLUME /data",
        ],
    )
    assert out["Cmd"] == ["echo", "hi"]
    assert out["Entrypoint"] == ["/bin/sh", "-c", "/bin/run --fast"]
    assert out["Env"] == ["PATH=/bin", "A=2", "B=two words", "C=3"]
    assert out["Labels"] == {"x": "1", "y": "2"}
    assert out["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    assert (out["WorkingDir"], out["User"], out["StopSignal"]) == ("/srv", "nobody:nogroup", "SIGINT")
    assert out["Volumes"] == {"/data": {}}
    assert config["Cmd"] == ["sh"]  # the input is not changed


@pytest.mark.parametrize(
    "change", ["RUN apt-get update", "CMD", "CMD [1, 2]", 'CMD ["unclosed"', "ENV =x", "FROM x"]
)
def test_changes_refuse_what_docker_would_not_take(change) -> None:
    with pytest.raises(InvalidValue) as caught:
        changes.apply({}, [change])
    assert caught.value.field == "change" and caught.value.value == change
