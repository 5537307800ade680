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
from .errors import Conflict, HakoError, InvalidValue


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
        Command(
            "image build",
            "Build an image: busybox (from the host's busybox-static) or debian (with debootstrap).",
        )
        .value("-t", "--tag", help="name:tag for the image (busybox:latest, debian:SUITE)")
        .value("--suite", help="debian: the Debian suite (default bookworm)")
        .value("--variant", help="debian: minbase, buildd or default (default minbase)")
        .many("--include", help="debian: more packages, a,b,c (may be repeated)")
        .value("--arch", help="debian: the Debian architecture (default: the host's)")
        .value("--mirror", help="debian: the archive URL (default http://deb.debian.org/debian)")
        .value(
            "--cache-dir",
            help="debian: where downloaded .debs are kept (default $HAKO_ROOT/cache/debootstrap)",
        )
        .flag("--no-cache", help="debian: build again even if the same build exists")
        .positional("kind")
        .parse(argv)
    )
    if args.kind not in ("busybox", "debian"):
        raise InvalidValue("image kind", args.kind, "this version builds: busybox, debian")
    if args.kind == "busybox":
        debian_only = ("suite", "variant", "arch", "mirror", "cache_dir", "no_cache")
        given = [name for name in debian_only if getattr(args, name)] + (["include"] if args.include else [])
        if given:
            raise UsageError(f"hako image build busybox: --{given[0].replace('_', '-')} is for debian builds")
        from .images import busybox

        image = busybox.build(_engine().images, args.tag or "busybox:latest")
        print(image.id)
        return 0
    from .images import debootstrap

    options = debootstrap.BuildOptions(
        suite=args.suite, variant=args.variant, include=args.include, arch=args.arch, mirror=args.mirror
    )
    try:
        image = debootstrap.build(
            _engine().images, options, args.tag, no_cache=args.no_cache, cache_base=args.cache_dir
        )
    except debootstrap.Interrupted as e:
        return 128 + e.signum
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
    raise HakoError("hako export: not built yet")


def cmd_save(argv: list[str]) -> int:
    raise HakoError("hako image save: not built yet")


def cmd_load(argv: list[str]) -> int:
    raise HakoError("hako image load: not built yet")


def cmd_import(argv: list[str]) -> int:
    raise HakoError("hako image import: not built yet")


__all__ = ["cmd_image", "os", "sys"]
