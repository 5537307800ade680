"""Checking and normalizing what a user asks of a container (hako.options)."""

from __future__ import annotations

import pytest
from hako import units
from hako.errors import InvalidValue
from hako.options import (
    NAMESPACE_KINDS,
    USERNS_DEFAULT_SIZE,
    ContainerOptions,
    layer_size,
    merge_limits,
    oci_resources,
    parse_signal,
    unlimited_resources,
    validate,
)

MIB = 1 << 20
GIB = 1 << 30


def record_of(**values) -> dict:
    return validate(ContainerOptions("busybox", **values))


# --------------------------------------------------------------------------
# ContainerOptions


def test_container_options_fill_in_defaults() -> None:
    options = ContainerOptions("busybox")
    assert options.image == "busybox"
    assert options.env == [] and options.volumes == [] and options.namespaces == {}
    assert options.restart_policy == "no"
    assert options.stop_signal == "SIGTERM"
    assert options.stop_timeout == 10


def test_container_options_do_not_share_mutable_defaults() -> None:
    first, second = ContainerOptions("busybox"), ContainerOptions("busybox")
    first.env.append("A=1")
    first.labels["x"] = "y"
    assert second.env == [] and second.labels == {}


def test_container_options_refuse_unknown_keywords() -> None:
    with pytest.raises(TypeError, match="memroy"):
        ContainerOptions("busybox", memroy="64m")


# --------------------------------------------------------------------------
# validate: the normalized record


def test_validate_of_defaults_has_every_namespace_private_and_no_limits() -> None:
    record = record_of()
    assert record["image"] == "busybox"
    assert record["namespaces"] == {kind: "private" for kind in NAMESPACE_KINDS}
    assert record["limits"] == {}
    assert record["userns"] is None
    assert record["user"] is None
    assert record["env"] == [] and record["volumes"] == [] and record["tmpfs"] == []
    assert record["stop_signal"] == 15
    assert record["stop_timeout"] == 10


def test_validate_moves_limits_into_their_own_dict() -> None:
    record = record_of(memory="64m", cpus="0.5")
    for key in ("memory", "memory_swap", "cpus", "cpu_shares", "cpuset_cpus", "cpuset_mems", "pids_limit"):
        assert key not in record
    assert record["limits"] == {"memory": 64 * MIB, "cpus": 0.5}


@pytest.mark.parametrize(
    ("values", "limits"),
    [
        ({"memory": "64m"}, {"memory": 64 * MIB}),
        ({"memory": "1g"}, {"memory": GIB}),
        ({"memory": 6 * MIB}, {"memory": 6 * MIB}),
        ({"memory": ""}, {}),
        ({"memory": "64m", "memory_swap": "128m"}, {"memory": 64 * MIB, "memory_swap": 128 * MIB}),
        ({"memory": "64m", "memory_swap": "64m"}, {"memory": 64 * MIB, "memory_swap": 64 * MIB}),
        ({"memory": "64m", "memory_swap": "-1"}, {"memory": 64 * MIB, "memory_swap": -1}),
        ({"memory_swap": "-1"}, {"memory_swap": -1}),
        ({"cpus": "0.5"}, {"cpus": 0.5}),
        ({"cpus": 2}, {"cpus": 2.0}),
        ({"cpu_shares": "512"}, {"cpu_shares": 512}),
        ({"cpu_shares": 2}, {"cpu_shares": 2}),
        ({"cpuset_cpus": "0-1,3"}, {"cpuset_cpus": "0-1,3"}),
        ({"cpuset_cpus": 0}, {"cpuset_cpus": "0"}),
        ({"cpuset_mems": "0"}, {"cpuset_mems": "0"}),
        ({"pids_limit": "100"}, {"pids_limit": 100}),
        ({"pids_limit": -1}, {"pids_limit": -1}),
    ],
)
def test_validate_turns_limits_into_numbers(values: dict, limits: dict) -> None:
    assert record_of(**values)["limits"] == limits


