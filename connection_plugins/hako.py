"""Connection plugin: run Ansible tasks inside a hako container."""

from __future__ import annotations

DOCUMENTATION = r"""
name: hako
short_description: Run tasks inside hako containers
description:
  - Runs Ansible tasks inside a running hako container through C(hako exec), the way
    C(community.docker.docker) runs them inside a Docker container; commands enter the
    container's namespaces and cgroup and run as the container's user or O(remote_user).
  - The container is on this machine, or on a lab host reached over SSH when O(hako_host) is set
    (C(ssh <hako_host> hako exec ...); the lab host needs the C(hako) command, not Python).
  - Files are copied by streaming them through C(hako exec -i) into C(cat) inside the container,
    as the remote user, so paths (symlinks too) resolve in the container's own view and new files
    belong to that user.
  - Modules need C(python3) in the image; in an image without it (busybox), only C(raw) and
    C(script) tasks work. The image needs C(/bin/sh) and C(cat) for everything.
  - Become works as usual (C(become_method=su) from root needs no password, and C(sudo) if the
    image has it); a become password is not supported, there is no terminal to type it into.
author: hako project
extends_documentation_fragment:
  - connection_pipelining
options:
  remote_addr:
    description: The name or ID of the container.
    type: str
    default: inventory_hostname
    vars:
      - name: inventory_hostname
      - name: ansible_host
      - name: ansible_hako_container
  remote_user:
    description:
      - The user to run as inside the container (C(hako exec -u)), a name from the container's
        C(/etc/passwd), C(uid) or C(uid:gid).
      - Not set means the container's own user (root for most images).
    type: str
    vars:
      - name: ansible_user
      - name: ansible_hako_user
    ini:
      - section: defaults
        key: remote_user
    env:
      - name: ANSIBLE_REMOTE_USER
    cli:
      - name: user
    keyword:
      - name: remote_user
  hako_command:
    description:
      - The C(hako) command, split like a shell command line (C(python3 -m hako) works).
      - Over SSH, the command on the lab host.
    type: str
    default: hako
    vars:
      - name: ansible_hako_command
    env:
      - name: ANSIBLE_HAKO_COMMAND
    ini:
      - section: hako_connection
        key: command
  hako_env:
    description:
      - Environment variables for the C(hako) command, such as C(HAKO_ROOT) and C(HAKO_RUN).
      - Locally they are added to the controller's environment, which the command inherits;
        over SSH they are set on the lab host with C(env).
    type: dict
    default: {}
    vars:
      - name: ansible_hako_env
  hako_host:
    description:
      - The lab host the container runs on, as an SSH destination (C(host) or C(user@host)).
      - Not set (or C(localhost)) means this machine, without SSH.
    type: str
    vars:
      - name: hako_host
      - name: ansible_hako_host
    env:
      - name: ANSIBLE_HAKO_HOST
  hako_ssh_command:
    description: The SSH client used to reach O(hako_host).
    type: str
    default: ssh
    vars:
      - name: ansible_hako_ssh_command
    env:
      - name: ANSIBLE_HAKO_SSH_COMMAND
  hako_ssh_args:
    description:
      - Arguments for the SSH client before the destination (C(-p 2222 -i key)), split like a shell
        command line. C(-o BatchMode=yes) is always added, so that a missing key fails at once
        instead of waiting for a password.
    type: str
    default: ""
    vars:
      - name: ansible_hako_ssh_args
    env:
      - name: ANSIBLE_HAKO_SSH_ARGS
"""

EXAMPLES = r"""
# A play against containers on this machine (the inventory plugin sets the same variables).
- name: Prepare the learners' containers
  hosts: linuc-alice,linuc-bob
  gather_facts: false
  vars:
    ansible_connection: hako
  tasks:
    - name: Show the container's kernel view
      ansible.builtin.raw: cat /proc/self/cgroup

# A container on another lab host, through SSH.
- name: Configure a container on lab1
  hosts: linuc-carol
  vars:
    ansible_connection: hako
    hako_host: root@lab1.example.org
  tasks:
    - name: Install an exercise file
      ansible.builtin.copy:
        content: "Find the PID namespace of this shell.\n"
        dest: /root/exercise.txt
        mode: "0644"
"""

