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
            rows.append((repo, t, image.short_id, _ago(image.config.get("created", "")), size))
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
    args = (
        Command("image history", "Show how an image was made, one line a layer, newest first.")
        .flag("--no-trunc", help="show whole commands")
        .flag("-q", "--quiet", help="only the image IDs")
        .positional("image")
        .parse(argv)
    )
    from .units import format_size

    engine = _engine()
    image = engine.images.get(args.image)
    rows = [("IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT")]
    for entry, size, is_top in _history(engine, image):
        created_by = entry.get("created_by", "")
        if not args.no_trunc and len(created_by) > 45:
            created_by = created_by[:44] + "…"
        ident = image.short_id if is_top else "<missing>"
        if args.quiet:
            print(image.id if args.no_trunc and is_top else ident)
            continue
        created = _ago(entry.get("created", ""))
        rows.append((ident, created, created_by, format_size(size), entry.get("comment", "")))
    if not args.quiet:
        _print_table(rows)
    return 0


def _history(engine, image):
    """(history entry, its layer's size, is it the newest), newest first.

    Entries marked ``empty_layer`` made no layer; the others match the
    config's layers in order. An image without history shows one line a layer.
    """
    diff_ids = image.diff_ids()
    history = image.config.get("history") or [{"created": image.config.get("created", "")} for _ in diff_ids]
    rows = []
    layer = 0
    for entry in history:
        size = 0
        if not entry.get("empty_layer") and layer < len(diff_ids):
            size = (engine.images.layer_info(diff_ids[layer]) or {}).get("unpacked_size", 0)
            layer += 1
        rows.append((entry, size))
    return [(entry, size, i == len(rows) - 1) for i, (entry, size) in enumerate(rows)][::-1]