@pytest.mark.parametrize(
    ("namespaces", "expected"),
    [
        ({}, {}),
        ({"network": "host"}, {"network": "host"}),
        ({"pid": "host", "ipc": "host", "uts": "host"}, {"pid": "host", "ipc": "host", "uts": "host"}),
        ({"network": "container:web"}, {"network": "container:web"}),
        ({"ipc": ""}, {"ipc": "private"}),
        ({"ipc": None}, {"ipc": "private"}),
        ({"cgroup": "private"}, {"cgroup": "private"}),
        ({"mount": "container:other"}, {"mount": "container:other"}),
    ],
)
def test_validate_gives_every_namespace_kind_a_mode(namespaces: dict, expected: dict) -> None:
    record = record_of(namespaces=namespaces)
    assert record["namespaces"] == {kind: expected.get(kind, "private") for kind in NAMESPACE_KINDS}


@pytest.mark.parametrize(
    ("userns", "expected"),
    [
        (None, None),
        ("", None),
        ("host", None),
        ("auto", {"auto": True, "size": USERNS_DEFAULT_SIZE}),
        ("100000", {"host_id": 100000, "size": USERNS_DEFAULT_SIZE}),
        ("100000:65536", {"host_id": 100000, "size": 65536}),
        ("200000:1000", {"host_id": 200000, "size": 1000}),
        ("1:1", {"host_id": 1, "size": 1}),
        (f"{2**32 - 2}:1", {"host_id": 2**32 - 2, "size": 1}),
    ],
)
def test_validate_parses_userns(userns, expected) -> None:
    assert record_of(userns=userns)["userns"] == expected


@pytest.mark.parametrize(
    ("volumes", "expected"),
    [
        (["/tmp:/data"], [{"source": "/tmp", "destination": "/data", "readonly": False}]),
        (["/etc:/a:ro"], [{"source": "/etc", "destination": "/a", "readonly": True}]),
        (["/etc:/a:rw"], [{"source": "/etc", "destination": "/a", "readonly": False}]),
        (
            ["/usr:/y", "/var:/q:ro"],
            [
                {"source": "/usr", "destination": "/y", "readonly": False},
                {"source": "/var", "destination": "/q", "readonly": True},
            ],
        ),
    ],
)
def test_validate_parses_volumes(volumes: list, expected: list) -> None:
    assert record_of(volumes=volumes)["volumes"] == expected


@pytest.mark.parametrize(
    ("tmpfs", "expected"),
    [
        ("/run", {"destination": "/run", "options": []}),
        ("/run:", {"destination": "/run", "options": []}),
        ("/tmp:size=64m", {"destination": "/tmp", "options": ["size=64m"]}),
        ("/tmp:size=50%", {"destination": "/tmp", "options": ["size=50%"]}),
        ("/tmp:size=1024", {"destination": "/tmp", "options": ["size=1024"]}),
        (
            "/tmp:rw,noexec,nosuid,size=64M,mode=1777",
            {"destination": "/tmp", "options": ["rw", "noexec", "nosuid", "size=64M", "mode=1777"]},
        ),
        (
            "/t:uid=1000,gid=1000,mode=755",
            {"destination": "/t", "options": ["uid=1000", "gid=1000", "mode=755"]},
        ),
        ("/t:ro,,exec", {"destination": "/t", "options": ["ro", "exec"]}),
    ],
)
def test_validate_parses_tmpfs(tmpfs: str, expected: dict) -> None:
    assert record_of(tmpfs=[tmpfs])["tmpfs"] == [expected]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (["A=1"], ["A=1"]),
        (["A=1", "B="], ["A=1", "B="]),
        (["PATH=/bin:/usr/bin"], ["PATH=/bin:/usr/bin"]),
        (["_X=a=b"], ["_X=a=b"]),
        (["lower_1=x"], ["lower_1=x"]),
    ],
)
def test_validate_keeps_env_entries(env: list, expected: list) -> None:
    assert record_of(env=env)["env"] == expected


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        (None, None),
        ("", None),
        ("1000", {"user": "1000", "group": None}),
        ("1000:1000", {"user": "1000", "group": "1000"}),
        ("0:0", {"user": "0", "group": "0"}),
        ("nobody", {"user": "nobody", "group": None}),
        ("www-data:www-data", {"user": "www-data", "group": "www-data"}),
    ],
)
def test_validate_parses_user(user, expected) -> None:
    assert record_of(user=user)["user"] == expected


