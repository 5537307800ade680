"""Inventory plugin: the containers of lab hosts as inventory hosts."""

from __future__ import annotations

DOCUMENTATION = r"""
name: hako
short_description: hako containers as inventory hosts
description:
  - The containers of one or more lab hosts as inventory hosts, read with C(hako ps) and
    C(hako inspect), on this machine or over SSH on another lab host.
  - Each host gets the variables of the C(hako) connection plugin, so a play reaches the
    container (this machine directly, another lab host through SSH) with no more settings.
  - Default groups are C(hako_lab_<lab>) and C(hako_learner_<learner>) (the labels C(hako.lab) and
    C(hako.learner) that the hako_lab role puts on learners' containers), C(hako_<status>)
    (C(hako_running), C(hako_exited), ...) and C(hako_host_<lab host>). O(keyed_groups),
    O(groups) and O(compose) make more, from the host variables below.
  - "Host variables: C(hako_id), C(hako_name), C(hako_image), C(hako_labels), C(hako_status),
    C(hako_ip) (the first network address, if any), C(hako_lab) and C(hako_learner)."
  - The configuration file's name ends in C(hako.yml) or C(hako.yaml).
author: hako project
extends_documentation_fragment:
  - constructed
options:
  plugin:
    description: The name of this plugin; it makes the file a configuration of it.
    type: str
    required: true
    choices: [hako]
  hosts:
    description:
      - The lab hosts whose containers to list; C(localhost) is this machine, anything else an
        SSH destination (C(host) or C(user@host)) with the C(hako) command.
      - A container of this machine is named as it is; one of another lab host is named
        C(<container>.<host>), so that the same container name on two lab hosts makes two hosts.
    type: list
    elements: str
    default: [localhost]
  hako_command:
    description:
      - The C(hako) command, split like a shell command line, on this machine and on the lab hosts.
      - Set for each container too (as C(ansible_hako_command)), for the connection.
    type: str
    default: hako
  hako_env:
    description:
      - Environment variables for the C(hako) command (C(HAKO_ROOT), C(HAKO_RUN)), here and on the
        lab hosts; set for each container too (as C(ansible_hako_env)).
    type: dict
    default: {}
  ssh_command:
    description: The SSH client used to reach lab hosts other than C(localhost).
    type: str
    default: ssh
  ssh_args:
    description:
      - Arguments for the SSH client before the destination, split like a shell command line;
        C(-o BatchMode=yes) is always added. Passed on to the connection of those hosts' containers.
    type: str
    default: ""
  default_groups:
    description: Whether to make the default groups (by lab, learner, status and lab host).
    type: bool
    default: true
  filters:
    description:
      - Which containers become hosts, as in C(community.docker.docker_containers). Each item is
        C(include) or C(exclude) with a conditional (a Jinja2 test over the host variables, such as
        C(hako_status == "running") or C("'hako.lab' in hako_labels")) or a boolean.
      - The first item whose conditional holds decides; a container no item matches is included.
    type: list
    elements: dict
    default: []
"""

EXAMPLES = r"""
# inventory/lab.hako.yml: the running containers of the lab "linuc" on this machine and on lab1.
plugin: hako
hosts:
  - localhost
  - root@lab1.example.org
filters:
  - exclude: hako_status != "running"
  - include: hako_lab == "linuc"
  - exclude: true
keyed_groups:
  # a group per label: label_hako_learner_alice, ...
  - key: hako_labels
    prefix: label
"""

import importlib
import json
import os
import subprocess

from ansible.errors import AnsibleError, AnsibleParserError
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.inventory import BaseInventoryPlugin, Constructable
from ansible.plugins.loader import connection_loader
from ansible.utils.unsafe_proxy import wrap_var

LAB_LABEL = "hako.lab"
LEARNER_LABEL = "hako.learner"
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
# A container removed between `hako ps` and `hako inspect` fails the inspect: list again.
READ_ATTEMPTS = 3


def parse_filters(filters) -> list[tuple[str, str | bool]]:
    """The filters as (include|exclude, conditional) pairs; a bad item fails naming its place."""
    if not isinstance(filters, list):
        raise AnsibleParserError(f"invalid value for filters: {filters!r} (expected a list)")
    parsed = []
    for index, item in enumerate(filters):
        if not isinstance(item, dict) or len(item) != 1 or next(iter(item)) not in ("include", "exclude"):
            raise AnsibleParserError(
                f"invalid value for filters[{index}]: {item!r} (expected one key, include or exclude)"
            )
        ((kind, test),) = item.items()
        if not isinstance(test, (str, bool)):
            raise AnsibleParserError(
                f"invalid value for filters[{index}].{kind}: {test!r} (expected a conditional or a boolean)"
            )
        parsed.append((kind, test))
    return parsed


def passes(filters: list[tuple[str, str | bool]], holds) -> bool:
    """Whether a host is kept: the first filter whose conditional ``holds`` decides, none means kept."""
    for kind, test in filters:
        if test if isinstance(test, bool) else holds(test):
            return kind == "include"
    return True


def host_name(container: str, lab_host: str) -> str:
    """The inventory name of a container: its own on this machine, ``name.host`` on another lab host."""
    if lab_host in LOCAL_HOSTS:
        return container
    return f"{container}.{lab_host.rpartition('@')[2]}"


