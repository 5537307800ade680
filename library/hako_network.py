#!/usr/bin/python
# Copyright: hako contributors
# Apache License 2.0 (see pyproject.toml)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: hako_network
short_description: Manage a hako bridge network
description:
  - Makes sure a hako network (a Linux bridge with a subnet, as C(hako network create) makes
    it) exists with the options given, or is gone. Containers join it with the C(networks)
    option of M(hako_container) and M(hako_containers).
  - Only the options you set are compared with an existing network. As with
    community.docker.docker_network, a network whose O(subnet), O(gateway), O(ip_range),
    O(mtu), O(internal) or O(nat) differ is made again (removed and created); O(labels) are
    changed in place. A recreated network keeps what the task leaves out (its subnet; its
    gateway and range unless the subnet changes; its MTU, O(internal), O(nat) and labels).
  - Unlike docker_network, containers are never disconnected without O(force) - a network
    with containers on it is made again or removed only with O(force), and the task fails
    otherwise, naming the options and the containers. Disconnected containers are not
    connected again; a later M(hako_container) task with C(networks) does that.
version_added: "0.1.0"
author: hako contributors
requirements:
  - pyroute2 on the target (python3-pyroute2; the hako_host role installs it), to remove a
    network's bridge or to disconnect a running container.
options:
  name:
    description: Name of the network (letters, digits, V(_), V(.), V(-); not V(none), V(host) and the like).
    type: str
    required: true
  state:
    description:
      - V(present) makes sure the network exists with the options given.
      - V(absent) removes it and its bridge; refused while containers are on it, unless O(force).
    type: str
    choices: [present, absent]
    default: present
  subnet:
    description:
      - IPv4 subnet in CIDR form, such as V(10.213.1.0/24). It may overlap no other hako network
        and no route of the host.
      - Default when creating - the first free /24 of 10.213.0.0/16.
    type: str
  gateway:
    description: The bridge's address in the subnet (default its first address).
    type: str
  ip_range:
    description: Part of the subnet (CIDR) that containers' addresses are taken from.
    type: str
  mtu:
    description: MTU of the bridge and of the containers' interfaces (default 1500).
    type: int
  internal:
    description: No default route for the containers - no way out of the network (default false).
    type: bool
  nat:
    description:
      - Let the containers reach beyond the host through it, masqueraded behind the host's
        address (default true). Without it (or with O(internal)) they reach the host and each
        other, nothing beyond; see docs/NETWORKING.md for the firewall rules either way.
    type: bool
  labels:
    description:
      - Labels (strings). Only the labels given are compared (the network may have more);
        changed in place.
    type: dict
  force:
    description:
      - Disconnect the containers on the network first, when it is removed (O(state=absent)) or
        made again.
    type: bool
    default: false
  recreate:
    description: Make the network again even if nothing differs (always changed).
    type: bool
    default: false
notes:
  - Check mode changes nothing and reports the actions it would take (a subnet left out is
    predicted as the one that would be picked). Diff mode returns the network's options
    before and after.
  - Bad options fail before anything changes, with one message naming the option.
  - Reads C(HAKO_ROOT) and C(HAKO_RUN) from the environment, as the other hako modules do.
seealso:
  - module: hako_container
  - module: hako_containers
"""

EXAMPLES = r"""
- name: A network for the lab, with its own subnet
  hako_network:
    name: lab
    subnet: 10.213.1.0/24
    labels:
      course: linuc

- name: An isolated network (no default route), addresses from a part of its subnet
  hako_network:
    name: backend
    subnet: 10.213.2.0/24
    ip_range: 10.213.2.128/25
    internal: true

- name: A new subnet - made again, disconnecting the containers on it
  hako_network:
    name: lab
    subnet: 10.213.3.0/24
    force: true

- name: Remove it, disconnecting the containers on it
  hako_network:
    name: lab
    state: absent
    force: true
"""

RETURN = r"""
actions:
  description:
    - What the task did (in check mode, would do), in order - V(create), V(recreate),
      V(update labels), V(remove), and V(disconnect CONTAINER) for each container taken off it.
  returned: always
  type: list
  elements: str
  sample: ["disconnect lab-alice", "recreate"]
network:
  description: The network as C(hako network inspect) shows it (V({}) once it is absent).
  returned: always
  type: dict
  sample:
    Name: lab
    Driver: bridge
    IPAM: {Config: [{Subnet: 10.213.1.0/24, Gateway: 10.213.1.1, IPRange: null}]}
    Internal: false
    Options: {bridge: hk-5f2c0a81d3, mtu: "1500"}
    Labels: {course: linuc}
    Containers: {}
diff:
  description: The network's options (and V(state)) before and after.
  returned: in diff mode
  type: dict
  sample:
    before: {state: present, subnet: 10.213.1.0/24, mtu: 1500}
    after: {state: present, subnet: 10.213.3.0/24, mtu: 1500}
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.hako import ansible_options
from ansible.module_utils.hako.ansible_network import converge
from ansible.module_utils.hako.engine import Engine
from ansible.module_utils.hako.errors import HakoError, MissingLibrary


def argument_spec() -> dict:
    return dict(
        name=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        # No defaults: an option left out is not compared.
        subnet=dict(type="str"),
        gateway=dict(type="str"),
        ip_range=dict(type="str"),
        mtu=dict(type="int"),
        internal=dict(type="bool"),
        nat=dict(type="bool"),
        labels=dict(type="dict"),
        force=dict(type="bool", default=False),
        recreate=dict(type="bool", default=False),
    )


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    try:
        result = converge(Engine(), module.params, module.check_mode)
    except MissingLibrary as e:
        module.fail_json(msg=missing_required_lib(e.library))
    except HakoError as e:
        done = getattr(e, "done", [])
        module.fail_json(msg=str(e), changed=bool(done), actions=done)
    ansible_options.exit_with_result(module, result)


if __name__ == "__main__":
    main()
