#!/usr/bin/python
# Copyright: hako contributors
# Apache License 2.0 (see pyproject.toml)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: hako_host_info
short_description: What a host offers hako - cgroup mode, namespaces, overlayfs, init system, sysctls
description:
  - Reads what the host role decides by and checks before changing anything, and returns it
    as the fact C(hako_host).
  - V(cgroup_mode) is V(v1), V(hybrid) (v1 controllers with an empty v2 mount, as on many
    older hosts) or V(v2), as the runtime itself detects it.
version_added: "0.1.0"
author: hako contributors
options:
  sysctl:
    description: Names of sysctl settings (V(user.max_user_namespaces)) whose current values to return.
    type: list
    elements: str
    default: []
notes:
  - Changes nothing; runs in check mode.
seealso:
  - module: hako_runtime
"""

EXAMPLES = r"""
- name: What this host offers
  hako_host_info:
    sysctl: [user.max_user_namespaces]

- name: Containers need overlayfs
  ansible.builtin.assert:
    that: ansible_facts.hako_host.overlayfs
    fail_msg: the kernel has no overlay filesystem
"""

RETURN = r"""
ansible_facts:
  description: The fact C(hako_host).
  returned: always
  type: dict
  contains:
    hako_host:
      description: What the host offers.
      type: dict
      sample:
        cgroup_mode: hybrid
        cgroup_v2_controllers: []
        cgroup_v1_controllers: [cpu, cpuacct, cpuset, memory, pids]
        systemd: false
        overlayfs: true
        namespaces: [cgroup, ipc, mount, network, pid, user, uts]
        kernel: 6.1.0-18-amd64
        architecture: x86_64
        python: /usr/bin/python3
        python_version: 3.11.2
        sysctl: {user.max_user_namespaces: "63465"}
        root: /var/lib/hako
        run: /run/hako
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.hako.ansible_host import host_facts
from ansible.module_utils.hako.errors import HakoError


def argument_spec() -> dict:
    return dict(sysctl=dict(type="list", elements="str", default=[]))


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    try:
        facts = host_facts(module.params["sysctl"])
    except HakoError as e:
        module.fail_json(msg=str(e))
    module.exit_json(changed=False, ansible_facts={"hako_host": facts})


if __name__ == "__main__":
    main()
