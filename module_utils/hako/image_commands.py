"""The image commands: hako image ..., images, rmi, pull, push, commit, export, save, load, import.

The logic lives in hako.images (store, layers, registry, archives, builders);
these functions parse a command line, call it, and print what Docker prints.
"""

from __future__ import annotations

import os
import sys

from .args import Command, UsageError
from .cli import _engine
from .commands import _each, _print_table
from .errors import Conflict, HakoError, InvalidValue, NotFound


def cmd_image(argv: list[str]) -> int:
    actions = {
        "build": cmd_image_build,
        "ls": cmd_images,
        "list": cmd_images,
        "rm": cmd_rmi,
        "inspect": cmd_image_inspect,
        "history": cmd_history,
        "prune": cmd_image_prune,
        "tag": cmd_tag,
        "pull": cmd_pull,
        "push": cmd_push,
        "save": cmd_save,
        "load": cmd_load,
        "import": cmd_import,
    }
    if not argv or argv[0] not in actions:
        raise UsageError(f"hako image: expected one of {', '.join(actions)}")
    return actions[argv[0]](argv[1:])


# Building ------------------------------------------------------------------------
def cmd_image_build(argv: list[str]) -> int:
    args = (
        Command("image build", "Build an image: busybox (from the host's busybox-static).")
        .value("-t", "--tag", help="name:tag for the image")
        .positional("kind")
        .parse(argv)
    )
    engine = _engine()
    from .images import busybox

    if args.kind != "busybox":
        raise InvalidValue("image kind", args.kind, "this version builds: busybox")
    image = busybox.build(engine.images, args.tag or "busybox:latest")
    print(image.id)
    return 0


# Listing and looking -------------------------------------------------------------
def cmd_images(argv: list[str]) -> int:
    Command("image ls", "List images.").parse(argv)
    from .units import format_size

    engine = _engine()
    rows = [("REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE")]
    for image in engine.images.list():
        size = format_size(engine.images.image_size(image))
        for tag in image.tags or ["<none>:<none>"]:
            repo, _, t = tag.rpartition(":")
            rows.append((repo, t, image.short_id, image.config.get("created", ""), size))
    _print_table(rows)
    return 0


def cmd_image_inspect(argv: list[str]) -> int:
    command = Command("image inspect", "Show images' configuration as JSON.")
    args = command.positional("images", "+").parse(argv)
    import json

    engine = _engine()
    print(json.dumps([image_document(engine, engine.images.get(ref)) for ref in args.images], indent=2))
    return 0


def image_document(engine, image) -> dict:
    """What `hako image inspect` shows of an image (Docker's field names first)."""
    meta = engine.images.meta(image.id)
    return {
        "Id": image.id,
        "RepoTags": image.tags,
        "RepoDigests": meta.get("repo_digests", []),
        "Size": engine.images.image_size(image),
        **image.config,
    }


def cmd_history(argv: list[str]) -> int:
    raise HakoError("hako image history: not built yet")


# Removing --------------------------------------------------------------------------
def cmd_rmi(argv: list[str]) -> int:
    args = (
        Command("image rm", "Remove images.")
        .flag("-f", "--force", help="remove even if containers use it")
        .positional("images", "+")
        .parse(argv)
    )
    engine = _engine()

    def remove(ref: str) -> None:
        image = engine.images.get(ref)
        users = [r for r in (engine.load(c) for c in engine.ids()) if r["image_id"] == image.id]
        running = [r["name"] for r in users if engine.run_state(r["id"]) is not None]
        if running:
            # Its layers are the lower layers of those containers' roots.
            names = ", ".join(running)
            raise Conflict(f"image {ref} is used by running container(s) {names}: stop them first")
        if users and not args.force:
            names = ", ".join(r["name"] for r in users)
            raise Conflict(f"image {ref} is used by container(s) {names}: remove them first or use -f")
        engine.images.remove(ref)

    return _each(args.images, remove)


def cmd_image_prune(argv: list[str]) -> int:
    raise HakoError("hako image prune: not built yet")


