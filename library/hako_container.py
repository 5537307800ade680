#!/usr/bin/python
# Copyright: hako contributors
# Apache License 2.0 (see pyproject.toml)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: hako_container
short_description: Manage the life cycle of a hako container
description:
  - Creates, updates, starts, stops, restarts and removes one hako container on the target host.
  - Only the options you set are compared with an existing container, each with a comparison
    mode (see O(comparisons)). Differences in cgroup limits (O(memory), O(memory_swap), O(cpus),
    O(cpu_shares), O(cpuset_cpus), O(cpuset_mems), O(pids_limit)) and in O(restart_policy) are
    changed in place, on a running container without restarting it; so are differences in
    O(networks), by connecting and disconnecting it. Any other difference recreates the
    container.
  - Containers are started through the hako supervisor, which stays their parent after the
    task has ended. The hako runtime ships with the module; nothing needs installing first.
  - To converge many containers in one task use M(hako_containers).
version_added: "0.1.0"
author: hako contributors
options:
  name:
    description: Name of the container (letters, digits, V(_), V(.), V(-)).
    type: str
    required: true
  state:
    description:
      - V(present) makes sure the container exists with the options given, and leaves a running
        container running (also when it had to be recreated) and a stopped one stopped.
      - V(started) as V(present), and running.
      - V(stopped) as V(present), and not running.
      - V(restarted) as V(started), and restarted even if nothing differs (always changed).
      - V(absent) stops (see O(force_kill)) and removes the container.
    type: str
    choices: [present, started, stopped, restarted, absent]
    default: started
  image:
    description:
      - Image the container runs (a name such as V(busybox), or an image ID).
      - Required to create a container. Compared by image ID, so a rebuilt image recreates it.
    type: str
  command:
    description: Command, replacing the image's; a string is split as a shell would.
    type: raw
  entrypoint:
    description: Entrypoint, replacing the image's; a string is split as a shell would, V([]) clears it.
    type: raw
  env:
    description:
      - Environment variables, as a mapping or a list of V(NAME=value).
      - Values must be strings or numbers (quote V(yes), V(true) and the like).
    type: raw
  hostname:
    description: Host name inside the container (its UTS namespace).
    type: str
  user:
    description: User the command runs as, V(uid[:gid]) or V(name[:group]).
    type: str
  workdir:
    description: Working directory inside the container (absolute).
    type: str
    aliases: [working_dir]
  tty:
    description: Give the container a terminal (for C(hako attach)).
    type: bool
  interactive:
    description: Keep the container's standard input open.
    type: bool
  namespaces:
    description:
      - Namespace of each kind (V(ipc), V(mount), V(network), V(pid), V(uts), V(cgroup)), one of
        V(private), V(host) or V(container:NAME) to share another container's.
      - Kinds left out are private when the container is made; only the kinds given are
        compared unless O(comparisons) says V(strict).
    type: dict
  userns:
    description: User namespace, V(host) (none), V(auto) or V(HOSTUID[:SIZE]).
    type: str
  memory:
    description: Memory limit, bytes or a size such as V(64m) or V(1g).
    type: raw
  memory_swap:
    description: Memory plus swap limit (at least O(memory)), or V(-1) for unlimited swap.
    type: raw
  cpus:
    description: CPU quota in CPUs, such as V(0.5).
    type: float
  cpu_shares:
    description: Relative CPU weight.
    type: int
  cpuset_cpus:
    description: CPUs the container may use, such as V(0-1,3).
    type: str
  cpuset_mems:
    description: Memory nodes the container may use.
    type: str
  pids_limit:
    description: Maximum number of processes, V(-1) for unlimited.
    type: int
  volumes:
    description: Bind mounts, V(/host/path:/container/path[:ro|rw]).
    type: list
    elements: str
  mounts:
    description: Bind mounts in long form; compared together with O(volumes).
    type: list
    elements: dict
    suboptions:
      type:
        description: Kind of mount; only V(bind).
        type: str
        choices: [bind]
        default: bind
      source:
        description: Path on the host.
        type: path
        required: true
      target:
        description: Path inside the container.
        type: str
        required: true
      read_only:
        description: Mount read-only.
        type: bool
        default: false
  tmpfs:
    description: Tmpfs mounts, V(/container/path[:options]) such as V(/run:size=16m,mode=755).
    type: list
    elements: str
  read_only:
    description: Mount the container's root filesystem read-only.
    type: bool
  storage_opts:
    description:
      - "Options of the container's writable layer, as C(hako run --storage-opt KEY=VALUE). The
        only key is V(size), such as V({size: 64m}) (at least V(4m)): the layer is a filesystem of
        that size of its own, and a write past it fails inside with C(No space left on device)."
      - Compared as sizes (V(64m) and V(65536k) are the same); a difference makes the container
        again, with an empty layer.
    type: dict
  networks:
    description:
      - The hako networks (see M(hako_network)) the container is on, in the order of its
        interfaces (C(eth0), C(eth1), ...). Each item is a network's name, or a mapping with
        V(name), V(ip) (its address there; default the next free one) and V(aliases) (more
        names it goes by on that network).
      - Compared as a set of networks, and the address and aliases of each where the item gives
        them. Under the default comparison V(strict) the container leaves networks not listed
        (V([]) - on no network); with V(allow_more_present) it may be on more.
      - A difference is changed in place, on a running container without restarting it
        (actions V(connect NETWORK), V(disconnect NETWORK)); a changed address or aliases on a
        network disconnects and connects it again.
      - The networks must exist (in check mode, a missing one is taken as one an earlier task
        makes). Needs a network namespace of the container's own (O(namespaces)).
    type: list
    elements: raw
  restart_policy:
    description:
      - V(no), V(always), V(unless-stopped) or V(on-failure[:N]); the supervisor restarts the
        container by it. Changed in place.
    type: str
  labels:
    description: Labels (strings), for example to tell which lab a container belongs to.
    type: dict
  published_ports:
    description:
      - Ports published on the host, V([ip:]hostport:containerport[/tcp|udp]) each (ranges
        V(8080-8081:80-81)), as C(hako run -p); the container needs a network. Compared as a
        set; a difference makes the container again.
    type: list
    elements: str
    aliases: [ports]
  sysctls:
    description:
      - "C(net.*) kernel settings of the container's own network namespace, written at each start
        (V(net.ipv4.ip_forward=1) for a router); as C(hako run --sysctl)."
    type: dict
  stop_signal:
    description: Signal that stops the container, a name or a number.
    type: str
  stop_timeout:
    description:
      - Seconds a stop waits after the stop signal before SIGKILL. Given at creation, it is kept
        in the container; given here, it is also used by this task's stops.
      - Not compared unless O(comparisons) asks for it.
    type: int
  force_kill:
    description: Stop with SIGKILL at once instead of the stop signal and timeout.
    type: bool
    default: false
  recreate:
    description: Recreate the container even if nothing differs (always changed).
    type: bool
    default: false
  comparisons:
    description:
      - Comparison mode per option, overriding the defaults; as in community.docker.docker_container.
      - V(strict) compares the whole value, V(ignore) not at all, V(allow_more_present) (lists and
        mappings only) accepts a container that has more than asked for.
      - Defaults are V(strict), except V(allow_more_present) for O(env), O(labels) and
        O(namespaces), and V(ignore) for O(stop_timeout).
      - The key V(*) sets V(strict) or V(ignore) for every option not named. O(mounts) is
        compared as part of O(volumes).
    type: dict
