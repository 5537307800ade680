"""Guest images for the VM stage, built from Debian packages alone and cached.

An image is a directory ``.cache/vm/<arch>-<key>/`` holding ``disk.img`` (a
raw ext4 file system made with ``mkfs.ext4 -d`` from a debootstrap tree),
``vmlinuz`` and ``initrd.img`` (taken from that tree) and ``build.json``. The
key hashes the architecture, the package list and this file, so a change to
either builds a new image and an unchanged one is reused. A build works in a
temporary directory beside the cache and renames it into place when done,
under a lock per architecture.

The guest: bookworm minbase with systemd, sshd, Python, the distribution
kernel and every package the hako_host role installs (the guests have no
network but a forwarded SSH port, so ``ansible.builtin.package`` must find
them installed), systemd-networkd taking DHCP on ``en*``, and a unit that
writes root's ``authorized_keys`` from the kernel command line
(``hako.ssh=<type>:<base64>``), so every run brings a key of its own.

arm64 is built with a foreign debootstrap whose second stage runs under
qemu-user-static. Where no init system has done it, binfmt_misc is mounted
and qemu-aarch64 enabled for the build, and both are put back as they were
afterwards. Both architectures get an initramfs with only the modules a
virtio guest needs (``MODULES=list``): the default takes 20 minutes under
qemu-user.

    /usr/bin/python3 -m tests.vm.guest build [x86_64] [arm64]
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("HAKO_VM_CACHE", REPO / ".cache" / "vm"))
SUITE = "bookworm"
MIRROR = os.environ.get("HAKO_VM_MIRROR", "http://deb.debian.org/debian")
DISK_SIZE = "4G"
BINFMT = Path("/proc/sys/fs/binfmt_misc")


@dataclass(frozen=True)
class Arch:
    name: str  # as Ansible's ansible_architecture says it
    debian: str  # as dpkg says it
    kernel: str  # the kernel package


ARCHES = {
    "x86_64": Arch("x86_64", "amd64", "linux-image-amd64"),
    "arm64": Arch("arm64", "arm64", "linux-image-arm64"),
}

# The guest as a booted system: init, sshd, Python for Ansible (python3-apt for
# ansible.builtin.package on Debian), the kernel with its initramfs.
BASE_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "udev",
    "dbus",
    "kmod",
    "openssh-server",
    "python3",
    "python3-apt",
    "initramfs-tools",
)
# What hako uses beyond hako_host's list: the default network's NAT (nft, or
# iptables), compressed layers, and pytest for the runtime's own tests.
EXTRA_PACKAGES = ("nftables", "iptables", "zstd", "python3-pytest")
# What the initramfs must load to find the root file system on virtio.
INITRAMFS_MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "ext4")


class BuildError(RuntimeError):
    pass


def role_packages() -> list[str]:
    """The Debian packages the hako_host role installs (its vars/Debian.yml lists)."""
    text = (REPO / "roles" / "hako_host" / "vars" / "Debian.yml").read_text()
    names = re.findall(r"^\s+-\s+([a-z0-9][a-z0-9.+-]+)", text, flags=re.M)
    if not names:
        raise BuildError("roles/hako_host/vars/Debian.yml lists no packages")
    return names


def packages(arch: Arch) -> list[str]:
    return sorted({*BASE_PACKAGES, arch.kernel, *role_packages(), *EXTRA_PACKAGES})


def image_key(arch: Arch) -> str:
    digest = hashlib.sha256()
    for part in (arch.name, SUITE, MIRROR, " ".join(packages(arch)), Path(__file__).read_text()):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:12]


@dataclass(frozen=True)
class Image:
    arch: Arch
    directory: Path

    @property
    def disk(self) -> Path:
        return self.directory / "disk.img"

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd.img"

    @property
    def record(self) -> dict:
        return json.loads((self.directory / "build.json").read_text())


def image_dir(arch: Arch) -> Path:
    return CACHE / f"{arch.name}-{image_key(arch)}"


def cached(arch_name: str) -> Image | None:
    arch = ARCHES[arch_name]
    directory = image_dir(arch)
    return Image(arch, directory) if (directory / "build.json").is_file() else None


def image(arch_name: str, log=print) -> Image:
    """The image for ``arch_name``, built first unless the cache has it."""
    if arch_name not in ARCHES:
        raise BuildError(f"unknown guest architecture {arch_name!r}: one of {', '.join(ARCHES)}")
    arch = ARCHES[arch_name]
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".lock-{arch.name}", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = cached(arch.name)
        if found:
            return found
        build(arch, log)
        found = cached(arch.name)
        assert found is not None
        return found


# Building --------------------------------------------------------------------------------


def run(argv: list[str], log, timeout: float = 1800, **kwargs) -> None:
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-25:]
        raise BuildError(f"{' '.join(argv[:4])} ... exited {proc.returncode}:\n" + "\n".join(tail))
    log(f"  {' '.join(argv[:3])} ... {time.monotonic() - started:.0f} s")


def build(arch: Arch, log=print) -> None:
    for tool in ("debootstrap", "mkfs.ext4", "chroot"):
        if not shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin"):
            raise BuildError(f"{tool} is missing: run scripts/setup")
    final = image_dir(arch)
    work = Path(tempfile.mkdtemp(prefix=f".build-{arch.name}-", dir=CACHE))
    root = work / "root"
    log(f"building the {arch.name} guest image {final.name} (packages: {', '.join(packages(arch))})")
    started = time.monotonic()
    try:
        with foreign_binaries(arch):
            debs = CACHE / f"debs-{arch.debian}"
            debs.mkdir(exist_ok=True)
            run(
                [
                    "debootstrap",
                    f"--arch={arch.debian}",
                    "--variant=minbase",
                    "--foreign",
                    f"--include={','.join(packages(arch))}",
                    f"--cache-dir={debs}",
                    SUITE,
                    str(root),
                    MIRROR,
                ],
                log,
            )
            first = time.monotonic() - started
            prepare_initramfs(root)
            policy = root / "usr/sbin/policy-rc.d"
            policy.write_text("#!/bin/sh\nexit 101\n")
            policy.chmod(0o755)
            try:
                run(["chroot", str(root), "/debootstrap/debootstrap", "--second-stage"], log)
            finally:
                release(root)
            second = time.monotonic() - started - first
            configure(root, arch, log)
            policy.unlink(missing_ok=True)
            release(root)
        boot = sorted((root / "boot").glob("vmlinuz-*")), sorted((root / "boot").glob("initrd.img-*"))
        if len(boot[0]) != 1 or len(boot[1]) != 1:
            raise BuildError(f"the guest tree has kernels {boot[0]} and initrds {boot[1]}: want one of each")
        image = work / "image"
        image.mkdir()
        shutil.copy2(boot[0][0], image / "vmlinuz")
        shutil.copy2(boot[1][0], image / "initrd.img")
        for stale in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (root / stale).glob("*"):
                if entry.is_file():
                    entry.unlink()
        run(["mkfs.ext4", "-q", "-L", "hako-vm", "-d", str(root), str(image / "disk.img"), DISK_SIZE], log)
        record = {
            "arch": arch.name,
            "key": final.name.rsplit("-", 1)[1],
            "suite": SUITE,
            "packages": packages(arch),
            "kernel": boot[0][0].name,
            "seconds": {
                "debootstrap_first_stage": round(first),
                "debootstrap_second_stage": round(second),
                "total": round(time.monotonic() - started),
            },
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (image / "build.json").write_text(json.dumps(record, indent=2) + "\n")
        os.rename(image, final)
        log(f"built {final} in {record['seconds']['total']} s")
    finally:
        release(root)
        shutil.rmtree(work, ignore_errors=True)


def prepare_initramfs(root: Path) -> None:
    """Only what a virtio guest needs in the initramfs, gzip: minutes less under qemu-user."""
    conf = root / "etc/initramfs-tools/conf.d"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "hako-vm").write_text("MODULES=list\nCOMPRESS=gzip\n")
    hooks = root / "etc/initramfs-tools/hooks"
    hooks.mkdir(parents=True, exist_ok=True)
    hook = hooks / "hako-vm"
    hook.write_text(
        "#!/bin/sh\n"
        '[ "$1" = prereqs ] && exit 0\n'
        ". /usr/share/initramfs-tools/hook-functions\n"
        # One module a line in conf/modules: a line's further words are its parameters.
        + "".join(f"force_load {module}\n" for module in INITRAMFS_MODULES)
    )
    hook.chmod(0o755)


KEY_UNIT = """\
[Unit]
Description=root's authorized_keys from the kernel command line (hako.ssh=)
Before=ssh.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/hako-vm-key