def _ago(created: str) -> str:
    """'2026-11-29T16:37:37Z' as Docker shows it: '5 minutes ago'."""
    import datetime
    import time

    # Not time.strptime: it imports re, and `hako images` stays lean.
    try:
        date, _, clock = created[:19].partition("T")
        fields = [int(x) for x in date.split("-") + clock.split(":")]
        then = datetime.datetime(*fields, tzinfo=datetime.timezone.utc).timestamp()
    except (ValueError, TypeError):
        return created or "N/A"
    seconds = max(0, time.time() - then)
    for unit, length in (
        ("year", 31536000),
        ("month", 2592000),
        ("week", 604800),
        ("day", 86400),
        ("hour", 3600),
        ("minute", 60),
    ):
        if seconds >= length:
            n = int(seconds // length)
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "Less than a minute ago"


# Removing --------------------------------------------------------------------------
def cmd_rmi(argv: list[str]) -> int:
    args = (
        Command("image rm", "Remove images (a tag, or the image once no tag names it).")
        .flag("-f", "--force", help="untag even if containers use it (its data stays until they go)")
        .positional("images", "+")
        .parse(argv)
    )
    engine = _engine()

    def remove(ref: str) -> None:
        image = engine.images.get(ref)
        records = engine.image_users().get(image.id, [])
        users = [r["name"] for r in records]
        running = [r["name"] for r in records if engine.run_state(r["id"]) is not None]
        if running:
            names = ", ".join(running)
            raise Conflict(f"image {ref} is used by running container(s) {names} (even with -f): stop them")
        if users and not args.force:
            names = ", ".join(users)
            raise Conflict(f"image {ref} is used by container(s) {names}: remove them first or use -f")
        # Its layers are the lower layers of those containers' roots: with
        # -f only the tags go, and the image stays (as <none>) while used.
        engine.images.remove(ref, keep_data=bool(users))

    return _each(args.images, remove)


def cmd_image_prune(argv: list[str]) -> int:
    args = (
        Command("image prune", "Remove images no container uses: untagged ones, or with -a all of them.")
        .flag("-a", "--all", help="also tagged images no container uses")
        .flag("-f", "--force", help="do not ask for confirmation")
        .parse(argv)
    )
    from .units import format_size

    if not args.force:
        what = "all images without at least one container" if args.all else "all dangling images"
        print(f"WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ", end="")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    engine = _engine()
    used = engine.image_users()
    sizes = _layer_sizes(engine)
    deleted = []
    for image in engine.images.list():
        if image.id in used or (image.tags and not args.all):
            continue
        engine.images.remove(image.id)  # with the layers no other image uses
        deleted += [f"untagged: {t}" for t in image.tags] + [f"deleted: {image.id}"]
    left = _layer_sizes(engine)
    reclaimed = sum(size for name, size in sizes.items() if name not in left)
    reclaimed += engine.images.prune_layers()
    if deleted:
        print("Deleted Images:\n" + "\n".join(deleted) + "\n")
    print(f"Total reclaimed space: {format_size(reclaimed)}")
    return 0


def _layer_sizes(engine) -> dict[str, int]:
    """Each stored layer's unpacked size, by its directory's name."""
    try:
        names = os.listdir(os.path.join(engine.images.root, "layers"))
    except FileNotFoundError:
        return {}
    return {n: (engine.images.layer_info("sha256:" + n) or {}).get("unpacked_size", 0) for n in names}


def cmd_tag(argv: list[str]) -> int:
    args = (
        Command("tag", "Give an image another name: hako tag SOURCE TARGET.")
        .positional("source")
        .positional("target")
        .parse(argv)
    )
    engine = _engine()
    engine.images.tag(engine.images.get(args.source).id, args.target)
    return 0


# Registries ------------------------------------------------------------------------
def _registry_options(command: Command) -> Command:
    """The options of every command that talks to a registry."""
    command.flag("--insecure", help="talk plain HTTP to the registry (no TLS): only when asked for")
    command.value("--tls-ca", help="a CA certificate (PEM) to check the registry's certificate with")
    return command


def _progress():
    """Status lines on stderr, one at a time from the transfer threads."""
    import threading

    lock = threading.Lock()

    def show(line: str) -> None:
        with lock:
            print(line, file=sys.stderr, flush=True)

    return show


def _creds(value: str | None):
    if value is None:
        return None
    from .images import registry

    return registry.parse_creds(value)


def cmd_pull(argv: list[str]) -> int:
    command = Command("pull", "Download an image from a registry (Registry HTTP API v2).")
    command.flag("-q", "--quiet", help="print only the image's reference")
    command.value(
        "--platform", help="os/arch[/variant] to take from a multi-platform image (default: this host's)"
    )
    command.value("--creds", help="USER:PASSWORD for the registry (default: what hako login stored)")
    args = _registry_options(command).positional("image").parse(argv)
    from .images import registry
    from .images.store import ImageStore

    platform = registry.parse_platform(args.platform) if args.platform else None
    creds = _creds(args.creds)
    if ":" not in args.image.rsplit("/", 1)[-1] and "@" not in args.image and not args.quiet:
        print("Using default tag: latest", file=sys.stderr)
    try:
        result = registry.pull(
            ImageStore(),
            args.image,
            insecure=args.insecure,
            tls_ca=args.tls_ca,
            creds=creds,
            platform=platform,
            progress=None if args.quiet else _progress(),
        )
    except HakoError as e:
        raise registry.on_one_line(e)  # it may quote what the registry sent
    print(result.reference)
    return 0


def cmd_push(argv: list[str]) -> int:
    command = Command("push", "Upload an image to a registry: hako push NAME[:TAG] [DESTINATION[:TAG]].")
    command.flag("-q", "--quiet", help="print only the manifest's digest")
    command.value("--creds", help="USER:PASSWORD for the registry (default: what hako login stored)")
    args = _registry_options(command).positional("image").positional("destination", "?").parse(argv)
    from .images import registry
    from .images.store import ImageStore

    creds = _creds(args.creds)
    try:
        digest, size, pushed = registry.push(
            ImageStore(),
            args.image,
            args.destination,
            insecure=args.insecure,
            tls_ca=args.tls_ca,
            creds=creds,
            progress=None if args.quiet else _progress(),
        )
    except HakoError as e:
        raise registry.on_one_line(e)  # it may quote what the registry sent
    if args.quiet:
        print(digest)
    else:
        print(f"{pushed.rsplit(':', 1)[1]}: digest: {digest} size: {size}")
    return 0


def cmd_login(argv: list[str]) -> int:
    command = Command("login", "Check credentials against a registry and store them in $HAKO_ROOT/auth.json.")
    command.value("-u", "--username", help="the user name")
    command.value("-p", "--password", help="the password (seen by other users: prefer --password-stdin)")
    command.flag("--password-stdin", help="read the password from standard input")
    args = _registry_options(command).positional("registry", "?").parse(argv)
    from .images import registry

    server = registry.registry_key(args.registry or "docker.io")
    if args.password is not None and args.password_stdin:
        raise UsageError("hako login: --password and --password-stdin exclude each other")
    user, password = args.username, args.password
    if args.password_stdin:
        if not user:
            raise UsageError("hako login: --password-stdin needs --username")
        password = sys.stdin.read()
        password = password[:-1] if password.endswith("\n") else password
        password = password[:-1] if password.endswith("\r") else password
    elif password is not None:
        print("WARNING! Using --password via the CLI is insecure. Use --password-stdin.", file=sys.stderr)
    interactive = sys.stdin.isatty()
    if not user:
        if not interactive:
            raise UsageError("hako login: give a user name with -u USER")
        user = input("Username: ").strip()
    if password is None:
        if not interactive:
            raise UsageError("hako login: give the password with --password-stdin (or -p)")
        import getpass

        password = getpass.getpass("Password: ")
    if not user or ":" in user:
        raise InvalidValue("username", user, "must not be empty or contain ':'")
    if not password:
        raise InvalidValue("password", "(empty)", "must not be empty")
    registry.login(server, user, password, insecure=args.insecure, tls_ca=args.tls_ca)
    registry.save_credentials(server, user, password)
    print("Login Succeeded")
    return 0


def cmd_logout(argv: list[str]) -> int:
    args = (
        Command("logout", "Forget the credentials stored for a registry.")
        .positional("registry", "?")
        .parse(argv)
    )
    from .images import registry

    server = registry.registry_key(args.registry or "docker.io")
    registry.logout(server)
    print(f"Removed login credentials for {server}")
    return 0


# Containers into images, images into files ---------------------------------------
def cmd_commit(argv: list[str]) -> int:
    args = (
        Command("commit", "Make an image of a container's changes: hako commit CONTAINER [REPO[:TAG]].")
        .value("-a", "--author", default="", help='author (e.g. "Jane <jane@example.org>")')
        .value("-m", "--message", default="", help="commit message")
        .many("-c", "--change", help="a Dockerfile instruction: CMD, ENTRYPOINT, ENV, WORKDIR, USER, ...")
        .value("-p", "--pause", default="true", help="freeze a running container while committing (true)")
        .positional("container")
        .positional("repository", "?")
        .parse(argv)
    )
    if args.pause not in ("true", "false"):
        raise InvalidValue("pause", args.pause, "expected true or false")
    from .engine.commit import commit

    image = commit(
        _engine(),
        args.container,
        args.repository,
        author=args.author,
        message=args.message,
        changes=args.change,
        pause=args.pause == "true",
    )
    print(image.id)
    return 0


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
