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
  links:
    description:
      - Point-to-point links between containers (a veth pair, as C(hako link) makes), converged
        after the containers. A declared link that is missing is made; one whose values differ is
        made again; a link between two containers of O(containers) that is not declared is removed.
        Links of containers not in the list are left alone. Unset, links are not looked at.
      - New links are made in one batch; each is wired as soon as both its containers run.
    type: list
    elements: dict
    suboptions:
      a:
        description: One end, V(CONTAINER:INTERFACE).
        type: str
        required: true
      b:
        description: The other end, V(CONTAINER:INTERFACE).
        type: str
        required: true
      ip_a:
        description: Address of end O(links[].a) with its prefix (V(10.214.1.1/30)).
        type: str
      ip_b:
        description: Address of end O(links[].b) with its prefix.
        type: str
      mtu:
        description: MTU of both ends.
        type: int
      rate:
        description: Rate limit of what leaves each end (V(10mbit), V(512kbit)).
        type: str
      routes_a:
        description: Networks (or V(default)) routed in container O(links[].a) through the other end.
        type: list
        elements: str
      routes_b:
        description: Networks (or V(default)) routed in container O(links[].b) through the other end.
        type: list
        elements: str
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

- name: Three routers in a line, wired with links (a topology in one task)
  hako_containers:
    containers:
      - {name: r1, image: busybox, command: sleep infinity}
      - {name: r2, image: busybox, command: sleep infinity}
      - {name: r3, image: busybox, command: sleep infinity}
    links:
      - {a: "r1:eth1", b: "r2:eth1", ip_a: 10.214.1.1/30, ip_b: 10.214.1.2/30, rate: 10mbit}
      - {a: "r2:eth2", b: "r3:eth1", ip_a: 10.214.1.5/30, ip_b: 10.214.1.6/30}

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
links:
  description:
    - With O(links), what was done to them (in check mode, would be done), each link as
      V(CONTAINER:IF - CONTAINER:IF).
  returned: when O(links) is set
  type: dict
  sample: {changed: true, create: ["r1:eth1 - r2:eth1"], recreate: [], remove: []}
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
        links=dict(type="list", elements="dict", options=link_spec()),
    )


def link_spec() -> dict:
    return dict(
        a=dict(type="str", required=True),
        b=dict(type="str", required=True),
        ip_a=dict(type="str"),
        ip_b=dict(type="str"),
        mtu=dict(type="int"),
        rate=dict(type="str"),
        routes_a=dict(type="list", elements="str"),
        routes_b=dict(type="list", elements="str"),
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
            links=module.params["links"],
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
    if "links" in result:
        output["links"] = result["links"]
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
