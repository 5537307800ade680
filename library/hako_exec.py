#!/usr/bin/python
# Copyright: hako contributors
# Apache License 2.0 (see pyproject.toml)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: hako_exec
short_description: Run a command in a running hako container
description:
  - Runs a command inside a running container, in its namespaces and cgroup, as C(hako exec)
    does, and returns its exit code and output. A non-zero exit code fails the task.
  - A command that ran is reported as changed; say otherwise with C(changed_when).
  - In check mode nothing runs and the task is reported as skipped.
version_added: "0.1.0"
author: hako contributors
options:
  container:
    description: Name of the container.
    type: str
    required: true
    aliases: [name]
  command:
    description: The command as one string, split into words as a shell would (no shell runs).
    type: str
  argv:
    description: The command as a list of words.
    type: list
    elements: str
  chdir:
    description: Working directory inside the container (absolute).
    type: str
    aliases: [workdir]
  user:
    description: User to run as, V(uid[:gid]) or V(name[:group]).
    type: str
  env:
    description: Environment variables for the command, added to the container's.
    type: dict
  strip_empty_ends:
    description: Remove empty lines at the end of stdout and stderr.
    type: bool
    default: true
notes:
  - Exactly one of O(command) and O(argv) is required.
seealso:
  - module: hako_container
"""

EXAMPLES = r"""
- name: The container's PID namespace is not the host's
  hako_exec:
    container: learner1
    command: readlink /proc/self/ns/pid
  register: pid_ns
  changed_when: false

- name: Write a file as a learner would
  hako_exec:
    container: learner1
    argv: [sh, -c, "echo hello > /tmp/greeting"]
    user: "1000"
    env:
      GREETING: hello
"""

RETURN = r"""
rc:
  description: Exit code of the command (128 + N when signal N ended it).
  returned: when the command ran
  type: int
  sample: 0
stdout:
  description: Its standard output.
  returned: when the command ran
  type: str
stderr:
  description: Its standard error.
  returned: when the command ran
  type: str
stdout_lines:
  description: O(stdout) split into lines.
  returned: when the command ran
  type: list
  elements: str
stderr_lines:
  description: O(stderr) split into lines.
  returned: when the command ran
  type: list
  elements: str
cmd:
  description: The command as the list of words that ran.
  returned: always
  type: list
  elements: str
"""

import shlex

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.hako.ansible_container import open_engine, run_exec
from ansible.module_utils.hako.ansible_options import check_name, env_entries
from ansible.module_utils.hako.errors import HakoError


def _text(data: bytes, strip: bool) -> str:
    text = data.decode("utf-8", errors="replace")
    return text.rstrip("\r\n") if strip else text


def argument_spec() -> dict:
    return dict(
        container=dict(type="str", required=True, aliases=["name"]),
        command=dict(type="str"),
        argv=dict(type="list", elements="str"),
        chdir=dict(type="str", aliases=["workdir"]),
        user=dict(type="str"),
        env=dict(type="dict"),
        strip_empty_ends=dict(type="bool", default=True),
    )


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(),
        required_one_of=[["command", "argv"]],
        mutually_exclusive=[["command", "argv"]],
        supports_check_mode=True,
    )
    p = module.params
    try:
        argv = p["argv"] if p["argv"] is not None else shlex.split(p["command"])
    except ValueError as e:
        module.fail_json(msg=f"invalid value for command: {e}")
    if not argv:
        module.fail_json(msg="invalid value for command: it is empty", cmd=argv)
    if module.check_mode:
        module.exit_json(
            changed=False, skipped=True, msg="Command would have run if not in check mode", cmd=argv
        )
    try:
        env = env_entries(p["env"]) if p["env"] else None
        rc, out, err = run_exec(
            open_engine(), check_name(p["container"]), argv, env=env, user=p["user"], workdir=p["chdir"]
        )
    except HakoError as e:
        module.fail_json(msg=str(e), cmd=argv)
    stdout, stderr = _text(out, p["strip_empty_ends"]), _text(err, p["strip_empty_ends"])
    result = dict(
        changed=True,
        cmd=argv,
        rc=rc,
        stdout=stdout,
        stderr=stderr,
        stdout_lines=stdout.splitlines(),
        stderr_lines=stderr.splitlines(),
    )
    if rc != 0:
        module.fail_json(msg="non-zero return code", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
