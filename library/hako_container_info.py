#!/usr/bin/python
# Copyright: hako contributors
# Apache License 2.0 (see pyproject.toml)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: hako_container_info
short_description: Read hako containers, their state and their cgroup counters
description:
  - Returns one, several or all hako containers as C(hako inspect) shows them, with the usage
    counters of each running container's cgroup.
  - Changes nothing; runs the same in check mode.
version_added: "0.1.0"
author: hako contributors
options:
  name:
    description: Names of the containers; all containers when left out.
    type: list
    elements: str
    aliases: [names]
  labels:
    description: Only containers carrying all of these labels.
    type: dict
  stats:
    description: Add C(Stats) (memory, CPU and process counters) to each running container.
    type: bool
    default: true
seealso:
  - module: hako_container
"""

EXAMPLES = r"""
- name: Read one container
  hako_container_info:
    name: learner1
  register: learner1_info

- name: Fail if it is not running
  ansible.builtin.assert:
    that: learner1_info.exists and learner1_info.containers[0].State.Running

- name: Every container of the lab
  hako_container_info:
    labels:
      lab: linuc
  register: lab_info
"""

RETURN = r"""
containers:
  description:
    - The containers found, as C(hako inspect) shows them (C(State), C(Config), C(HostConfig)
      with the limits asked for; for a running one C(Namespaces) and C(Cgroup) with the
      limits read back from the kernel), plus C(Stats) if O(stats).
  returned: always
  type: list
  elements: dict
  sample:
    - Name: learner1
      State: {Status: running, Running: true, Pid: 4242}
      Stats: {memory_usage: 348160, memory_limit: 67108864, pids_current: 1, pids_limit: 50}
exists:
  description: Whether every container named in O(name) exists (true when none is named).
  returned: always
  type: bool
missing:
  description: The names in O(name) that no container has.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.hako.ansible_container import info, open_engine
from ansible.module_utils.hako.ansible_options import check_name
from ansible.module_utils.hako.errors import HakoError


def argument_spec() -> dict:
    return dict(
        name=dict(type="list", elements="str", aliases=["names"]),
        labels=dict(type="dict"),
        stats=dict(type="bool", default=True),
    )


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    try:
        names = [check_name(name) for name in module.params["name"] or []]
        result = info(open_engine(), names, module.params["labels"], module.params["stats"])
    except HakoError as e:
        module.fail_json(msg=str(e))
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
