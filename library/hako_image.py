#!/usr/bin/python
# Copyright: hako contributors
# Apache License 2.0 (see pyproject.toml)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: hako_image
short_description: Make sure a hako image is present (built, pulled, loaded or imported) or absent
description:
  - Makes sure the image O(name) is in the hako image store of the target host, making it from
    one source when it is missing, or that the tag is gone.
  - An image that is already there is left alone (the task is not changed) unless O(force) is set,
    which builds, pulls, loads or imports it again.
  - In check mode nothing is built, pulled, read or removed; the task says whether it would change.
  - The image store is the one of C(HAKO_ROOT) in the task's environment, as for M(hako_container).
version_added: "0.1.0"
author: hako contributors
options:
  name:
    description: The image's name and tag, V(name:tag) (V(:latest) when no tag is given).
    type: str
    required: true
  state:
    description:
      - V(present) makes the image from O(source) if no image has this name (or if O(force) is set).
      - V(absent) removes the tag; the image goes with its last tag. An image that containers use
        is not removed unless O(force) is set, and then only its tag goes; one that a running
        container uses is never untagged.
    type: str
    default: present
    choices: [present, absent]
  source:
    description:
      - Where a missing image comes from. Required with O(state=present).
      - V(build) builds it (see O(build)); V(pull) downloads O(name) from its registry (see O(pull));
        V(load) reads an OCI or docker-save archive at O(path) holding one image; V(import) makes a
        one-layer image of the root filesystem tarball at O(path).
    type: str
    choices: [build, pull, load, import]
  force:
    description:
      - With O(state=present), make the image again even if it is there; the task is changed when the
        name then names another image. An old image left without a tag and unused is removed.
      - With O(state=absent), untag an image that stopped containers use.
    type: bool
    default: false
  build:
    description: How to build the image, with O(source=build).
    type: dict
    suboptions:
      kind:
        description: V(busybox) (from the host's busybox-static, offline) or V(debian) (debootstrap).
        type: str
        default: busybox
        choices: [busybox, debian]
      suite:
        description: The Debian suite (default V(bookworm)); debian only.
        type: str
      variant:
        description: The debootstrap variant, V(minbase), V(buildd) or V(default) (default V(minbase)).
        type: str
      include:
        description: More Debian packages to install; debian only.
        type: list
        elements: str
      arch:
        description: The Debian architecture (default the host's); debian only.
        type: str
      mirror:
        description: The Debian archive URL (default V(http://deb.debian.org/debian)); debian only.
        type: str
  pull:
    description: How to talk to the registry, with O(source=pull).
    type: dict
    suboptions:
      insecure:
        description: Talk plain HTTP to the registry (no TLS).
        type: bool
        default: false
      tls_ca:
        description: A CA certificate (PEM file on the target) to check the registry's certificate with.
        type: path
      username:
        description: User name for the registry (default what C(hako login) stored).
        type: str
      password:
        description: Password for O(pull.username).
        type: str
  path:
    description: The archive (O(source=load)) or root filesystem tarball (O(source=import)) on the target.
    type: path
  changes:
    description: Dockerfile instructions (V(CMD), V(ENV), ...) applied to an imported image's config.
    type: list
    elements: str
notes:
  - A debian build with the same options as an image already in the store reuses that image.
seealso:
  - module: hako_container
"""

EXAMPLES = r"""
- name: The busybox image, built from the host's busybox-static
  hako_image:
    name: busybox:latest
    source: build

- name: A Debian image with a few more packages
  hako_image:
    name: lab-debian:1
    source: build
    build:
      kind: debian
      suite: bookworm
      include: [iproute2, procps]

- name: An image from a registry with its own CA
  hako_image:
    name: registry.example.org:5000/lab/tools:2
    source: pull
    pull:
      tls_ca: /etc/hako/registry-ca.pem
      username: lab
      password: "{{ registry_password }}"

- name: An image saved with hako image save
  hako_image:
    name: tools:2
    source: load
    path: /srv/images/tools.tar

- name: A root filesystem tarball as an image
  hako_image:
    name: rootfs:1
    source: import
    path: /srv/images/rootfs.tar.gz
    changes: ["CMD [\"/bin/sh\"]", "ENV LANG=C.UTF-8"]

- name: Remove the tag
  hako_image:
    name: rootfs:1
    state: absent
"""

RETURN = r"""
actions:
  description:
    - What the task did (in check mode, would do), in order.
    - V(build), V(pull), V(load), V(import), V(remove) (the tag), and V(remove old image) after O(force).
  returned: always
  type: list
  elements: str
  sample: ["build"]
image:
  description:
    - The image as C(hako image inspect) shows it (V({}) when it is absent, or in check mode when it
      would be made).
  returned: always
  type: dict
  sample:
    Id: sha256:4f1c...
    RepoTags: ["busybox:latest"]
    RepoDigests: []
    Size: 2154496
    config: {Cmd: [sh]}
diff:
  description: The ID the name stands for, before and after (V(null) when none).
  returned: in diff mode
  type: dict
  sample:
    before: {Id: null}
    after: {Id: "sha256:4f1c..."}
"""

import io
import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.hako.ansible_container import open_engine
from ansible.module_utils.hako.ansible_options import exit_with_result
from ansible.module_utils.hako.errors import HakoError, InvalidValue, NotFound
from ansible.module_utils.hako.images import archive, busybox, debootstrap, registry
from ansible.module_utils.hako.images.store import normalize_reference

SOURCES = ["build", "pull", "load", "import"]
DEBIAN_ONLY = ("suite", "variant", "include", "arch", "mirror")
# Which options belong to which source.
SOURCE_OPTIONS = {"build": ("build",), "pull": ("pull",), "load": ("path",), "import": ("path", "changes")}


def argument_spec() -> dict:
    return dict(
        name=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        source=dict(type="str", choices=SOURCES),
        force=dict(type="bool", default=False),
        build=dict(
            type="dict",
            options=dict(
                kind=dict(type="str", default="busybox", choices=["busybox", "debian"]),
                suite=dict(type="str"),
                variant=dict(type="str"),
                include=dict(type="list", elements="str"),
                arch=dict(type="str"),
                mirror=dict(type="str"),
            ),
        ),
        pull=dict(
            type="dict",
            options=dict(
                insecure=dict(type="bool", default=False),
                tls_ca=dict(type="path"),
                username=dict(type="str"),
                password=dict(type="str", no_log=True),
            ),
        ),
        path=dict(type="path"),
        changes=dict(type="list", elements="str"),
    )


def document(images, image) -> dict:
    """What `hako image inspect` shows of an image."""
    return {
        "Id": image.id,
        "RepoTags": image.tags,
        "RepoDigests": images.meta(image.id).get("repo_digests", []),
        "Size": images.image_size(image),
        **image.config,
    }


def find(images, name: str):
    try:
        return images.get(name)
    except NotFound:
        return None


def check_params(p: dict) -> None:
    """Refuse options that do not fit the source, naming them."""
    source = p["source"]
    if p["state"] == "absent":
        return
    for option in ("build", "pull", "path", "changes"):
        if p[option] is not None and option not in SOURCE_OPTIONS[source]:
            raise InvalidValue(option, p[option], f"not an option of source={source}")
    if source in ("load", "import") and not p["path"]:
        raise InvalidValue("path", p["path"], f"required with source={source}")
    if source in ("load", "import") and not os.path.exists(p["path"]):
        raise InvalidValue("path", p["path"], "no such file on the target")
    if source == "build":
        build = p["build"] or {"kind": "busybox"}
        if build["kind"] == "busybox":
            given = [o for o in DEBIAN_ONLY if build.get(o) is not None]
            if given:
                raise InvalidValue(f"build.{given[0]}", build[given[0]], "only for kind=debian")
        else:
            debian_options(build)  # checks suite, variant, include, arch and mirror
    if source == "pull":
        pull = p["pull"] or {}
        if bool(pull.get("username")) != bool(pull.get("password")):
            raise InvalidValue("pull.username", pull.get("username"), "give username and password together")


def renamed(e: InvalidValue, option: str) -> InvalidValue:
    """The same error, naming the module's option."""
    return InvalidValue(option, e.value, str(e).partition(" (")[2].removesuffix(")"))


def debian_options(build: dict):
    try:
        return debootstrap.BuildOptions(**{o: build.get(o) for o in DEBIAN_ONLY})
    except InvalidValue as e:
        raise renamed(e, f"build.{e.field}") from None


def make(engine, p: dict, tag: str) -> None:
    """Make the image ``tag`` from its source."""
    images, source = engine.images, p["source"]
    if source == "build":
        build = p["build"] or {"kind": "busybox"}
        if build["kind"] == "busybox":
            busybox.build(images, tag)
        else:
            debootstrap.build(images, debian_options(build), tag, no_cache=p["force"], stream=io.StringIO())
    elif source == "pull":
        pull = p["pull"] or {}
        creds = (pull["username"], pull["password"]) if pull.get("username") else None
        try:
            registry.pull(
                images, tag, insecure=pull.get("insecure", False), tls_ca=pull.get("tls_ca"), creds=creds
            )
        except HakoError as e:
            raise registry.on_one_line(e) from None
    elif source == "load":
        archive.load(images, p["path"], tag)
    else:
        with open(p["path"], "rb") as f:
            archive.import_rootfs(images, f, p["path"], tag, p["changes"] or ())


def converge(engine, p: dict, check_mode: bool) -> dict:
    images = engine.images
    try:
        tag = normalize_reference(p["name"])
    except InvalidValue as e:
        raise renamed(e, "name") from None
    check_params(p)
    before = find(images, tag)
    before_id = before.id if before else None
    actions: list[str] = []
    after = before
    if p["state"] == "absent":
        if before is not None:
            records = engine.image_users().get(before.id, [])
            used = sorted(r["name"] for r in records)
            running = sorted(r["name"] for r in records if engine.run_state(r["id"]) is not None)
            if running:
                raise InvalidValue("name", tag, f"used by running container(s) {', '.join(running)}")
            if used and not p["force"]:
                raise InvalidValue(
                    "name", tag, f"used by container(s) {', '.join(used)}: remove them first or set force"
                )
            actions.append("remove")
            if not check_mode:
                images.remove(tag, keep_data=bool(used))
        after = None
    elif before is None or p["force"]:
        actions.append(p["source"])
        if not check_mode:
            make(engine, p, tag)
            after = images.get(tag)
            if before is not None and after.id != before.id:
                old = find(images, before.id)
                if old is not None and not old.tags and old.id not in engine.image_users():
                    images.remove(old.id)
                    actions.append("remove old image")
    if check_mode:
        changed = bool(actions)
        after_id = None if p["state"] == "absent" else (before_id if not actions else "(made at run time)")
        image = document(images, before) if before is not None and p["state"] == "present" else {}
    else:
        after_id = after.id if after is not None else None
        changed = after_id != before_id or "remove" in actions
        image = document(images, images.get(tag)) if after is not None else {}
    return dict(
        changed=changed,
        actions=actions,
        image=image,
        diff=dict(before=dict(Id=before_id), after=dict(Id=after_id)),
    )


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(),
        required_if=[["state", "present", ["source"]]],
        supports_check_mode=True,
    )
    try:
        result = converge(open_engine(), module.params, module.check_mode)
    except HakoError as e:
        module.fail_json(msg=str(e), changed=False, actions=[])
    except OSError as e:
        module.fail_json(
            msg=f"{e.filename or module.params['name']}: {e.strerror}", changed=False, actions=[]
        )
    exit_with_result(module, result)


if __name__ == "__main__":
    main()
