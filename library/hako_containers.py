#!/usr/bin/python
# Copyright: hako contributors
# Apache License 2.0 (see pyproject.toml)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: hako_containers
short_description: Converge a list of hako containers in one task
description:
  - Does for each item of O(containers) what M(hako_container) does for one, in a single
    module run, so that a whole lab converges in one task instead of a loop.
  - Every item is checked before anything changes. A failure while changing one container
    does not stop the others; the task then fails and names each container that failed.
  - With O(purge_label), containers carrying that label that are not in the list are removed,
    so a lab shrinks when learners are taken out of it.
version_added: "0.1.0"
author: hako contributors
options:
  containers:
    description:
      - The containers. Each item takes every option of M(hako_container) (V(name), V(state),
        V(image), V(command), the limits, V(comparisons), V(recreate) and the rest), with the
        same types, comparisons and defaults.
      - An item without V(state) takes O(state), one without V(force_kill) takes O(force_kill).
    type: list
    elements: dict
    required: true
  state:
    description: State of the items that do not set their own.
    type: str
    choices: [present, started, stopped, restarted, absent]
    default: started
  purge_label:
    description:
      - V(KEY=VALUE) (or just V(KEY)) of a label. Every container whose labels match and whose
        name is not in O(containers) is stopped and removed.
    type: str
  force_kill:
    description:
      - Stop containers with SIGKILL at once instead of their stop signal and timeout; for the
        items that do not set their own, and for purged containers.
    type: bool
    default: false
notes:
  - Check mode and diff mode work as in M(hako_container); the diff is keyed by container name.
seealso:
  - module: hako_container
"""

EXAMPLES = r"""
- name: Every learner's container (a list of hako_container options); remove learners no longer listed
  hako_containers:
    purge_label: lab=linuc
    containers: "{{ lab_containers }}"

- name: Two containers, written out
  hako_containers:
    containers:
      - name: learner1
        image: busybox
        command: sleep infinity
        memory: 64m
        labels: {lab: linuc}
      - name: learner2
        image: busybox
        command: sleep infinity
        memory: 64m
        labels: {lab: linuc}
        state: stopped
"""

RETURN = r"""
results:
  description:
    - One entry per container (the declared ones, then the purged ones), with its V(name),
      V(changed), V(actions) and V(container) as M(hako_container) returns them; an entry that
      failed has V(failed) and V(msg) instead.
  returned: always
  type: list
  elements: dict
  sample:
    - {name: learner1, changed: true, actions: [create, start], container: {Name: learner1}}
    - {name: learner9, changed: true, actions: [remove], container: {}}
diff:
  description: Per container name, its state and compared options before and after.
  returned: in diff mode
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.hako import ansible_options
from ansible.module_utils.hako.ansible_container import converge_many, open_engine
from ansible.module_utils.hako.errors import HakoError

STATES = ["present", "started", "stopped", "restarted", "absent"]


def container_spec() -> dict:
    """One item: hako_container's options, with ``state`` and ``force_kill`` left to the list's."""
    return dict(
        name=dict(type="str", required=True),
        state=dict(type="str", choices=STATES),
        force_kill=dict(type="bool"),
        recreate=dict(type="bool", default=False),
        comparisons=dict(type="dict"),
        **ansible_options.argument_spec(),
    )


def argument_spec() -> dict:
    return dict(
        containers=dict(type="list", elements="dict", required=True, options=container_spec()),
        state=dict(type="str", default="started", choices=STATES),
        purge_label=dict(type="str"),
        force_kill=dict(type="bool", default=False),
    )


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    defaults = {key: module.params[key] for key in ("state", "force_kill")}
    items = [
        {**item, **{key: value for key, value in defaults.items() if item[key] is None}}
        for item in module.params["containers"]
    ]
    try:
        result = converge_many(
            open_engine(),
            items,
            module.check_mode,
            purge=module.params["purge_label"],
            force_kill=module.params["force_kill"],
        )
    except HakoError as e:
        module.fail_json(msg=str(e))
    diff = {"before": {}, "after": {}}
    for entry in result["results"]:
        entry_diff = entry.pop("diff", None)
        if entry_diff:
            diff["before"][entry["name"]] = entry_diff["before"]
            diff["after"][entry["name"]] = entry_diff["after"]
    output = {"changed": result["changed"], "results": result["results"]}
    if module._diff:
        output["diff"] = diff
    if result["failures"]:
        msg = f"{len(result['failures'])} container(s) failed: " + "; ".join(result["failures"])
        if result["missing_library"]:
            msg = f"{missing_required_lib(result['missing_library'])} {msg}"
        module.fail_json(msg=msg, **output)
    module.exit_json(**output)


if __name__ == "__main__":
    main()
