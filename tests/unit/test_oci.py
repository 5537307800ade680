"""From a container record and an image config to an OCI config.json (engine/oci.py)."""

from __future__ import annotations

import pytest
from hako.devices import default_rules
from hako.engine.oci import MASKED_PATHS, READONLY_PATHS, build_config, default_mounts, process_command
from hako.options import ContainerOptions, validate
from hako.runtime.spec import OCI_VERSION, OVERLAY_ANNOTATION

MIB = 1 << 20
CID = "0123456789abcdef" * 4
IMAGE_ID = "sha256:" + "fe" * 32
USER = {"uid": 0, "gid": 0, "additionalGids": []}
LOWER = ["/images/layers/2/fs", "/images/layers/1/fs"]
UPPER = "/containers/x/upper"
WORK = "/containers/x/work"
CGROUPS_PATH = "hako-test/" + CID


def make_record(name: str = "web", **values) -> dict:
    """A record as the engine stores it: the validated options plus what create adds."""
    record = validate(ContainerOptions("busybox", name=name, **values))
    record.update(id=CID, image_id=IMAGE_ID, created=1700000000.0, state={})
    return record


def image_config(**config) -> dict:
    return {"architecture": "amd64", "os": "linux", "config": config, "rootfs": {"diff_ids": []}}