[Install]
WantedBy=multi-user.target
"""

KEY_SCRIPT = """\
#!/bin/sh
# hako.ssh=<type>:<base64> on the kernel command line becomes root's only key.
for word in $(cat /proc/cmdline); do
  case "$word" in
    hako.ssh=*) key="${word#hako.ssh=}" ;;
  esac
done
[ -n "$key" ] || exit 0
install -d -m 0700 /root/.ssh
printf '%s %s hako-vm\\n' "${key%%:*}" "${key#*:}" > /root/.ssh/authorized_keys
chmod 0600 /root/.ssh/authorized_keys
"""


def configure(root: Path, arch: Arch, log) -> None:
    (root / "etc/hostname").write_text(f"hako-{arch.name.replace('_', '-')}\n")
    (root / "etc/hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 hako-{arch.name.replace('_', '-')}\n")
    (root / "etc/fstab").write_text("/dev/vda / ext4 rw,errors=remount-ro 0 0\n")
    network = root / "etc/systemd/network/10-hako-vm.network"
    network.write_text("[Match]\nName=en*\n\n[Network]\nDHCP=ipv4\n")
    script = root / "usr/local/sbin/hako-vm-key"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(KEY_SCRIPT)
    script.chmod(0o755)
    (root / "etc/systemd/system/hako-vm-key.service").write_text(KEY_UNIT)
    sshd = root / "etc/ssh/sshd_config.d/hako-vm.conf"
    sshd.write_text("PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n")
    run(["chroot", str(root), "systemctl", "enable", "systemd-networkd", "ssh", "hako-vm-key"], log)
    # Nothing that waits for a network the guest does not have, or wakes up to
    # fetch package lists it cannot reach.
    masked = [
        "systemd-networkd-wait-online.service",
        "apt-daily.timer",
        "apt-daily-upgrade.timer",
        "e2scrub_all.timer",
        "e2scrub_reap.service",
    ]
    run(["chroot", str(root), "systemctl", "mask", *masked], log)
    (root / "etc/machine-id").write_text("")


@contextlib.contextmanager
def foreign_binaries(arch: Arch):
    """binfmt_misc with qemu-aarch64 enabled for a foreign build; left afterwards as found."""
    if arch.debian == "amd64" and os.uname().machine == "x86_64":
        yield
        return
    mounted = enabled = False
    try:
        if not (BINFMT / "status").exists():
            subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], check=True)
            mounted = True
        entry = BINFMT / "qemu-aarch64"
        if not entry.exists() or not entry.read_text().startswith("enabled"):
            if not shutil.which("update-binfmts", path="/usr/sbin:/usr/bin"):
                raise BuildError("update-binfmts is missing: run scripts/setup (binfmt-support)")
            subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], check=True, capture_output=True)
            enabled = True
        if not entry.read_text().startswith("enabled"):
            raise BuildError("qemu-aarch64 is not enabled in binfmt_misc: install qemu-user-static")
        yield
    finally:
        if enabled:
            subprocess.run(["update-binfmts", "--disable", "qemu-aarch64"], capture_output=True)
        if mounted:
            subprocess.run(["umount", str(BINFMT)], capture_output=True)


def release(root: Path) -> None:
    """End processes running in ``root`` and unmount whatever is mounted below it."""
    real = os.path.realpath(root)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.path.realpath(f"/proc/{entry}/root").startswith(real + os.sep) or (
                    os.readlink(f"/proc/{entry}/root") == real
                ):
                    os.kill(int(entry), signal.SIGKILL)
            except OSError:
                pass
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in sorted((p for p in points if p == real or p.startswith(real + os.sep)), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def main(argv: list[str]) -> int:
    if len(argv) < 1 or argv[0] != "build":
        print("usage: python3 -m tests.vm.guest build [x86_64] [arm64]", file=sys.stderr)
        return 2
    try:
        for name in argv[1:] or list(ARCHES):
            found = image(name)
            print(f"{name}: {found.directory} ({found.record['seconds']['total']} s to build)")
    except BuildError as err:
        print(f"guest: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