import json
import os
import shlex
import subprocess

from ansible.errors import AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound
from ansible.module_utils.common.text.converters import to_bytes, to_text
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

display = Display()

# hako's own failures (no such container, not running, bad --user) exit 125,
# as Docker's do; the command's own exit status is passed on otherwise.
HAKO_FAILED = 125
SSH_FAILED = 255
LOCAL_HOSTS = ("", "localhost", "127.0.0.1", "::1")


def hako_argv(
    command: str, host: str | None, env: dict, args: list[str], ssh: str, ssh_args: str
) -> list[str]:
    """The command line that runs ``hako ARGS`` on this machine or, through SSH, on ``host``."""
    hako = shlex.split(command)
    if not hako:
        raise AnsibleError("invalid value for hako_command: '' (expected the hako command)")
    if host in LOCAL_HOSTS or host is None:
        return [*hako, *args]
    setting = [f"{name}={value}" for name, value in sorted(env.items())]
    remote = shlex.join([*(["env", *setting] if setting else []), *hako, *args])
    return [*shlex.split(ssh), *shlex.split(ssh_args), "-o", "BatchMode=yes", "--", host, remote]


class Connection(ConnectionBase):
    """Runs commands and copies files inside a hako container."""

    transport = "hako"
    has_pipelining = True
    has_tty = False

    def _connect(self) -> Connection:
        if not self._connected:
            display.vvv(
                f"ESTABLISH HAKO CONNECTION FOR USER: {self._user() or '(the container user)'}",
                host=self._container(),
            )
            self._connected = True
        return self

    def close(self) -> None:
        self._connected = False

    def reset(self) -> None:
        self.close()

    # -- helpers ---------------------------------------------------------------

    def _container(self) -> str:
        return self.get_option("remote_addr")

    def _user(self) -> str | None:
        return self.get_option("remote_user") or None

    def _host(self) -> str | None:
        host = self.get_option("hako_host")
        return None if host in LOCAL_HOSTS else host

    def _where(self) -> str:
        host = self._host()
        return f" on {host}" if host else ""

    def _argv(self, args: list[str]) -> list[str]:
        return hako_argv(
            self.get_option("hako_command"),
            self._host(),
            self._env(),
            args,
            self.get_option("hako_ssh_command"),
            self.get_option("hako_ssh_args"),
        )

    def _env(self) -> dict:
        return {str(k): str(v) for k, v in (self.get_option("hako_env") or {}).items()}

    def _exec_args(self, command: list[str], interactive: bool) -> list[str]:
        args = ["exec"]
        if interactive:
            args.append("-i")
        if self._user():
            args += ["-u", self._user()]
        return [*args, self._container(), *command]

    def _run(self, args: list[str], stdin=None, stdout=subprocess.PIPE, input: bytes | None = None):
        """Run hako (through SSH for a remote lab host); (returncode, stdout, stderr) as bytes."""
        argv = self._argv(args)
        display.vvv(f"EXEC {shlex.join(argv)}", host=self._container())
        env = dict(os.environ, **self._env()) if self._host() is None else None
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE if stdin is None else stdin,
                stdout=stdout,
                stderr=subprocess.PIPE,
                env=env,
            )
        except OSError as e:
            raise AnsibleConnectionFailure(
                f"cannot run {argv[0]!r} for hako container {self._container()}: {e.strerror}"
                " (set hako_command or hako_ssh_command)"
            ) from e
        out, err = proc.communicate(input if stdin is None else None)
        if proc.returncode == SSH_FAILED and self._host():
            raise AnsibleConnectionFailure(
                f"cannot reach lab host {self._host()} for hako container {self._container()}: "
                f"{to_text(err).strip()}"
            )
        if proc.returncode == HAKO_FAILED and to_text(err).startswith("hako: "):
            self._fail_for_container(to_text(err).strip())
        return proc.returncode, out or b"", err

    def _fail_for_container(self, message: str) -> None:
        """Raise the clear error for a failure of hako itself: the container, or what hako said."""
        name = self._container()
        rc, out, _ = self._inspect()
        if rc != 0:
            raise AnsibleConnectionFailure(f"hako container {name} does not exist{self._where()}")
        state = (json.loads(out)[0] or {}).get("State")
        if not state:  # the name of an image, not of a container
            raise AnsibleConnectionFailure(f"hako container {name} does not exist{self._where()}")
        if not state.get("Running"):
            raise AnsibleConnectionFailure(
                f"hako container {name} is not running{self._where()} (status {state.get('Status')})"
            )
        raise AnsibleConnectionFailure(
            f"hako container {name}{self._where()}: {message.removeprefix('hako: ')}"
        )

    def _inspect(self):
        argv = self._argv(["inspect", self._container()])
        env = dict(os.environ, **self._env()) if self._host() is None else None
        proc = subprocess.run(argv, capture_output=True, env=env, check=False)
        return proc.returncode, proc.stdout, proc.stderr

    # -- the connection interface ------------------------------------------------

    def exec_command(self, cmd: str, in_data: bytes | None = None, sudoable: bool = True):
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        if sudoable and self.become and self.become.expect_prompt():
            raise AnsibleConnectionFailure(
                f"hako container {self._container()}: become with a password is not supported "
                "(no terminal; root in the container needs none: use become_method su)"
            )
        executable = self._play_context.executable or "/bin/sh"
        args = self._exec_args([executable, "-c", to_text(cmd)], interactive=True)
        rc, out, err = self._run(args, input=in_data or b"")
        return rc, out, err

    def put_file(self, in_path: str, out_path: str) -> None:
        super().put_file(in_path, out_path)
        display.vvv(f"PUT {in_path} TO {out_path}", host=self._container())
        if not os.path.isfile(to_bytes(in_path, errors="surrogate_or_strict")):
            raise AnsibleFileNotFound(
                f"file to copy into hako container {self._container()} not found: {in_path}"
            )
        # cat in the container, as the remote user: the path resolves in the
        # container's mount namespace and root, never on the host, whatever
        # symlinks the container holds; the file is the user's.
        args = self._exec_args(["/bin/sh", "-c", 'cat > "$1"', "sh", out_path], interactive=True)
        with open(to_bytes(in_path, errors="surrogate_or_strict"), "rb") as source:
            rc, _, err = self._run(args, stdin=source)
        if rc != 0:
            raise AnsibleError(
                f"cannot copy {in_path} to {out_path} in hako container {self._container()}: "
                f"{to_text(err).strip()}"
            )

    def fetch_file(self, in_path: str, out_path: str) -> None:
        super().fetch_file(in_path, out_path)
        display.vvv(f"FETCH {in_path} TO {out_path}", host=self._container())
        args = self._exec_args(["/bin/sh", "-c", 'cat -- "$1"', "sh", in_path], interactive=False)
        b_out = to_bytes(out_path, errors="surrogate_or_strict")
        try:
            target = open(b_out, "wb")  # removed below when the fetch fails
        except OSError as e:
            raise AnsibleError(
                f"cannot write {out_path} fetched from hako container {self._container()}: {e.strerror}"
            ) from e
        try:
            with target:
                rc, _, err = self._run(args, stdin=subprocess.DEVNULL, stdout=target)
            if rc != 0:
                raise AnsibleError(
                    f"cannot fetch {in_path} from hako container {self._container()}: {to_text(err).strip()}"
                )
        except BaseException:
            os.unlink(b_out)
            raise
