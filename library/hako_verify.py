#!/usr/bin/python
# Copyright: hako contributors
# Apache License 2.0 (see pyproject.toml)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: hako_verify
short_description: Check hako containers against their declaration, as the kernel sees them
description:
  - Takes the same list of containers as M(hako_containers) and checks each against what the
    kernel reports, changing nothing.
  - V(state) - a container declared V(started) or V(restarted) runs, one declared V(stopped)
    does not, one declared V(absent) does not exist.
  - V(namespaces) - for each kind (ipc, mount, network, pid, uts, cgroup, user), the link
    C(/proc/<pid>/ns/<kind>) of the container's first process names another namespace than
    the host's when the kind is private, the host's one for V(host), and the other
    container's for V(container:<name>).
  - V(limits) - the cgroup files of a running container hold its limits (memory,
    memory+swap, CPU quota and shares, cpuset, pids), on cgroup v1 and v2 alike.
  - V(networks) - for each network of a running container, its interface inside (C(eth0),
    ...) is up with its address (the declared V(ip), else the one hako holds for it), read
    in the container's network namespace, and the host's end of its veth is on the
    network's bridge. Only containers on networks get these checks.
  - V(privileges) - the first process of a running container holds, in C(/proc/<pid>/status),
    the capabilities it was given (C(CapBnd); Docker's default 14 with V(capabilities) added and
    V(cap_drop) dropped, or all under V(privileged)), the same set effective (C(CapEff)) when it
    runs as root and none otherwise, a seccomp filter (C(Seccomp) 2) unless
    V(seccomp=unconfined) or V(privileged), and C(NoNewPrivs) unless
    V(no-new-privileges=false) or V(privileged).
  - What a container declares is checked, falling back on what it was created with for the
    options it leaves out.
  - "The task fails when a check fails, naming each failure as
    C(<container>: <check> is <actual>, want <expected>)."
version_added: "0.1.0"
author: hako contributors
options:
  containers:
    description:
      - The containers, as M(hako_containers) takes them (V(name), V(state), V(namespaces),
        V(userns), the limits, V(networks), V(capabilities), V(cap_drop), V(privileged),
        V(security_opts); other options are ignored).
    type: list
    elements: dict
    required: true
  checks:
    description: Which checks to make.
    type: list
    elements: str
    choices: [state, namespaces, limits, networks, privileges]
    default: [state, namespaces, limits, networks, privileges]
  fail_on_error:
    description: Fail the task when a check fails; otherwise just return the failures.
    type: bool
    default: true
notes:
  - Runs in check mode too; it never changes anything.
seealso:
  - module: hako_containers
  - module: hako_container_info
"""

EXAMPLES = r"""
- name: Each learner's container runs in namespaces of its own, with its limits in force
  hako_verify:
    containers:
      - {name: lab-alice, memory: 64m, cpus: 0.5, pids_limit: 64}
      - {name: lab-bob, memory: 64m, cpus: 0.5, pids_limit: 64}

- name: On its network with its address, as the kernel has it
  hako_verify:
    containers:
      - name: web
        networks: [{name: lab, ip: 10.213.1.10}]
    checks: [networks]

- name: The learners' containers are confined (capabilities, seccomp filter, no_new_privs)
  hako_verify:
    containers:
      - {name: lab-alice, cap_drop: [ALL], capabilities: [NET_BIND_SERVICE]}
      - {name: lab-bob}
    checks: [privileges]

- name: A container sharing another's network namespace
  hako_verify:
    containers:
      - name: sidecar
        namespaces: {network: "container:web"}
    checks: [namespaces]
"""

RETURN = r"""
checks:
  description: Every check made, passed or failed.
  returned: always
  type: list
  elements: dict
  sample:
    - {container: lab-alice, check: pid namespace, ok: true, expected: private, actual: private}
    - {container: lab-alice, check: memory limit, ok: true, expected: 67108864, actual: 67108864}
    - {container: lab-alice, check: seccomp, ok: true, expected: filter, actual: filter}
    - container: lab-alice
      check: network lab
      ok: true
      expected: eth0 10.213.1.2/24 up, on hk-5f2c0a81d3
      actual: eth0 10.213.1.2/24 up, on hk-5f2c0a81d3
failures:
  description: The failed checks, one line each.
  returned: always
  type: list
  elements: str
  sample: ["lab-bob: state is stopped, want running"]
host_namespaces:
  description: The host's namespaces as this module sees them, kind to link (C(pid:[4026531836])).
  returned: always
  type: dict
verified:
  description: How many containers were checked.
  returned: always
  type: int
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.hako.ansible_container import open_engine
from ansible.module_utils.hako.ansible_verify import CHECKS, host_namespaces, verify
from ansible.module_utils.hako.errors import HakoError


def argument_spec() -> dict:
    return dict(
        containers=dict(type="list", elements="dict", required=True),
        checks=dict(type="list", elements="str", choices=list(CHECKS), default=list(CHECKS)),
        fail_on_error=dict(type="bool", default=True),
    )


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    items = module.params["containers"]
    for index, item in enumerate(items):
        if not isinstance(item.get("name"), str):
            module.fail_json(msg=f"invalid value for containers[{index}].name: {item.get('name')!r}")
    try:
        result = verify(open_engine(), items, module.params["checks"])
    except HakoError as e:
        module.fail_json(msg=str(e))
    result["host_namespaces"] = host_namespaces()
    if result["failures"] and module.params["fail_on_error"]:
        failures = result["failures"]
        module.fail_json(
            msg=f"{len(failures)} check(s) failed: " + "; ".join(failures), changed=False, **result
        )
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
