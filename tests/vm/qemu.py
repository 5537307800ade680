"""A guest booted under qemu with software emulation, reached over one forwarded SSH port.

Each guest runs on a throwaway qcow2 overlay over the cached image, so every
run starts from a clean guest. Its network is qemu's user mode with
``restrict=on``: the guest reaches nothing, and the host reaches it only on
``127.0.0.1:<port>`` forwarded to its sshd. The key is made for the run and
handed over on the kernel command line (see guest.py). qemu writes its PID to
a file in the run directory and is stopped by that PID (``Guest.stop``),
which the fixtures call in their finalisers.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from .guest import Image

BOOT_TIMEOUT = float(os.environ.get("HAKO_VM_BOOT_TIMEOUT", "300"))

MACHINES = {
    # KVM aborts or hangs on this class of machine: TCG only.
    "x86_64": (
        ["qemu-system-x86_64", "-accel", "tcg", "-M", "q35", "-cpu", "max"],
        "ttyS0",
    ),
    "arm64": (
        ["qemu-system-aarch64", "-accel", "tcg", "-M", "virt", "-cpu", "cortex-a57"],
        "ttyAMA0",
    ),
}


# What a console shows when the boot will not get any further.
STUCK = ("Dropping to a shell", "Kernel panic", "(initramfs)")


class GuestError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Guest:
    def __init__(self, image: Image, run_dir: Path, memory: str = "1024", cpus: int = 2) -> None:
        self.image = image
        self.arch = image.arch.name
        self.dir = run_dir
        self.memory = memory
        self.cpus = cpus
        self.port = 0
        self.pidfile = run_dir / "qemu.pid"
        self.console = run_dir / "console.log"
        self.key = run_dir / "id_ed25519"
        self.known_hosts = run_dir / "known_hosts"
        self.control = run_dir / "ssh-%C"
        self.boot_seconds: list[float] = []

    # Starting and stopping ---------------------------------------------------------------

    def start(self) -> None:
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hako-vm", "-f", str(self.key)],
            check=True,
            capture_output=True,
        )
        kind, blob = self.key.with_suffix(".pub").read_text().split()[:2]
        overlay = self.dir / "overlay.qcow2"
        subprocess.run(
            [
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                "raw",
                "-b",
                str(self.image.disk),
                str(overlay),
            ],
            check=True,
            capture_output=True,
        )
        machine, console = MACHINES[self.arch]
        self.port = free_port()
        argv = [
            *machine,
            "-m",
            self.memory,
            "-smp",
            str(self.cpus),
            "-kernel",
            str(self.image.kernel),
            "-initrd",
            str(self.image.initrd),
            "-append",
            f"root=/dev/vda rootfstype=ext4 rw console={console} hako.ssh={kind}:{blob}",
            "-drive",
            f"file={overlay},format=qcow2,if=none,id=disk0",
            "-device",
            "virtio-blk-pci,drive=disk0",
            "-netdev",
            f"user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{self.port}-:22",
            "-device",
            "virtio-net-pci,netdev=net0,romfile=",  # no PXE ROM: the kernel is given
            "-display",
            "none",
            "-serial",
            f"file:{self.console}",
            "-pidfile",
            str(self.pidfile),
            "-daemonize",
        ]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise GuestError(f"{argv[0]} exited {proc.returncode}: {proc.stderr.strip()}")
        self.wait_for_ssh()

    def pid(self) -> int | None:
        """qemu's PID, if the process the PID file names is still this run's qemu."""
        try:
            pid = int(self.pidfile.read_text())
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except (OSError, ValueError):
            return None
        return pid if str(self.pidfile).encode() in cmdline else None

    def stop(self) -> None:
        """End the SSH master connection and qemu (by its PID); remove nothing else."""
        subprocess.run(
            ["ssh", *self.ssh_options(), "-O", "exit", "root@127.0.0.1"],
            capture_output=True,
            timeout=10,
        )
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while self.pid() is not None:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 10
            time.sleep(0.1)

    # SSH -----------------------------------------------------------------------------------

    def ssh_options(self) -> list[str]:
        return [
            "-i",
            str(self.key),
            "-p",
            str(self.port),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "ControlMaster=auto",
            "-o",
            f"ControlPath={self.control}",
            "-o",
            "ControlPersist=120",
            "-o",
            "LogLevel=ERROR",
        ]

    def ssh(self, command: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        """Run ``command`` (a shell line) as root in the guest."""
        proc = subprocess.run(
            ["ssh", *self.ssh_options(), "root@127.0.0.1", command],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise GuestError(
                f"{self.arch} guest: {command!r} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}"
            )
        return proc

    def copy_in(self, local: Path, remote: str) -> None:
        with open(local, "rb") as f:
            proc = subprocess.run(
                ["ssh", *self.ssh_options(), "root@127.0.0.1", f"cat > {remote}"],
                stdin=f,
                capture_output=True,
                timeout=300,
            )
        if proc.returncode != 0:
            raise GuestError(
                f"copying {local} to the {self.arch} guest failed: {proc.stderr.decode()[-500:]}"
            )

    def wait_for_ssh(self, previous_boot: str | None = None) -> str:
        """Wait (bounded) until sshd answers, in a boot other than ``previous_boot``; its boot id."""
        started = time.monotonic()
        deadline = started + BOOT_TIMEOUT
        while True:
            if self.pid() is None:
                raise GuestError(f"the {self.arch} guest's qemu is gone; console:\n{self.console_tail()}")
            proc = subprocess.run(
                [
                    "ssh",
                    *self.ssh_options(),
                    "-o",
                    "ControlMaster=no",
                    "root@127.0.0.1",
                    "cat /proc/sys/kernel/random/boot_id",
                ],
                capture_output=True,
                text=True,
                timeout=60,
                stdin=subprocess.DEVNULL,
            )
            boot = proc.stdout.strip()
            if proc.returncode == 0 and boot and boot != previous_boot:
                self.boot_seconds.append(time.monotonic() - started)
                return boot
            if any(sign in self.console_tail(5) for sign in STUCK):
                raise GuestError(f"the {self.arch} guest did not boot; console:\n{self.console_tail()}")
            if time.monotonic() > deadline:
                raise GuestError(
                    f"the {self.arch} guest did not answer on SSH within {BOOT_TIMEOUT:.0f} s; console:\n"
                    + self.console_tail()
                )
            time.sleep(2)

    def reboot(self) -> None:
        """``systemctl reboot`` in the guest, then wait for SSH in the next boot."""
        boot = self.ssh("cat /proc/sys/kernel/random/boot_id").stdout.strip()
        self.ssh("systemctl reboot", check=False, timeout=30)
        subprocess.run(["ssh", *self.ssh_options(), "-O", "exit", "root@127.0.0.1"], capture_output=True)
        self.wait_for_ssh(previous_boot=boot)

    def console_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.console.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no console output)"

    # Ansible ---------------------------------------------------------------------------------

    def inventory_host(self) -> dict:
        return {
            "ansible_host": "127.0.0.1",
            "ansible_port": self.port,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(self.key),
            "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_ssh_common_args": " ".join(
                [
                    "-o IdentitiesOnly=yes",
                    "-o StrictHostKeyChecking=no",
                    f"-o UserKnownHostsFile={self.known_hosts}",
                    "-o ControlMaster=auto",
                    f"-o ControlPath={self.control}",
                    "-o ControlPersist=120",
                ]
            ),
        }
