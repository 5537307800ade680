"""Image references as Docker writes them: [registry[:port]/]path[:tag][@sha256:digest]."""

from __future__ import annotations

from .. import text
from ..errors import InvalidValue

_TAG_CHARS = text.ALNUM | {"_", ".", "-"}
DOCKER_HUB = "docker.io"


class Reference:
    __slots__ = ("registry", "repository", "tag", "digest")

    def __init__(self, registry: str, repository: str, tag: str | None, digest: str | None) -> None:
        self.registry = registry  # "" for a local name without a registry
        self.repository = repository
        self.tag = tag
        self.digest = digest

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}" if self.registry else self.repository

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += ":" + self.tag
        if self.digest:
            out += "@" + self.digest
        return out


def is_digest(value: str) -> bool:
    return value.startswith("sha256:") and len(value) == 71 and text.made_of(value[7:], text.HEX)


def _is_registry(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost"


def parse(reference: str, field: str = "image") -> Reference:
    """Split and check a reference; the tag defaults to 'latest' unless a digest is given."""
    rest, at, digest = reference.partition("@")
    if at and not is_digest(digest):
        raise InvalidValue(field, reference, "the digest must be sha256: and 64 hex digits")
    last = rest.rsplit("/", 1)[-1]
    tag = None
    if ":" in last:
        rest, _, tag = rest.rpartition(":")
        if not text.made_of(tag, _TAG_CHARS, first=text.ALNUM | {"_"}, max_len=128):
            raise InvalidValue(field, reference, "a tag is letters, digits, _ . - (at most 128)")
    components = rest.split("/")
    registry = ""
    if len(components) > 1 and _is_registry(components[0]):
        registry = components.pop(0)
        host, _, port = registry.partition(":")
        if not text.is_hostname(host) or (port and not (port.isdigit() and len(port) <= 5)):
            raise InvalidValue(field, reference, f"{registry!r} is not a registry host[:port]")
    repository = "/".join(components)
    if not repository or len(reference) > 255 or not text.is_image_name(repository):
        raise InvalidValue(field, reference, "not a valid image reference (lowercase name[:tag])")
    if tag is None and not at:
        tag = "latest"
    return Reference(registry, repository, tag, digest if at else None)


def normalize(reference: str) -> str:
    """'busybox' -> 'busybox:latest'; refuses what cannot be an image name.

    Docker Hub's names are kept short as Docker shows them:
    'docker.io/library/debian:12' is 'debian:12', 'docker.io/lab/x' is 'lab/x'.
    """
    ref = parse(reference)
    if ref.digest:
        raise InvalidValue("image", reference, "a tag cannot contain a digest")
    if ref.registry in (DOCKER_HUB, "index.docker.io", "registry-1.docker.io"):
        ref.registry = ""
        if ref.repository.startswith("library/") and ref.repository.count("/") == 1:
            ref.repository = ref.repository[len("library/") :]
    return str(ref)


def remote(reference: str) -> Reference:
    """A reference to pull or push: without a registry it means Docker Hub (library/ for one component)."""
    ref = parse(reference)
    if not ref.registry:
        ref.registry = DOCKER_HUB
        if "/" not in ref.repository:
            ref.repository = "library/" + ref.repository
    return ref