@pytest.mark.parametrize(
    ("values", "key", "expected"),
    [
        ({"name": "web"}, "name", "web"),
        ({"name": "a" * 128}, "name", "a" * 128),
        ({"name": "Web_1.x-y"}, "name", "Web_1.x-y"),
        ({"hostname": "db.example.com"}, "hostname", "db.example.com"),
        ({"workdir": "/srv"}, "workdir", "/srv"),
        ({"restart_policy": "always"}, "restart_policy", "always"),
        ({"restart_policy": "unless-stopped"}, "restart_policy", "unless-stopped"),
        ({"restart_policy": "on-failure"}, "restart_policy", "on-failure"),
        ({"restart_policy": "on-failure:3"}, "restart_policy", "on-failure:3"),
        ({"stop_signal": "SIGKILL"}, "stop_signal", 9),
        ({"stop_signal": "int"}, "stop_signal", 2),
        ({"stop_signal": "9"}, "stop_signal", 9),
        ({"stop_timeout": "0"}, "stop_timeout", 0),
        ({"stop_timeout": 30}, "stop_timeout", 30),
        ({"labels": {"tier": "web"}}, "labels", {"tier": "web"}),
        ({"read_only": True}, "read_only", True),
        ({"command": ["ls", "-l"]}, "command", ["ls", "-l"]),
    ],
)
def test_validate_keeps_or_normalizes_good_values(values: dict, key: str, expected) -> None:
    assert record_of(**values)[key] == expected


# --------------------------------------------------------------------------
# validate: refusals name the field and the value


