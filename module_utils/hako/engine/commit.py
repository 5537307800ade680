"""hako commit: a container's writable layer becomes a new image layer on top of its image.

The container's upper directory (overlayfs) holds exactly what it changed:
new and modified files, whiteouts for what it deleted, opaque directories
for what it replaced. Packed as a layer tar (whiteouts as ``.wh.`` entries,
a user namespace's owner shift undone) and stacked on the image's layers,
it gives an image whose containers see what the committed one saw.

A running container is frozen while its layer is read (Docker's --pause,
on by default), so the layer is one moment of it.
"""

from __future__ import annotations

import time

from ..images import changes as config_changes
from .storage import upper_dir


def commit(
    engine,
    ref: str,
    tag: str | None = None,
    author: str = "",
    message: str = "",
    changes: list[str] | None = None,
    pause: bool = True,
):
    """Make an image of container ``ref``; returns the new Image."""
    if tag:
        from ..images.reference import normalize

        tag = normalize(tag)
    cid = engine.resolve(ref)
    record = engine.load(cid)
    image = engine.images.get(record["image_id"])
    # The config first: a bad --change must fail before any work.
    config = dict(image.config)
    config["config"] = config_changes.apply(container_config(record, image.config), changes or [])
    userns = record.get("userns")
    shift = (userns["host_id"], userns["host_id"]) if userns else None
    frozen = False
    # A size-limited layer is a filesystem of its own: mounted for the reading (see storage.py).
    with upper_dir(engine, record) as upper:
        if pause:
            state = engine.run_state(cid)
            if state is not None and not state.get("paused"):
                engine.pause(cid)
                frozen = True
        try:
            layer = engine.images.pack_layer(upper, overlay=True, shift=shift)
        finally:
            if frozen:
                engine.unpause(cid)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    config["created"] = created
    if author:
        config["author"] = author
    config["rootfs"] = {
        "type": "layers",
        "diff_ids": [*image.diff_ids(), layer["diff_id"]],
    }
    entry = {"created": created, "created_by": _created_by(record, image.config)}
    if author:
        entry["author"] = author
    if message:
        entry["comment"] = message
    config["history"] = [*image.config.get("history", []), entry]
    config.pop("container", None)
    return engine.images.add_image(config, tag)


def container_config(record: dict, image_config: dict) -> dict:
    """The image's run settings with what the container was given on top (Docker's commit)."""
    out = dict(image_config.get("config") or {})
    from .oci import _merge_env

    if record.get("env"):
        out["Env"] = _merge_env(out.get("Env") or [], record["env"])
    if record.get("entrypoint") is not None:
        out["Entrypoint"] = record["entrypoint"] or None
        out["Cmd"] = record.get("command") or None
    elif record.get("command"):
        out["Cmd"] = record["command"]
    if record.get("workdir"):
        out["WorkingDir"] = record["workdir"]
    user = record.get("user")
    if user:
        out["User"] = user["user"] + (":" + user["group"] if user.get("group") else "")
    if record.get("labels"):
        out["Labels"] = {**(out.get("Labels") or {}), **record["labels"]}
    return {k: v for k, v in out.items() if v is not None}


def _created_by(record: dict, image_config: dict) -> str:
    from .oci import process_command

    command = process_command(record, image_config.get("config") or {})
    return " ".join(command) if command else "hako commit"