def container_facts(record: dict) -> dict:
    """The host variables of a container, from its ``hako inspect`` record."""
    labels = (record.get("Config") or {}).get("Labels") or {}
    networks = (record.get("NetworkSettings") or {}).get("Networks") or {}
    addresses = [n.get("IPAddress") for n in networks.values() if n.get("IPAddress")]
    return {
        "hako_id": record["Id"],
        "hako_name": record["Name"],
        "hako_image": record.get("ImageName") or record.get("Image"),
        "hako_labels": dict(labels),
        "hako_status": (record.get("State") or {}).get("Status", "unknown"),
        "hako_ip": addresses[0] if addresses else None,
        "hako_lab": labels.get(LAB_LABEL),
        "hako_learner": labels.get(LEARNER_LABEL),
    }


def default_groups(facts: dict, lab_host: str) -> list[str]:
    """The default groups of a container (names not yet made safe)."""
    groups = [f"hako_{facts['hako_status']}", f"hako_host_{lab_host.rpartition('@')[2]}"]
    if facts["hako_lab"]:
        groups.append(f"hako_lab_{facts['hako_lab']}")
    if facts["hako_learner"]:
        groups.append(f"hako_learner_{facts['hako_learner']}")
    return groups


class InventoryModule(BaseInventoryPlugin, Constructable):
    """Lists the containers of lab hosts as inventory hosts."""

    NAME = "hako"

    def verify_file(self, path: str) -> bool:
        return super().verify_file(path) and path.endswith(("hako.yml", "hako.yaml"))

    def parse(self, inventory, loader, path, cache=True) -> None:
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        filters = parse_filters(self.get_option("filters"))
        # The same command line as the connection's, so both reach a lab host alike.
        connection = importlib.import_module(connection_loader.get("hako", class_only=True).__module__)
        self._hako_argv = connection.hako_argv
        for lab_host in self.get_option("hosts"):
            for record in self._read_containers(lab_host):
                self._add_container(record, lab_host, filters)

    def _run(self, lab_host: str, args: list[str]) -> subprocess.CompletedProcess:
        env = {str(k): str(v) for k, v in self.get_option("hako_env").items()}
        host = None if lab_host in LOCAL_HOSTS else lab_host
        argv = self._hako_argv(
            self.get_option("hako_command"),
            host,
            env,
            args,
            self.get_option("ssh_command"),
            self.get_option("ssh_args"),
        )
        local_env = dict(os.environ, **env) if host is None else None
        try:
            return subprocess.run(argv, capture_output=True, env=local_env, check=False, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise AnsibleParserError(f"cannot list the containers of lab host {lab_host}: {e}") from e

    def _read_containers(self, lab_host: str) -> list[dict]:
        """Every container of a lab host, as ``hako inspect`` shows it."""
        for _ in range(READ_ATTEMPTS):
            listed = self._run(lab_host, ["ps", "-a", "-q", "--no-trunc"])
            if listed.returncode != 0:
                break
            ids = to_text(listed.stdout).split()
            if not ids:
                return []
            inspected = self._run(lab_host, ["inspect", *ids])
            if inspected.returncode == 0:
                try:
                    return [r for r in json.loads(inspected.stdout) if r.get("State")]
                except ValueError as e:
                    raise AnsibleParserError(
                        f"cannot read the containers of lab host {lab_host}: no JSON from hako inspect ({e})"
                    ) from e
            listed = inspected
        raise AnsibleParserError(
            f"cannot list the containers of lab host {lab_host}: {to_text(listed.stderr).strip()}"
        )

    def _host_vars(self, facts: dict, lab_host: str) -> dict:
        variables = {
            "ansible_connection": "hako",
            "ansible_host": facts["hako_name"],
            "ansible_hako_command": self.get_option("hako_command"),
            **facts,
        }
        if self.get_option("hako_env"):
            variables["ansible_hako_env"] = dict(self.get_option("hako_env"))
        if lab_host not in LOCAL_HOSTS:
            variables["hako_host"] = lab_host
            variables["ansible_hako_ssh_command"] = self.get_option("ssh_command")
            variables["ansible_hako_ssh_args"] = self.get_option("ssh_args")
        return variables

    def _add_container(self, record: dict, lab_host: str, filters: list) -> None:
        facts = wrap_var(container_facts(record))  # what containers hold is data, never a template
        name = host_name(facts["hako_name"], lab_host)
        variables = self._host_vars(facts, lab_host)
        if not passes(filters, lambda test: self._holds(test, variables, name)):
            return
        self.inventory.add_host(name)
        for key, value in variables.items():
            self.inventory.set_variable(name, key, value)
        if self.get_option("default_groups"):
            for group in default_groups(facts, lab_host):
                group = self.inventory.add_group(self._sanitize_group_name(group))
                self.inventory.add_child(group, name)
        strict = self.get_option("strict")
        self._set_composite_vars(self.get_option("compose"), variables, name, strict=strict)
        self._add_host_to_composed_groups(self.get_option("groups"), variables, name, strict=strict)
        self._add_host_to_keyed_groups(self.get_option("keyed_groups"), variables, name, strict=strict)

    def _holds(self, test: str, variables: dict, name: str) -> bool:
        self.templar.available_variables = {**variables, "inventory_hostname": name}
        try:
            return bool(self.templar.evaluate_conditional(test))
        except Exception as e:  # any templating error, reported with the filter
            raise AnsibleError(f"invalid value for filters: {test!r} fails for container {name}: {e}") from e