notes:
  - Check mode changes nothing (no container is made, no cgroup is written) and reports the
    actions it would take; a missing image is taken as one an earlier task would make. Diff mode
    returns the compared options before and after.
  - Recreating makes the container from the options given in the task; options left out take
    their defaults, not the old container's values.
  - Connecting or disconnecting a running container needs pyroute2 on the target (the
    hako_host role installs it); without it the task fails saying so and changes nothing.
  - Reads C(HAKO_ROOT), C(HAKO_RUN) and C(HAKO_CGROUP_PARENT) from the environment (set them
    with the task's C(environment)).
seealso:
  - module: hako_containers
  - module: hako_container_info
  - module: hako_exec
  - module: hako_network
"""

EXAMPLES = r"""
- name: A learner's container, running, with its limits
  hako_container:
    name: learner1
    image: busybox
    command: sleep infinity
    hostname: learner1
    memory: 64m
    cpus: 0.5
    pids_limit: 50
    labels:
      lab: linuc
    restart_policy: unless-stopped

- name: More memory for it, changed in place without a restart
  hako_container:
    name: learner1
    memory: 128m

- name: On two networks, with a fixed address on the first; joined and left in place later
  hako_container:
    name: web
    image: busybox
    command: httpd -f -p 80
    networks:
      - name: lab
        ip: 10.213.1.10
        aliases: [www]
      - backend

- name: Share the network namespace of another container
  hako_container:
    name: sidecar
    image: busybox
    command: sleep infinity
    namespaces:
      network: container:learner1
      pid: private

- name: Only care that the image and limits match; ignore everything else
  hako_container:
    name: learner1
    image: busybox
    memory: 128m
    comparisons:
      "*": ignore
      image: strict
      memory: strict

- name: Stop it
  hako_container:
    name: learner1
    state: stopped

- name: Remove it at once
  hako_container:
    name: learner1
    state: absent
    force_kill: true
"""

RETURN = r"""
actions:
  description:
    - What the task did (in check mode, would do), in order.
    - V(create), V(recreate), V(start), V(stop), V(restart), V(remove), V(update OPTION)
      for each option changed in place, and V(disconnect NETWORK) and V(connect NETWORK) for
      each network left or joined.
  returned: always
  type: list
  elements: str
  sample: ["update memory", "update pids_limit"]
container:
  description:
    - The container as C(hako inspect) shows it (V({}) once it is absent). A running container
      also has C(Namespaces) and C(Cgroup) with the limits read back from the kernel.
  returned: always
  type: dict
  sample:
    Id: 0c5b2e...
    Name: learner1
    State: {Status: running, Running: true, Pid: 4242}
    HostConfig: {Limits: {memory: 134217728, pids_limit: 50}, RestartPolicy: unless-stopped}
diff:
  description: The container's state and the compared options, before and after.
  returned: in diff mode
  type: dict
  sample:
    before: {state: running, memory: 67108864}
    after: {state: running, memory: 134217728}
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.hako import ansible_options
from ansible.module_utils.hako.ansible_container import converge, open_engine
from ansible.module_utils.hako.errors import HakoError, MissingLibrary

STATES = ["present", "started", "stopped", "restarted", "absent"]


def argument_spec() -> dict:
    return dict(
        name=dict(type="str", required=True),
        state=dict(type="str", default="started", choices=STATES),
        force_kill=dict(type="bool", default=False),
        recreate=dict(type="bool", default=False),
        comparisons=dict(type="dict"),
        **ansible_options.argument_spec(),
    )


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    try:
        result = converge(open_engine(), module.params, module.check_mode)
    except HakoError as e:
        done = getattr(e, "done", [])
        msg = missing_required_lib(e.library) if isinstance(e, MissingLibrary) else str(e)
        module.fail_json(msg=msg, changed=bool(done), actions=done)
    ansible_options.exit_with_result(module, result)


if __name__ == "__main__":
    main()