@pytest.mark.parametrize(
    ("values", "field", "value"),
    [
        ({"memory": "12XB"}, "memory", "12XB"),
        ({"memory": "1k"}, "memory", "1k"),
        ({"memory": "5m"}, "memory", "5m"),
        ({"memory": "lots"}, "memory", "lots"),
        ({"cpus": "-1"}, "cpus", "-1"),
        ({"cpus": "0"}, "cpus", "0"),
        ({"cpus": "x"}, "cpus", "x"),
        ({"cpu_shares": "1"}, "cpu-shares", "1"),
        ({"cpu_shares": "many"}, "cpu-shares", "many"),
        ({"cpuset_cpus": "0-"}, "cpuset-cpus", "0-"),
        ({"cpuset_mems": "a"}, "cpuset-mems", "a"),
        ({"pids_limit": "0"}, "pids-limit", "0"),
        ({"pids_limit": "-2"}, "pids-limit", "-2"),
        ({"pids_limit": "ten"}, "pids-limit", "ten"),
        ({"memory": "64m", "memory_swap": "32m"}, "memory-swap", "32m"),
        ({"memory_swap": "128m"}, "memory-swap", "128m"),
        ({"memory": "64m", "memory_swap": "1k"}, "memory-swap", "1k"),
        ({"name": "a/b"}, "name", "a/b"),
        ({"name": "-x"}, "name", "-x"),
        ({"name": ".x"}, "name", ".x"),
        ({"name": ""}, "name", ""),
        ({"name": "a" * 129}, "name", "a" * 129),
        ({"name": "sp ace"}, "name", "sp ace"),
        ({"hostname": "bad_host!"}, "hostname", "bad_host!"),
        ({"hostname": "-lead"}, "hostname", "-lead"),
        ({"hostname": ""}, "hostname", ""),
        ({"namespaces": {"network": "bridge"}}, "network namespace", "bridge"),
        ({"namespaces": {"pid": "container:"}}, "pid namespace", "container:"),
        ({"namespaces": {"mount": "host"}}, "mount namespace", "host"),
        ({"namespaces": {"user": "private"}}, "namespace", "user"),
        ({"namespaces": {"net": "host"}}, "namespace", "net"),
        ({"userns": "0:10"}, "userns", "0:10"),
        ({"userns": "0"}, "userns", "0"),
        ({"userns": "abc"}, "userns", "abc"),
        ({"userns": "100000:abc"}, "userns", "100000:abc"),
        ({"userns": "100000:0"}, "userns", "100000:0"),
        ({"userns": "-5:10"}, "userns", "-5:10"),
        ({"userns": f"{2**32 - 1}:1"}, "userns", f"{2**32 - 1}:1"),
        ({"userns": "auto", "namespaces": {"mount": "container:web"}}, "userns", "auto"),
        ({"volumes": ["rel:/x"]}, "volume", "rel:/x"),
        ({"volumes": ["/a:rel"]}, "volume", "/a:rel"),
        ({"volumes": ["/a"]}, "volume", "/a"),
        ({"volumes": ["/a:/b:zz"]}, "volume", "/a:/b:zz"),
        ({"volumes": ["/a:/b:ro:extra"]}, "volume", "/a:/b:ro:extra"),
        ({"tmpfs": ["tmp"]}, "tmpfs", "tmp"),
        ({"tmpfs": ["/t:bogus"]}, "tmpfs", "/t:bogus"),
        ({"tmpfs": ["/t:size="]}, "tmpfs", "/t:size="),
        ({"tmpfs": ["/t:size=10x"]}, "tmpfs", "/t:size=10x"),
        ({"tmpfs": ["/t:size=%"]}, "tmpfs", "/t:size=%"),
        ({"tmpfs": ["/t:mode=99"]}, "tmpfs", "/t:mode=99"),
        ({"tmpfs": ["/t:mode=0999"]}, "tmpfs", "/t:mode=0999"),
        ({"tmpfs": ["/t:uid=root"]}, "tmpfs", "/t:uid=root"),
        ({"tmpfs": ["/t:nr_inodes=5"]}, "tmpfs", "/t:nr_inodes=5"),
        ({"restart_policy": "sometimes"}, "restart", "sometimes"),
        ({"restart_policy": ""}, "restart", ""),
        ({"stop_signal": "SIGNOPE"}, "stop-signal", "SIGNOPE"),
        ({"stop_signal": "0"}, "stop-signal", "0"),
        ({"stop_timeout": "-1"}, "stop-timeout", "-1"),
        ({"workdir": "relative"}, "workdir", "relative"),
        ({"workdir": ""}, "workdir", ""),
        ({"env": ["=x"]}, "env", "=x"),
        ({"env": ["1A=x"]}, "env", "1A=x"),
        ({"env": ["A B=x"]}, "env", "A B=x"),
        ({"user": "a:"}, "user", "a:"),
        ({"user": ":0"}, "user", ":0"),
        ({"user": "a b"}, "user", "a b"),
        ({"labels": {"": "x"}}, "label", ""),
    ],
)
def test_validate_refuses_bad_values_naming_field_and_value(values: dict, field: str, value) -> None:
    with pytest.raises(InvalidValue) as caught:
        record_of(**values)
    assert caught.value.field == field
    assert caught.value.value == value
    message = str(caught.value)
    assert field in message
    assert repr(value) in message


def test_validate_refuses_minus_one_as_a_memory_limit() -> None:
    with pytest.raises(InvalidValue) as caught:
        record_of(memory="-1")
    assert caught.value.field == "memory"


