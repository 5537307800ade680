#!/usr/bin/python
# Copyright: hako contributors
# Apache License 2.0 (see pyproject.toml)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: hako_runtime
short_description: Install the hako runtime and the learners' hako command on a host
description:
  - Installs the hako package this module was sent with under O(prefix)C(/lib/hako/hako/) and a
    C(hako) command at O(prefix)C(/bin/hako) that runs it on the host's Python (the one
    running this module), isolated from the environment and from site-packages.
  - The package installed is the one the hako modules carry, so the learners' command and the
    modules that manage their containers are always the same code.
  - The package is replaced as a whole, so a command started meanwhile sees the old version
    or the new one. Nothing changes when the installed files are already these.
version_added: "0.1.0"
author: hako contributors
options:
  state:
    description: V(present) installs or updates; V(absent) removes the package and the command.
    type: str
    choices: [present, absent]
    default: present
  prefix:
    description: Where to install (an absolute path).
    type: path
    default: /usr/local
  purge_state:
    description:
      - With O(state=absent), also remove hako's state on the host - C(/var/lib/hako) (or
        E(HAKO_ROOT)), C(/run/hako) (or E(HAKO_RUN)) and hako's parent cgroup.
      - Fails, removing nothing, while any container exists; remove the labs first.
    type: bool
    default: false
notes:
  - Check mode reports whether anything would change and changes nothing; diff mode shows the
    installed version and a digest of its files before and after.
  - Containers, images and state directories are not touched; see the hako_lab role and
    C(playbooks/teardown.yml) for those.
seealso:
  - module: hako_host_info
"""

EXAMPLES = r"""
- name: The hako command for learners
  hako_runtime:
    prefix: /usr/local

- name: Take it away again, with the images and state, once no container is left
  hako_runtime:
    state: absent
    purge_state: true
"""

RETURN = r"""
version:
  description: The version installed (null when absent).
  returned: always
  type: str
  sample: "0.1.0"
command:
  description: The command's path.
  returned: always
  type: str
  sample: /usr/local/bin/hako
removed:
  description: With O(purge_state), the state directories and cgroups removed (or, in check mode, to remove).
  returned: when O(purge_state) is set
  type: list
  elements: str
lib:
  description: The directory holding the package.
  returned: always
  type: str
  sample: /usr/local/lib/hako
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.hako.ansible_host import Install, purge_state
from ansible.module_utils.hako.ansible_options import exit_with_result
from ansible.module_utils.hako.errors import HakoError


def argument_spec() -> dict:
    return dict(
        state=dict(type="str", choices=["present", "absent"], default="present"),
        prefix=dict(type="path", default="/usr/local"),
        purge_state=dict(type="bool", default=False),
    )


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    if module.params["purge_state"] and module.params["state"] != "absent":
        module.fail_json(msg="invalid value for purge_state: true needs state=absent")
    try:
        # The state first: it refuses while containers remain, before anything is removed.
        purged = purge_state(module.check_mode) if module.params["purge_state"] else None
        result = Install(module.params["prefix"]).converge(module.params["state"], module.check_mode)
        if purged is not None:
            result["removed"] = purged["removed"]
            result["changed"] = result["changed"] or purged["changed"]
    except (HakoError, OSError) as e:
        module.fail_json(msg=str(e))
    exit_with_result(module, result)


if __name__ == "__main__":
    main()