def cmd_tag(argv: list[str]) -> int:
    raise HakoError("hako tag: not built yet")


# Registries ------------------------------------------------------------------------
def cmd_pull(argv: list[str]) -> int:
    raise HakoError("hako pull: not built yet")


def cmd_push(argv: list[str]) -> int:
    raise HakoError("hako push: not built yet")


def cmd_login(argv: list[str]) -> int:
    raise HakoError("hako login: not built yet")


def cmd_logout(argv: list[str]) -> int:
    raise HakoError("hako logout: not built yet")


# Containers into images, images into files ---------------------------------------
def cmd_commit(argv: list[str]) -> int:
    raise HakoError("hako commit: not built yet")


def cmd_export(argv: list[str]) -> int:
    args = (
        Command("export", "Write a container's filesystem (its image with its changes on top) as a tar.")
        .value("-o", "--output", help="write to this file instead of standard output")
        .positional("container")
        .parse(argv)
    )
    from .images import archive

    engine = _engine()
    engine.resolve(args.container)  # a missing container is an error before any output is made
    with archive.output(args.output) as out:
        archive.export(engine, args.container, out)
    return 0


def cmd_save(argv: list[str]) -> int:
    args = (
        Command("image save", "Save images as an OCI image archive (docker and podman load it too).")
        .value("-o", "--output", help="write to this file instead of standard output")
        .positional("images", "+")
        .parse(argv)
    )
    from .images import archive

    engine = _engine()
    for ref in args.images:
        engine.images.get(ref)  # every image is found before any output is made
    with archive.output(args.output) as out:
        archive.save(engine.images, args.images, out)
    return 0


def cmd_load(argv: list[str]) -> int:
    args = (
        Command(
            "image load",
            "Load images from an OCI image archive or layout directory, or a docker-save archive "
            "(maybe compressed).",
        )
        .value("-i", "--input", help="read from this file or OCI layout directory instead of standard input")
        .value("-t", "--tag", help="also tag the loaded image (the archive must hold one) as name:tag")
        .flag("-q", "--quiet", help="accepted for Docker's sake; the loaded images are printed either way")
        .parse(argv)
    )
    from .images import archive

    engine = _engine()
    for image_id, names in archive.load(engine.images, args.input, args.tag):
        for name in names:
            print(f"Loaded image: {name}")
        if not names:
            print(f"Loaded image ID: {image_id}")
    return 0


def cmd_import(argv: list[str]) -> int:
    args = (
        Command("image import", "Make a one-layer image of a root filesystem tarball (FILE, or - for stdin).")
        .many("-c", "--change", help="apply a Dockerfile instruction (CMD, ENV, ...) to the image's config")
        .value("-m", "--message", help="the comment in the image's history")
        .value("-n", "--name", help="name:tag for the image (or give it after the file)")
        .positional("file")
        .positional("reference", "?")
        .parse(argv)
    )
    from .images import archive

    if args.reference and args.name and args.reference != args.name:
        raise UsageError("hako image import: give the image's name once (as REPOSITORY[:TAG] or --name)")
    tag = args.reference or args.name
    source = args.file
    if source.startswith(("http://", "https://")):
        raise InvalidValue("file", source, "hako imports local files: download it first")
    engine = _engine()
    if source == "-":
        if os.isatty(0):
            raise InvalidValue("file", "-", "standard input is a terminal: pipe a tarball into it")
        image = archive.import_rootfs(engine.images, sys.stdin.buffer, "-", tag, args.change, args.message)
    else:
        if os.path.isdir(source):
            raise InvalidValue("file", source, "a directory: import takes a tarball (tar -C DIR -c .)")
        try:
            f = open(source, "rb")
        except FileNotFoundError:
            raise NotFound(f"no such file: {source}") from None
        with f:
            image = archive.import_rootfs(engine.images, f, source, tag, args.change, args.message)
    print(image.id)
    return 0


__all__ = ["cmd_image", "os", "sys"]