@pytest.mark.parametrize("policy", ["on-failure:abc", "on-failure:", "always:3", "no:1"])
def test_validate_refuses_a_bad_restart_retry_count(policy: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        record_of(restart_policy=policy)
    assert caught.value.field == "restart"


@pytest.mark.parametrize("cpus", ["0.001", "0.000001"])
def test_validate_refuses_cpus_the_kernel_cannot_enforce(cpus: str) -> None:
    with pytest.raises(InvalidValue):
        record_of(cpus=cpus)


# --------------------------------------------------------------------------
# parse_signal


@pytest.mark.parametrize(
    ("value", "number"),
    [
        ("SIGTERM", 15),
        ("TERM", 15),
        ("term", 15),
        ("sigkill", 9),
        ("KILL", 9),
        ("SIGHUP", 1),
        ("SIGUSR1", 10),
        ("SIGRTMIN", 34),
        ("9", 9),
        ("15", 15),
        ("1", 1),
        ("64", 64),
        (9, 9),
    ],
)
def test_parse_signal_reads_names_with_or_without_sig_and_numbers(value, number: int) -> None:
    assert parse_signal("stop-signal", value) == number


@pytest.mark.parametrize("value", ["SIGNOPE", "NOPE", "0", "65", "-9", "", "SIG", "9x", 0])
def test_parse_signal_refuses_unknown_names_and_numbers_out_of_range(value) -> None:
    with pytest.raises(InvalidValue) as caught:
        parse_signal("signal", value)
    assert caught.value.field == "signal"
    assert caught.value.value == value


@pytest.mark.parametrize("value", ["SIG_DFL", "SIG_IGN", "sig_block", "SIG_SETMASK"])
def test_parse_signal_refuses_constants_that_are_not_signals(value: str) -> None:
    with pytest.raises(InvalidValue):
        parse_signal("stop-signal", value)


# --------------------------------------------------------------------------
# oci_resources


@pytest.mark.parametrize(
    ("limits", "resources"),
    [
        ({}, {}),
        ({"memory": 64 * MIB}, {"memory": {"limit": 64 * MIB, "swap": 128 * MIB}}),
        (
            {"memory": 64 * MIB, "memory_swap": 100 * MIB},
            {"memory": {"limit": 64 * MIB, "swap": 100 * MIB}},
        ),
        ({"memory": 64 * MIB, "memory_swap": -1}, {"memory": {"limit": 64 * MIB, "swap": -1}}),
        ({"memory_swap": -1}, {"memory": {"swap": -1}}),
        ({"cpus": 0.5}, {"cpu": {"quota": 50000, "period": 100000}}),
        ({"cpus": 2.0}, {"cpu": {"quota": 200000, "period": 100000}}),
        ({"cpu_shares": 512}, {"cpu": {"shares": 512}}),
        ({"cpuset_cpus": "0-1"}, {"cpu": {"cpus": "0-1"}}),
        ({"cpuset_mems": "0"}, {"cpu": {"mems": "0"}}),
        (
            {"cpus": 1.5, "cpu_shares": 2048, "cpuset_cpus": "0,2", "cpuset_mems": "0"},
            {"cpu": {"quota": 150000, "period": 100000, "shares": 2048, "cpus": "0,2", "mems": "0"}},
        ),
        ({"pids_limit": 100}, {"pids": {"limit": 100}}),
        ({"pids_limit": -1}, {"pids": {"limit": -1}}),
    ],
)
def test_oci_resources_maps_limits_to_the_runtime_spec(limits: dict, resources: dict) -> None:
    assert oci_resources(limits) == resources


def test_oci_resources_of_a_validated_record() -> None:
    record = record_of(memory="256m", memory_swap="512m", cpus="0.25", pids_limit="64")
    assert oci_resources(record["limits"]) == {
        "memory": {"limit": 256 * MIB, "swap": 512 * MIB},
        "cpu": {"quota": 25000, "period": 100000},
        "pids": {"limit": 64},
    }


# --------------------------------------------------------------------------
# merge_limits


@pytest.mark.parametrize(
    ("current", "update", "merged"),
    [
        ({}, {}, {}),
        ({}, {"memory": "64m"}, {"memory": 64 * MIB}),
        ({"memory": 64 * MIB}, {"memory": "128m"}, {"memory": 128 * MIB}),
        ({"memory": 64 * MIB}, {"cpus": "1"}, {"memory": 64 * MIB, "cpus": 1.0}),
        (
            {"memory": 64 * MIB, "memory_swap": 128 * MIB},
            {"memory": "100m"},
            {"memory": 100 * MIB, "memory_swap": 128 * MIB},
        ),
        ({"pids_limit": 10}, {"pids_limit": "-1"}, {"pids_limit": -1}),
        ({"cpuset_cpus": "0"}, {"cpuset_cpus": "0-3"}, {"cpuset_cpus": "0-3"}),
        ({"cpu_shares": 1024}, {"cpu_shares": "512"}, {"cpu_shares": 512}),
        ({"memory": 64 * MIB, "cpus": 2.0}, {"memory": None}, {"cpus": 2.0}),
    ],
)
def test_merge_limits_puts_the_update_over_the_current_limits(current, update, merged) -> None:
    assert merge_limits(current, update) == merged


def test_merge_limits_does_not_change_the_current_limits() -> None:
    current = {"memory": 64 * MIB}
    merge_limits(current, {"memory": "128m"})
    assert current == {"memory": 64 * MIB}


@pytest.mark.parametrize(
    ("current", "update", "field"),
    [
        # memory raised above an existing memory+swap limit
        ({"memory": 64 * MIB, "memory_swap": 128 * MIB}, {"memory": "256m"}, "memory-swap"),
        ({"memory": 64 * MIB}, {"memory_swap": "32m"}, "memory-swap"),
        ({}, {"memory_swap": "128m"}, "memory-swap"),
        ({"cpus": 1.0}, {"cpus": "0"}, "cpus"),
        ({}, {"pids_limit": "0"}, "pids-limit"),
        ({}, {"memory": "1k"}, "memory"),
    ],
)
def test_merge_limits_checks_the_result_as_a_whole(current, update, field: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        merge_limits(current, update)
    assert caught.value.field == field


# --------------------------------------------------------------------------
# unlimited_resources


@pytest.mark.parametrize(
    ("old", "new", "lifted"),
    [
        ({}, {}, {}),
        ({"memory": 64 * MIB}, {}, {"memory": {"limit": -1, "swap": -1}}),
        ({"memory": 64 * MIB}, {"memory": 128 * MIB}, {}),
        ({"cpus": 1.0}, {}, {"cpu": {"quota": -1}}),
        ({"cpus": 1.0}, {"cpus": 2.0}, {}),
        ({"pids_limit": 10}, {}, {"pids": {"limit": -1}}),
        (
            {"memory": 64 * MIB, "cpus": 1.0, "pids_limit": 10},
            {},
            {"memory": {"limit": -1, "swap": -1}, "cpu": {"quota": -1}, "pids": {"limit": -1}},
        ),
        ({}, {"memory": 64 * MIB}, {}),
    ],
)
def test_unlimited_resources_lifts_limits_that_are_gone(old: dict, new: dict, lifted: dict) -> None:
    assert unlimited_resources(old, new) == lifted


@pytest.mark.parametrize("value", ["1-0", "0,,x", "a", "-1", ""])
def test_validate_refuses_a_cpuset_the_kernel_would_refuse(value: str) -> None:
    if value == "":
        assert "cpuset_cpus" not in validate(ContainerOptions("busybox", cpuset_cpus=value))["limits"]
        return
    with pytest.raises(InvalidValue) as caught:
        validate(ContainerOptions("busybox", cpuset_cpus=value))
    assert caught.value.field == "cpuset-cpus"


def test_validate_refuses_a_volume_whose_host_path_is_missing(tmp_path) -> None:
    with pytest.raises(InvalidValue, match="does not exist"):
        validate(ContainerOptions("busybox", volumes=[f"{tmp_path}/missing:/data"]))
    assert validate(ContainerOptions("busybox", volumes=[f"{tmp_path}:/data"]))["volumes"]


# --------------------------------------------------------------------------
# Published ports (-p)

NET = [{"name": "lab", "ip": None, "aliases": []}]


def port(host_port: int, container_port: int, protocol: str = "tcp", host_ip: str = "0.0.0.0") -> dict:
    return {
        "host_ip": host_ip,
        "host_port": host_port,
        "container_port": container_port,
        "protocol": protocol,
    }


@pytest.mark.parametrize(
    "specs, expected",
    [
        (["8080:80"], [port(8080, 80)]),
        (["8080:80/udp"], [port(8080, 80, "udp")]),
        (["127.0.0.1:18080:80/tcp"], [port(18080, 80, host_ip="127.0.0.1")]),
        (["8080-8082:80-82"], [port(8080, 80), port(8081, 81), port(8082, 82)]),
        # One host port for tcp and udp, or on two different addresses.
        (["53:53/udp", "53:53"], [port(53, 53, "udp"), port(53, 53)]),
        (
            ["127.0.0.1:80:80", "10.213.1.1:80:80"],
            [port(80, 80, host_ip="127.0.0.1"), port(80, 80, host_ip="10.213.1.1")],
        ),
        (["1:65535"], [port(1, 65535)]),
    ],
)
def test_published_ports_are_normalized(specs, expected) -> None:
    assert record_of(networks=NET, ports=specs)["ports"] == expected


@pytest.mark.parametrize(
    "spec, message",
    [
        ("80", "give the host port too"),
        ("x:80", "expected [ip:]hostport:containerport"),
        ("0:80", "1 to 65535"),
        ("8080:65536", "1 to 65535"),
        ("9-8:9-8", "1 to 65535"),
        ("8080:80/sctp", "tcp or udp"),
        ("[::1]:80:80", "only IPv4"),
        ("localhost:80:80", "must be IPv4"),
        (":80:80", "expected [ip:]hostport"),
        ("1:2:3:4", "expected [ip:]hostport"),
        ("8080-8081:80", "same length"),
        ("1-2000:1-2000", "at most 1024"),
        (" 80:80", "expected [ip:]hostport"),
    ],
)
def test_bad_published_ports_name_the_field_and_value(spec, message) -> None:
    with pytest.raises(InvalidValue) as e:
        record_of(networks=NET, ports=[spec])
    assert e.value.field == "publish" and e.value.value == spec and message in str(e.value)


@pytest.mark.parametrize(
    "specs",
    [
        ["8080:80", "8080:81"],
        ["127.0.0.1:8080:80", "8080:81"],
        ["8080:81", "127.0.0.1:8080:80"],
        ["80-81:80-81", "81:90"],
    ],
)
def test_a_host_port_published_twice_is_refused(specs) -> None:
    with pytest.raises(InvalidValue, match="published twice"):
        record_of(networks=NET, ports=specs)


@pytest.mark.parametrize(
    "values, message",
    [
        ({}, "needs --network NAME"),
        ({"namespaces": {"network": "host"}}, "--network host has no address"),
        ({"namespaces": {"network": "container:web"}}, "--network container:web has no address"),
    ],
)
def test_published_ports_need_a_network(values, message) -> None:
    with pytest.raises(InvalidValue, match=message):
        record_of(ports=["8080:80"], **values)


# --------------------------------------------------------------------------
# --storage-opt


@pytest.mark.parametrize(
    "given, stored",
    [
        ([], {}),
        (["size=64m"], {"size": "64m"}),
        (["size=1g", "size=64M"], {"size": "64M"}),  # the last of a key wins, as with Docker
        (["Size=4m"], {"size": "4m"}),
        ({"size": "64m"}, {"size": "64m"}),
        ({"size": 64 * MIB}, {"size": str(64 * MIB)}),
    ],
)
def test_storage_opts_are_kept_as_given(given, stored) -> None:
    record = record_of(storage_opts=given)
    assert record["storage_opts"] == stored
    assert layer_size(record) == (units.parse_size("size", stored["size"]) if stored else None)


@pytest.mark.parametrize(
    "given, field, value, words",
    [
        (["inodes=100"], "storage-opt", "inodes", "hako knows size"),
        (["size"], "storage-opt", "size", "KEY=VALUE"),
        (["size=lots"], "storage-opt size", "lots", "expected a size"),
        (["size=1m"], "storage-opt size", "1m", "the minimum is 4m"),
        (["size=0"], "storage-opt size", "0", "the minimum is 4m"),
        ({"size": True}, "storage-opt size", True, "expected a size"),
        ("size=64m", "storage-opt", "size=64m", "KEY=VALUE"),
    ],
)
def test_bad_storage_opts_name_the_key_or_value(given, field, value, words) -> None:
    with pytest.raises(InvalidValue) as caught:
        record_of(storage_opts=given)
    assert (caught.value.field, caught.value.value) == (field, value)
    assert words in str(caught.value) and "\n" not in str(caught.value)