BUSYBOX = image_config(Env=["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], Cmd=["sh"])


def build(
    record: dict,
    image: dict = BUSYBOX,
    namespace_paths: dict | None = None,
    id_map: dict | None = None,
    cgroup_mode: str = "unified",
) -> dict:
    return build_config(
        record, image, LOWER, UPPER, WORK, namespace_paths or {}, id_map, USER, cgroup_mode, CGROUPS_PATH
    )


def mount_at(config: dict, destination: str) -> dict:
    found = [m for m in config["mounts"] if m["destination"] == destination]
    assert len(found) == 1, f"{len(found)} mounts at {destination}"
    return found[0]


# --------------------------------------------------------------------------
# The command


@pytest.mark.parametrize(
    ("entrypoint", "command", "image", "args"),
    [
        (None, None, {"Cmd": ["sh"]}, ["sh"]),
        (None, None, {"Entrypoint": ["/init"], "Cmd": ["--serve"]}, ["/init", "--serve"]),
        (None, None, {"Entrypoint": ["/init"]}, ["/init"]),
        (None, None, {"Entrypoint": None, "Cmd": None}, []),
        (None, None, {}, []),
        # the user's command replaces the image's Cmd, after the image's Entrypoint
        (None, ["ls", "-l"], {"Cmd": ["sh"]}, ["ls", "-l"]),
        (None, ["--debug"], {"Entrypoint": ["/init"], "Cmd": ["--serve"]}, ["/init", "--debug"]),
        (None, [], {"Cmd": ["sh"]}, ["sh"]),
        # the user's entrypoint drops the image's Entrypoint and Cmd
        (["/bin/echo"], None, {"Entrypoint": ["/init"], "Cmd": ["--serve"]}, ["/bin/echo"]),
        (["/bin/echo"], ["hi"], {"Entrypoint": ["/init"], "Cmd": ["--serve"]}, ["/bin/echo", "hi"]),
        (["/bin/echo"], None, {"Cmd": ["sh"]}, ["/bin/echo"]),
        # an empty entrypoint (--entrypoint "") clears both
        ([], None, {"Entrypoint": ["/init"], "Cmd": ["--serve"]}, []),
        ([], ["ls"], {"Entrypoint": ["/init"], "Cmd": ["--serve"]}, ["ls"]),
    ],
)
def test_process_command_follows_dockers_entrypoint_and_cmd_rule(entrypoint, command, image, args) -> None:
    assert process_command({"entrypoint": entrypoint, "command": command}, image) == args


def test_process_command_does_not_share_lists_with_its_inputs() -> None:
    image = {"Entrypoint": ["/init"], "Cmd": ["x"]}
    args = process_command({"entrypoint": None, "command": None}, image)
    args.append("changed")
    assert image == {"Entrypoint": ["/init"], "Cmd": ["x"]}


def test_build_config_process_args_come_from_process_command() -> None:
    image = image_config(Entrypoint=["/init"], Cmd=["--serve"])
    config = build(make_record(command=["--debug"]), image)
    assert config["process"]["args"] == ["/init", "--debug"]


# --------------------------------------------------------------------------
# The process


def test_build_config_process_fields() -> None:
    config = build(make_record(command=["ls"]))
    assert config["ociVersion"] == OCI_VERSION
    process = config["process"]
    assert process["terminal"] is False
    assert process["user"] == USER
    assert process["cwd"] == "/"
    assert process["rlimits"] == []


@pytest.mark.parametrize(
    ("workdir", "image_workdir", "cwd"),
    [
        (None, None, "/"),
        (None, "/app", "/app"),
        ("/srv", "/app", "/srv"),
        ("/srv", None, "/srv"),
        (None, "", "/"),
    ],
)
def test_build_config_cwd_is_the_users_then_the_images_then_root(workdir, image_workdir, cwd) -> None:
    image = image_config(Cmd=["sh"], WorkingDir=image_workdir)
    assert build(make_record(workdir=workdir), image)["process"]["cwd"] == cwd


@pytest.mark.parametrize(
    ("image_env", "user_env", "expected"),
    [
        ([], [], []),
        (["PATH=/bin"], [], ["PATH=/bin"]),
        (["PATH=/bin"], ["A=1"], ["PATH=/bin", "A=1"]),
        (["PATH=/bin", "A=image"], ["A=user"], ["PATH=/bin", "A=user"]),
        (["A=1"], ["A=2", "A=3"], ["A=3"]),
        (["A=x=y"], [], ["A=x=y"]),
        (["A=1"], ["A="], ["A="]),
    ],
)
def test_build_config_env_lets_the_user_override_the_image(image_env, user_env, expected) -> None:
    image = image_config(Env=image_env, Cmd=["sh"])
    env = build(make_record(env=user_env), image)["process"]["env"]
    assert [e for e in env if not e.startswith("HOSTNAME=")] == expected


@pytest.mark.parametrize(
    ("tty", "user_env", "term"),
    [
        (False, [], []),
        (True, [], ["TERM=xterm"]),
        (True, ["TERM=vt100"], ["TERM=vt100"]),
        (False, ["TERM=vt100"], ["TERM=vt100"]),
    ],
)
def test_build_config_sets_term_only_with_a_tty(tty: bool, user_env: list, term: list) -> None:
    config = build(make_record(tty=tty, env=user_env))
    assert config["process"]["terminal"] is tty
    assert [e for e in config["process"]["env"] if e.startswith("TERM=")] == term


@pytest.mark.parametrize(
    ("values", "hostname", "env"),
    [
        ({}, CID[:12], [f"HOSTNAME={CID[:12]}"]),
        ({"hostname": "box"}, "box", ["HOSTNAME=box"]),
        ({"env": ["HOSTNAME=mine"]}, CID[:12], ["HOSTNAME=mine"]),
        ({"namespaces": {"uts": "host"}}, CID[:12], []),
    ],
)
def test_build_config_hostname_and_its_env(values: dict, hostname: str, env: list) -> None:
    config = build(make_record(**values))
    assert config["hostname"] == hostname
    assert [e for e in config["process"]["env"] if e.startswith("HOSTNAME=")] == env


# --------------------------------------------------------------------------
# Namespaces


def test_build_config_gives_a_private_namespace_of_every_kind_by_default() -> None:
    namespaces = build(make_record())["linux"]["namespaces"]
    assert sorted(ns["type"] for ns in namespaces) == ["cgroup", "ipc", "mount", "network", "pid", "uts"]
    assert all("path" not in ns for ns in namespaces)


@pytest.mark.parametrize(
    ("modes", "paths", "expected"),
    [
        ({"network": "host"}, {}, {"network": None}),
        ({"pid": "host", "ipc": "host"}, {}, {"pid": None, "ipc": None}),
        ({"network": "container:db"}, {"network": "/proc/42/ns/net"}, {"network": "/proc/42/ns/net"}),
        (
            {"ipc": "container:db", "pid": "container:db"},
            {"ipc": "/proc/42/ns/ipc", "pid": "/proc/42/ns/pid"},
            {"ipc": "/proc/42/ns/ipc", "pid": "/proc/42/ns/pid"},
        ),
        (
            {"network": "host", "uts": "container:db"},
            {"uts": "/proc/7/ns/uts"},
            {"network": None, "uts": "/proc/7/ns/uts"},
        ),
    ],
)
def test_build_config_namespaces_private_host_and_joined(modes: dict, paths: dict, expected: dict) -> None:
    """private: an entry without path; host: no entry; container:x: an entry with the path to join."""
    namespaces = build(make_record(namespaces=modes), namespace_paths=paths)["linux"]["namespaces"]
    by_type = {ns["type"]: ns for ns in namespaces}
    assert len(by_type) == len(namespaces)
    for kind in ("ipc", "mount", "network", "pid", "uts", "cgroup"):
        if kind not in expected:
            assert by_type[kind] == {"type": kind}
        elif expected[kind] is None:
            assert kind not in by_type
        else:
            assert by_type[kind] == {"type": kind, "path": expected[kind]}


def test_build_config_without_userns_has_no_user_namespace_or_mappings() -> None:
    config = build(make_record())
    assert "user" not in [ns["type"] for ns in config["linux"]["namespaces"]]
    assert "uidMappings" not in config["linux"] and "gidMappings" not in config["linux"]


def test_build_config_with_userns_adds_a_user_namespace_first_and_id_mappings() -> None:
    record = make_record(userns="100000:65536")
    config = build(record, id_map=record["userns"])
    linux = config["linux"]
    assert linux["namespaces"][0] == {"type": "user"}
    assert [ns["type"] for ns in linux["namespaces"]].count("user") == 1
    mapping = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    assert linux["uidMappings"] == mapping
    assert linux["gidMappings"] == mapping


# --------------------------------------------------------------------------
# Mounts


def test_build_config_has_the_default_mounts() -> None:
    config = build(make_record())
    destinations = [m["destination"] for m in config["mounts"]]
    for destination in ("/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"):
        assert destination in destinations
    assert mount_at(config, "/proc")["type"] == "proc"
    assert mount_at(config, "/sys") == {
        "destination": "/sys",
        "type": "sysfs",
        "source": "sysfs",
        "options": ["nosuid", "noexec", "nodev", "ro"],
    }
    assert "ro" in mount_at(config, "/sys/fs/cgroup")["options"]
    assert destinations.index("/dev") < destinations.index("/dev/pts")


@pytest.mark.parametrize(
    ("cgroup_mode", "cgroupns", "cgroup_mounts"),
    [
        ("unified", "private", [("/sys/fs/cgroup", "cgroup2")]),
        (
            "legacy",
            "private",
            [("/sys/fs/cgroup", "tmpfs")]
            + [
                (f"/sys/fs/cgroup/{c}", "cgroup")
                for c in ("cpu", "cpuacct", "cpuset", "memory", "pids", "freezer")
            ],
        ),
        ("unified", "host", []),
        ("legacy", "host", []),
    ],
)
def test_build_config_mounts_cgroups_only_in_a_private_cgroup_namespace(
    cgroup_mode, cgroupns, cgroup_mounts
) -> None:
    config = build(make_record(namespaces={"cgroup": cgroupns}), cgroup_mode=cgroup_mode)
    found = [
        (m["destination"], m["type"])
        for m in config["mounts"]
        if m["destination"].startswith("/sys/fs/cgroup")
    ]
    assert found == cgroup_mounts


def test_default_mounts_name_each_v1_controller_in_its_options() -> None:
    for mount in default_mounts("legacy", True)[7:]:
        assert mount["options"][-1] == mount["destination"].rsplit("/", 1)[1]


def test_build_config_with_host_network_still_mounts_a_read_only_sysfs() -> None:
    # Root may mount sysfs in the host's network namespace; in a user
    # namespace the runtime falls back to a non-recursive read-only bind.
    config = build(make_record(namespaces={"network": "host"}))
    assert mount_at(config, "/sys") == {
        "destination": "/sys",
        "type": "sysfs",
        "source": "sysfs",
        "options": ["nosuid", "noexec", "nodev", "ro"],
    }
    assert [m["destination"] for m in config["mounts"]].count("/sys") == 1


@pytest.mark.parametrize("cgroup_mode", ["unified", "legacy"])
def test_build_config_with_host_network_mounts_sys_before_what_goes_below_it(cgroup_mode: str) -> None:
    config = build(make_record(namespaces={"network": "host"}), cgroup_mode=cgroup_mode)
    destinations = [m["destination"] for m in config["mounts"]]
    below = [i for i, d in enumerate(destinations) if d.startswith("/sys/")]
    assert below
    assert all(destinations.index("/sys") < i for i in below)


@pytest.mark.parametrize("cgroup_mode", ["unified", "legacy"])
def test_build_config_mounts_sys_before_what_goes_below_it(cgroup_mode: str) -> None:
    destinations = [m["destination"] for m in build(make_record(), cgroup_mode=cgroup_mode)["mounts"]]
    assert all(destinations.index("/sys") < i for i, d in enumerate(destinations) if d.startswith("/sys/"))


def test_build_config_appends_volumes_after_the_default_mounts() -> None:
    config = build(make_record(volumes=["/tmp:/data", "/etc:/conf:ro"]))
    assert config["mounts"][-2:] == [
        {"destination": "/data", "type": "bind", "source": "/tmp", "options": ["rbind", "rw"]},
        {"destination": "/conf", "type": "bind", "source": "/etc", "options": ["rbind", "ro"]},
    ]
    assert len(config["mounts"]) == len(default_mounts("unified", True)) + 2


@pytest.mark.parametrize(
    ("tmpfs", "options"),
    [
        ("/run", ["noexec", "nosuid", "nodev", "size=65536k"]),
        ("/tmp:size=1g", ["noexec", "nosuid", "nodev", "size=1g"]),
        ("/tmp:noexec,mode=1777", ["noexec", "nosuid", "nodev", "noexec", "mode=1777", "size=65536k"]),
        ("/tmp:exec,size=10m,uid=1000", ["noexec", "nosuid", "nodev", "exec", "size=10m", "uid=1000"]),
    ],
)
def test_build_config_appends_tmpfs_mounts_with_their_options(tmpfs: str, options: list) -> None:
    config = build(make_record(tmpfs=[tmpfs]))
    assert config["mounts"][-1] == {
        "destination": tmpfs.split(":")[0],
        "type": "tmpfs",
        "source": "tmpfs",
        "options": options,
    }


def test_build_config_puts_volumes_before_tmpfs() -> None:
    config = build(make_record(volumes=["/tmp:/a"], tmpfs=["/t"]))
    assert [m["destination"] for m in config["mounts"][-2:]] == ["/a", "/t"]


# --------------------------------------------------------------------------
# linux: resources, cgroup, masked paths; root; annotations


@pytest.mark.parametrize(
    ("values", "resources"),
    [
        ({}, {}),
        ({"memory": "64m"}, {"memory": {"limit": 64 * MIB, "swap": 128 * MIB}}),
        ({"memory": "64m", "memory_swap": "-1"}, {"memory": {"limit": 64 * MIB, "swap": -1}}),
        ({"cpus": "1.5"}, {"cpu": {"quota": 150000, "period": 100000}}),
        ({"cpu_shares": "512", "cpuset_cpus": "0"}, {"cpu": {"shares": 512, "cpus": "0"}}),
        ({"pids_limit": "20"}, {"pids": {"limit": 20}}),
    ],
)
def test_build_config_resources_come_from_the_limits(values: dict, resources: dict) -> None:
    got = build(make_record(**values))["linux"]["resources"]
    assert got.pop("devices") == default_rules()
    assert got == resources


def test_build_config_passes_devices_as_nodes_and_rules() -> None:
    config = build(make_record(devices=["/dev/zero:/dev/z0:r"]))
    (node,) = config["linux"]["devices"]
    assert {k: node[k] for k in ("path", "type", "major", "minor")} == {
        "path": "/dev/z0",
        "type": "c",
        "major": 1,
        "minor": 5,
    }
    assert config["linux"]["resources"]["devices"][-1] == {
        "allow": True,
        "type": "c",
        "major": 1,
        "minor": 5,
        "access": "r",
    }
    assert not any(m["destination"] == "/dev/z0" for m in config["mounts"])


def test_build_config_binds_devices_into_a_user_namespace() -> None:
    config = build(make_record(devices=["/dev/zero:/dev/z0:r"]), id_map={"host_id": 100000, "size": 65536})
    assert "devices" not in config["linux"]  # no mknod there
    assert mount_at(config, "/dev/z0") == {
        "destination": "/dev/z0",
        "type": "bind",
        "source": "/dev/zero",
        "options": ["bind"],
    }
    assert config["linux"]["resources"]["devices"][-1]["access"] == "r"


def test_build_config_of_a_privileged_container_allows_every_device() -> None:
    config = build(dict(make_record(), privileged=True))
    assert config["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    paths = [n["path"] for n in config["linux"].get("devices", [])]
    assert "/dev/null" not in paths and not any(p.startswith("/dev/pts/") for p in paths)


def test_build_config_linux_section() -> None:
    linux = build(make_record())["linux"]
    assert linux["cgroupsPath"] == CGROUPS_PATH
    assert linux["maskedPaths"] == MASKED_PATHS
    assert linux["readonlyPaths"] == READONLY_PATHS
    assert "/proc/kcore" in linux["maskedPaths"] and "/proc/sys" in linux["readonlyPaths"]


def test_build_config_gives_each_config_its_own_path_lists() -> None:
    build(make_record())["linux"]["maskedPaths"].append("/changed")
    assert "/changed" not in MASKED_PATHS
    assert "/changed" not in build(make_record())["linux"]["maskedPaths"]


@pytest.mark.parametrize("read_only", [False, True])
def test_build_config_root_is_rootfs_read_only_as_asked(read_only: bool) -> None:
    assert build(make_record(read_only=read_only))["root"] == {"path": "rootfs", "readonly": read_only}


def test_build_config_overlay_annotation_holds_the_layers_upper_and_work() -> None:
    annotations = build(make_record(name="web"))["annotations"]
    assert annotations[OVERLAY_ANNOTATION] == (
        "lowerdir=/images/layers/2/fs:/images/layers/1/fs,upperdir=/containers/x/upper,workdir=/containers/x/work"
    )
    assert OVERLAY_ANNOTATION == "io.hako.rootfs.overlay"
    assert annotations["io.hako.name"] == "web"


def test_build_config_does_not_change_the_record_or_the_image() -> None:
    record = make_record(env=["A=1"], tty=True)
    image = image_config(Env=["PATH=/bin"], Cmd=["sh"])
    before_record, before_image = repr(record), repr(image)
    build(record, image)
    assert repr(record) == before_record
    assert repr(image) == before_image


def test_co_mounted_v1_controllers_are_mounted_together() -> None:
    # Most hosts mount cpu and cpuacct as one hierarchy; the kernel refuses them apart.
    groups = [("cpu,cpuacct", ["cpu", "cpuacct"]), ("memory", ["memory"])]
    mounts = [m for m in default_mounts("hybrid", True, groups) if m["type"] == "cgroup"]
    assert [(m["destination"], m["options"][-2:]) for m in mounts] == [
        ("/sys/fs/cgroup/cpu,cpuacct", ["cpu", "cpuacct"]),
        ("/sys/fs/cgroup/memory", ["ro", "memory"]),
    ]
