"""The modules' option engine (hako.ansible_options): normalizing, comparing, deciding."""

from __future__ import annotations

import pytest
from hako import ansible_options as ao
from hako.options import ContainerOptions, validate

MIB = 1 << 20
IMAGES = {"busybox": "sha256:" + "a" * 64, "debian": "sha256:" + "b" * 64}


def existing(**values) -> dict:
    """The record of a container made with ``values`` (ContainerOptions keywords) from busybox."""
    record = validate(ContainerOptions("busybox", name="c1", **values))
    record["image_id"] = IMAGES["busybox"]
    return record


def plan(params: dict, record: dict, recreate: bool = False) -> tuple[str, list[str]]:
    """The decision and the differing options for ``params`` against ``record``."""
    wanted = ao.normalize(params)
    if "image" in wanted:
        wanted["image"] = IMAGES[wanted["image"]]
    differences = ao.compare(wanted, record, ao.comparison_modes(params.get("comparisons")))
    return ao.decide(differences, recreate), [d.option for d in differences]


# --------------------------------------------------------------------------
# Normalizing what the user typed


@pytest.mark.parametrize(
    ("option", "typed", "normalized"),
    [
        ("memory", "64m", 64 * MIB),
        ("memory", "64M", 64 * MIB),
        ("memory", 64 * MIB, 64 * MIB),
        ("memory", "1g", 1024 * MIB),
        ("memory_swap", "-1", -1),
        ("memory_swap", -1, -1),
        ("memory_swap", "128m", 128 * MIB),
        ("cpus", 0.5, 0.5),
        ("cpus", "0.5", 0.5),
        ("cpus", 2, 2.0),
        ("cpu_shares", "512", 512),
        ("cpuset_cpus", "0-1", "0-1"),
        ("pids_limit", 50, 50),
        ("pids_limit", -1, -1),
        ("command", "sleep 3600", ["sleep", "3600"]),
        ("command", ["sh", "-c", "echo a b"], ["sh", "-c", "echo a b"]),
        ("command", "sh -c 'echo a b'", ["sh", "-c", "echo a b"]),
        ("command", [], None),
        ("command", ["sleep", 5], ["sleep", "5"]),
        ("entrypoint", "", []),
        ("entrypoint", "/bin/sh -c", ["/bin/sh", "-c"]),
        ("env", ["A=1", "B=x=y"], {"A": "1", "B": "x=y"}),
        ("env", {"A": 1, "B": "x=y"}, {"A": "1", "B": "x=y"}),
        ("env", ["A=1", "A=2"], {"A": "2"}),
        ("labels", {"lab": "linuc", "seat": 3}, {"lab": "linuc", "seat": "3"}),
        ("user", "1000", "1000"),
        ("user", "1000:100", "1000:100"),
        ("namespaces", {"pid": "host", "uts": None}, {"pid": "host", "uts": "private"}),
        ("namespaces", {"network": "container:web"}, {"network": "container:web"}),
        ("userns", "host", "host"),
        ("userns", "auto", "auto:65536"),
        ("userns", "200000:1000", "200000:1000"),
        ("volumes", ["/tmp:/data"], ["/tmp:/data:rw"]),
        ("volumes", ["/tmp:/data:ro"], ["/tmp:/data:ro"]),
        ("tmpfs", ["/run:size=16m,mode=755"], ["/run:size=16m,mode=755"]),
        ("tmpfs", ["/scratch"], ["/scratch"]),
        ("restart_policy", "on-failure:3", "on-failure:3"),
        ("stop_signal", "TERM", 15),
        ("stop_signal", "SIGKILL", 9),
        ("stop_signal", "2", 2),
        ("stop_timeout", 3, 3),
        ("read_only", True, True),
        ("storage_opts", {"size": "64m"}, {"size": 64 * MIB}),
        ("storage_opts", {"size": "65536k"}, {"size": 64 * MIB}),
        ("storage_opts", {"size": 64 * MIB}, {"size": 64 * MIB}),
        ("storage_opts", {}, {}),
        ("networks", [], {}),
        (
            "networks",
            ["a", {"name": "b", "ip": "10.213.200.9", "aliases": ["y", "x"]}, {"name": "c", "aliases": []}],
            {
                "a": {"ip": None, "aliases": None},
                "b": {"ip": "10.213.200.9", "aliases": ["x", "y"]},
                "c": {"ip": None, "aliases": []},
            },
        ),
    ],
)
def test_normalize_brings_typed_values_to_the_records_form(option: str, typed, normalized) -> None:
    assert ao.normalize({option: typed}) == {option: normalized}


def test_normalize_leaves_out_options_not_set() -> None:
    assert ao.normalize({"name": "c1", "memory": None, "env": None, "state": "started"}) == {}


def test_normalize_folds_mounts_into_volumes() -> None:
    params = {
        "volumes": ["/tmp:/a"],
        "mounts": [{"type": "bind", "source": "/etc", "target": "/b", "read_only": True}],
    }
    assert ao.normalize(params) == {"volumes": ["/tmp:/a:rw", "/etc:/b:ro"]}


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"memory": "lots"}, "memory"),
        ({"memory": "1k"}, "memory"),
        ({"memory": True}, "memory"),
        ({"memory_swap": "x"}, "memory_swap"),
        ({"cpus": 0}, "cpus"),
        ({"cpu_shares": 1}, "cpu_shares"),
        ({"cpuset_cpus": "a-b"}, "cpuset_cpus"),
        ({"pids_limit": 0}, "pids_limit"),
        ({"restart_policy": "sometimes"}, "restart_policy"),
        ({"restart_policy": "always:3"}, "restart_policy"),
        ({"namespaces": {"time": "host"}}, "namespaces"),
        ({"namespaces": {"mount": "host"}}, "namespaces"),
        ({"namespaces": {"pid": "elsewhere"}}, "namespaces"),
        ({"namespaces": ["pid"]}, "namespaces"),
        ({"volumes": ["relative:/x"]}, "volumes"),
        ({"volumes": ["/no/such/dir/here:/x"]}, "volumes"),
        ({"volumes": ["/tmp:/x:rx"]}, "volumes"),
        ({"mounts": [{"source": "/tmp"}]}, "mounts"),
        ({"tmpfs": ["run"]}, "tmpfs"),
        ({"tmpfs": ["/run:bogus"]}, "tmpfs"),
        ({"hostname": "-bad-"}, "hostname"),
        ({"workdir": "relative"}, "workdir"),
        ({"user": "a b"}, "user"),
        ({"userns": "0:10"}, "userns"),
        ({"stop_signal": "NOPE"}, "stop_signal"),
        ({"stop_timeout": -1}, "stop_timeout"),
        ({"env": {"A": True}}, "env"),
        ({"env": ["NOEQUALS"]}, "env"),
        ({"env": ["1A=x"]}, "env"),
        ({"env": "A=1"}, "env"),
        ({"labels": {"lab": False}}, "labels"),
        ({"command": "sh -c 'unclosed"}, "command"),
        ({"tty": "yes"}, "tty"),
        ({"storage_opts": {"size": "1m"}}, "storage_opts"),
        ({"storage_opts": {"size": "lots"}}, "storage_opts"),
        ({"storage_opts": {"size": True}}, "storage_opts"),
        ({"storage_opts": {"inodes": "100"}}, "storage_opts"),
        ({"storage_opts": "size=64m"}, "storage_opts"),
        ({"networks": "lab"}, "networks"),
        ({"networks": [5]}, "networks"),
        ({"networks": ["lab", "lab"]}, "networks"),
        ({"networks": ["none"]}, "networks"),
        ({"networks": ["no spaces"]}, "networks"),
        ({"networks": [{"network": "lab"}]}, "networks"),
        ({"networks": [{"name": "lab", "ip": "nope"}]}, "networks"),
        ({"networks": [{"name": "lab", "aliases": "web"}]}, "networks"),
        ({"networks": [{"name": "lab", "aliases": ["not a host"]}]}, "networks"),
    ],
)
def test_bad_values_fail_with_one_message_naming_the_option(params: dict, named: str) -> None:
    with pytest.raises(ao.OptionError) as caught:
        ao.normalize(params)
    assert caught.value.option == named
    assert str(caught.value).startswith(f"invalid value for {named}")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"memory": "64m", "memory_swap": "32m"}, "at least the memory limit"),
        ({"memory_swap": "128m"}, "needs --memory"),
    ],
)
def test_a_new_container_is_checked_as_a_whole(params: dict, words: str) -> None:
    ao.normalize(params)  # each value is fine on its own
    with pytest.raises(ao.OptionError) as caught:
        ao.check_create({"name": "c1", "image": "busybox", **params})
    assert caught.value.option == "memory_swap"
    assert words in str(caught.value)


def test_check_name_refuses_paths() -> None:
    for bad in ("../etc", "a/b", "", "-x"):
        with pytest.raises(ao.OptionError, match="invalid value for name"):
            ao.check_name(bad)
    assert ao.check_name("learner_1.lab-a") == "learner_1.lab-a"


# --------------------------------------------------------------------------
# Comparing with an existing container and deciding


BASE = {"command": ["sleep", "3600"], "memory": "64m", "pids_limit": 50, "labels": {"lab": "x", "seat": "1"}}


@pytest.mark.parametrize(
    ("params", "record_values", "decision", "differing"),
    [
        # Nothing set: nothing compared.
        ({}, BASE, ao.NOTHING, []),
        # The same value typed another way.
        ({"memory": 64 * MIB, "command": "sleep 3600", "image": "busybox"}, BASE, ao.NOTHING, []),
        ({"memory": "65536k"}, BASE, ao.NOTHING, []),
        ({"cpus": "0.50"}, {"cpus": 0.5}, ao.NOTHING, []),
        # Limits and the restart policy change in place.
        ({"memory": "128m"}, BASE, ao.UPDATE, ["memory"]),
        ({"memory": "128m", "pids_limit": 100}, BASE, ao.UPDATE, ["memory", "pids_limit"]),
        ({"cpus": 1, "cpu_shares": 512}, {}, ao.UPDATE, ["cpus", "cpu_shares"]),
        ({"cpuset_cpus": "0", "cpuset_mems": "0"}, {}, ao.UPDATE, ["cpuset_cpus", "cpuset_mems"]),
        ({"memory_swap": -1}, BASE, ao.UPDATE, ["memory_swap"]),
        ({"restart_policy": "always"}, BASE, ao.UPDATE, ["restart_policy"]),
        ({"restart_policy": "no"}, BASE, ao.NOTHING, []),
        # Anything else recreates, also together with an in-place change.
        ({"image": "debian"}, BASE, ao.RECREATE, ["image"]),
        ({"command": "sleep 10"}, BASE, ao.RECREATE, ["command"]),
        ({"command": "sleep 10", "memory": "128m"}, BASE, ao.RECREATE, ["command", "memory"]),
        ({"entrypoint": []}, BASE, ao.RECREATE, ["entrypoint"]),
        ({"hostname": "web"}, BASE, ao.RECREATE, ["hostname"]),
        ({"user": "1000"}, BASE, ao.RECREATE, ["user"]),
        ({"workdir": "/tmp"}, BASE, ao.RECREATE, ["workdir"]),
        ({"read_only": True}, BASE, ao.RECREATE, ["read_only"]),
        ({"read_only": False}, BASE, ao.NOTHING, []),
        ({"tty": True}, BASE, ao.RECREATE, ["tty"]),
        ({"stop_signal": "SIGINT"}, BASE, ao.RECREATE, ["stop_signal"]),
        ({"stop_signal": "SIGTERM"}, BASE, ao.NOTHING, []),
        # env and labels: allow_more_present by default.
        ({"labels": {"lab": "x"}}, BASE, ao.NOTHING, []),
        ({"labels": {"lab": "y"}}, BASE, ao.RECREATE, ["labels"]),
        ({"labels": {"lab": "x", "new": "1"}}, BASE, ao.RECREATE, ["labels"]),
        ({"labels": {"lab": "x"}, "comparisons": {"labels": "strict"}}, BASE, ao.RECREATE, ["labels"]),
        ({"env": {"A": "1"}}, {"env": ["A=1", "B=2"]}, ao.NOTHING, []),
        ({"env": ["A=1"]}, {"env": ["A=1", "B=2"]}, ao.NOTHING, []),
        ({"env": {"A": 2}}, {"env": ["A=1", "B=2"]}, ao.RECREATE, ["env"]),
        (
            {"env": {"A": "1"}, "comparisons": {"env": "strict"}},
            {"env": ["A=1", "B=2"]},
            ao.RECREATE,
            ["env"],
        ),
        (
            {"env": {"B": "2", "A": "1"}, "comparisons": {"env": "strict"}},
            {"env": ["A=1", "B=2"]},
            ao.NOTHING,
            [],
        ),
        # Namespaces: the kinds given, or all of them under strict (left out = private).
        ({"namespaces": {"pid": "private"}}, {"namespaces": {"uts": "host"}}, ao.NOTHING, []),
        ({"namespaces": {"pid": "host"}}, BASE, ao.RECREATE, ["namespaces"]),
        (
            {"namespaces": {"pid": "private"}, "comparisons": {"namespaces": "strict"}},
            {"namespaces": {"uts": "host"}},
            ao.RECREATE,
            ["namespaces"],
        ),
        (
            {"namespaces": {"uts": "host"}, "comparisons": {"namespaces": "strict"}},
            {"namespaces": {"uts": "host"}},
            ao.NOTHING,
            [],
        ),
        # A user namespace range picked by "auto" matches "auto" of the same size.
        ({"userns": "auto"}, {"userns": "100000:65536"}, ao.NOTHING, []),
        ({"userns": "auto"}, BASE, ao.RECREATE, ["userns"]),
        ({"userns": "100000:1000"}, {"userns": "100000:65536"}, ao.RECREATE, ["userns"]),
        # Bind mounts and tmpfs: strict, in any order; mounts count as volumes.
        ({"volumes": ["/etc:/b:ro", "/tmp:/a"]}, {"volumes": ["/tmp:/a", "/etc:/b:ro"]}, ao.NOTHING, []),
        ({"volumes": ["/tmp:/a"]}, {"volumes": ["/tmp:/a", "/etc:/b:ro"]}, ao.RECREATE, ["volumes"]),
        (
            {"volumes": ["/tmp:/a"], "comparisons": {"volumes": "allow_more_present"}},
            {"volumes": ["/tmp:/a", "/etc:/b:ro"]},
            ao.NOTHING,
            [],
        ),
        (
            {"mounts": [{"source": "/tmp", "target": "/a"}]},
            {"volumes": ["/tmp:/a:rw"]},
            ao.NOTHING,
            [],
        ),
        ({"tmpfs": ["/run:size=1m"]}, {"tmpfs": ["/run:size=2m"]}, ao.RECREATE, ["tmpfs"]),
        # A layer's size: compared as a size; another size (or none) is a new filesystem.
        ({"storage_opts": {"size": "64m"}}, {"storage_opts": {"size": "65536k"}}, ao.NOTHING, []),
        (
            {"storage_opts": {"size": "128m"}},
            {"storage_opts": {"size": "64m"}},
            ao.RECREATE,
            ["storage_opts"],
        ),
        ({"storage_opts": {"size": "64m"}}, BASE, ao.RECREATE, ["storage_opts"]),
        ({"storage_opts": {}}, {"storage_opts": {"size": "64m"}}, ao.RECREATE, ["storage_opts"]),
        ({}, {"storage_opts": {"size": "64m"}}, ao.NOTHING, []),
        # Overrides: ignore one, ignore all but one.
        ({"memory": "128m", "comparisons": {"memory": "ignore"}}, BASE, ao.NOTHING, []),
        ({"image": "debian", "memory": "1g", "comparisons": {"*": "ignore"}}, BASE, ao.NOTHING, []),
        (
            {"image": "debian", "memory": "1g", "comparisons": {"*": "ignore", "memory": "strict"}},
            BASE,
            ao.UPDATE,
            ["memory"],
        ),
        # stop_timeout is not compared unless asked.
        ({"stop_timeout": 1}, BASE, ao.NOTHING, []),
        ({"stop_timeout": 1, "comparisons": {"stop_timeout": "strict"}}, BASE, ao.RECREATE, ["stop_timeout"]),
    ],
)
def test_compare_and_decide(params: dict, record_values: dict, decision: str, differing: list[str]) -> None:
    assert plan(params, existing(**record_values)) == (decision, differing)


def test_recreate_true_recreates_even_without_differences() -> None:
    assert plan({"memory": "64m"}, existing(**BASE), recreate=True) == (ao.RECREATE, [])


def on_networks(*endpoints: tuple[str, str, list[str]], **values) -> dict:
    """A container's record on networks, as the engine holds them: (network, address, aliases) each."""
    record = existing(**values)
    record["networks"] = [
        {"network": network, "interface": f"eth{index}", "ip": ip, "aliases": aliases}
        for index, (network, ip, aliases) in enumerate(endpoints)
    ]
    return record


A = ("a", "10.213.200.2", [])
B = ("b", "10.213.201.2", ["db"])


@pytest.mark.parametrize(
    ("params", "endpoints", "decision", "actions"),
    [
        # The set of networks; an address or aliases only where given.
        ({"networks": ["a"]}, [A], ao.NOTHING, []),
        ({"networks": ["b", "a"]}, [A, B], ao.NOTHING, []),
        ({"networks": [{"name": "a", "ip": "10.213.200.2"}]}, [A], ao.NOTHING, []),
        ({"networks": [{"name": "b", "aliases": ["db"]}]}, [B], ao.NOTHING, []),
        ({"networks": []}, [], ao.NOTHING, []),
        # Joined and left in place: strict by default.
        ({"networks": ["a", "b"]}, [A], ao.UPDATE, ["connect b"]),
        ({"networks": ["b"]}, [A, B], ao.UPDATE, ["disconnect a"]),
        ({"networks": []}, [A, B], ao.UPDATE, ["disconnect a", "disconnect b"]),
        ({"networks": ["b"]}, [A], ao.UPDATE, ["disconnect a", "connect b"]),
        ({"networks": ["b"], "comparisons": {"networks": "allow_more_present"}}, [A, B], ao.NOTHING, []),
        (
            {"networks": ["b"], "comparisons": {"networks": "allow_more_present"}},
            [A],
            ao.UPDATE,
            ["connect b"],
        ),
        ({"networks": ["b"], "comparisons": {"networks": "ignore"}}, [A], ao.NOTHING, []),
        # Another address or other aliases: left and joined again.
        (
            {"networks": [{"name": "a", "ip": "10.213.200.9"}]},
            [A],
            ao.UPDATE,
            ["disconnect a", "connect a"],
        ),
        ({"networks": [{"name": "b", "aliases": []}]}, [B], ao.UPDATE, ["disconnect b", "connect b"]),
        # With other in-place changes; recreated with anything else.
        ({"networks": ["a", "b"], "memory": "128m"}, [A], ao.UPDATE, ["update memory", "connect b"]),
        ({"networks": ["a", "b"], "command": "sleep 1"}, [A], ao.RECREATE, None),
    ],
)
def test_networks_compare_and_change_in_place(params: dict, endpoints: list, decision: str, actions) -> None:
    record = on_networks(*endpoints, **BASE)
    modes = ao.comparison_modes(params.get("comparisons"))
    differences = ao.compare(ao.normalize(params), record, modes)
    assert ao.decide(differences) == decision
    if actions is not None:
        assert ao.in_place_actions(differences, modes) == actions
    # Only the limits go to Engine.update; networks are connected and disconnected.
    assert "networks" not in ao.update_arguments(differences, params)


def test_diff_of_networks_changed_in_place_keeps_the_networks_not_left() -> None:
    record = on_networks(A, B)
    params = {"networks": [{"name": "a", "ip": "10.213.200.9"}, "c"]}
    wanted = ao.normalize(params)
    modes = ao.comparison_modes({"networks": "allow_more_present"})
    before, after = ao.diff_values(wanted, record, modes, ao.UPDATE)
    assert before == {
        "networks": {
            "a": {"ip": "10.213.200.2", "aliases": []},
            "b": {"ip": "10.213.201.2", "aliases": ["db"]},
        }
    }
    assert after == {
        "networks": {
            "b": {"ip": "10.213.201.2", "aliases": ["db"]},
            "a": {"ip": "10.213.200.9", "aliases": None},
            "c": {"ip": None, "aliases": None},
        }
    }


def test_create_options_put_a_new_container_on_its_networks_in_order() -> None:
    params = {
        "name": "c1",
        "image": "busybox",
        "networks": ["b", {"name": "a", "ip": "10.213.200.9", "aliases": ["w"]}],
    }
    assert ao.create_options(params)["networks"] == [
        {"name": "b", "ip": None, "aliases": []},
        {"name": "a", "ip": "10.213.200.9", "aliases": ["w"]},
    ]
    assert [n["name"] for n in ao.check_create(params)["networks"]] == ["b", "a"]
    with pytest.raises(ao.OptionError, match="invalid value for networks: .*network namespace of its own"):
        ao.check_create({**params, "namespaces": {"network": "host"}})


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"bogus": "strict"}, "unknown option 'bogus'"),
        ({"memory": "loose"}, "not one of"),
        ({"memory": "allow_more_present"}, "fits only lists and mappings"),
        ({"*": "allow_more_present"}, "'*' may be strict or ignore"),
    ],
)
def test_bad_comparisons_name_the_option(overrides: dict, complaint: str) -> None:
    with pytest.raises(ao.OptionError) as caught:
        ao.comparison_modes(overrides)
    assert caught.value.option == "comparisons"
    assert complaint in str(caught.value)


def test_comparison_defaults_follow_the_kind_of_option() -> None:
    modes = ao.comparison_modes(None)
    assert modes["env"] == modes["labels"] == modes["namespaces"] == ao.ALLOW_MORE_PRESENT
    assert modes["image"] == modes["memory"] == modes["volumes"] == modes["networks"] == ao.STRICT
    assert modes["stop_timeout"] == ao.IGNORE
    assert ao.comparison_modes({"mounts": "allow_more_present"})["volumes"] == ao.ALLOW_MORE_PRESENT


# --------------------------------------------------------------------------
# Diff, in-place arguments, new containers


def test_diff_values_show_only_compared_options_before_and_after() -> None:
    record = existing(**BASE)
    params = {"memory": "128m", "labels": {"lab": "x"}, "stop_timeout": 1}
    wanted = ao.normalize(params)
    modes = ao.comparison_modes(None)
    before, after = ao.diff_values(wanted, record, modes, ao.UPDATE)
    assert before == {"memory": 64 * MIB, "labels": {"lab": "x", "seat": "1"}}
    # The labels matched (more present): they stay as they are after an update.
    assert after == {"memory": 128 * MIB, "labels": {"lab": "x", "seat": "1"}}
    _, after = ao.diff_values(wanted, record, modes, ao.RECREATE)
    assert after == {"memory": 128 * MIB, "labels": {"lab": "x"}}
    before, after = ao.diff_values(wanted, None, modes, "create")
    assert before == {} and after["memory"] == 128 * MIB


def test_update_arguments_carry_the_typed_values_of_in_place_differences() -> None:
    differences = ao.compare(
        ao.normalize({"memory": "128m", "restart_policy": "always"}), existing(**BASE), {}
    )
    params = {"memory": "128m", "restart_policy": "always"}
    assert ao.update_arguments(differences, params) == {"memory": "128m", "restart_policy": "always"}


def test_create_options_make_a_container_that_then_compares_equal() -> None:
    params = {
        "name": "c1",
        "image": "busybox",
        "command": "sleep 3600",
        "entrypoint": [],
        "env": {"A": 1},
        "hostname": "web",
        "user": "1000:100",
        "workdir": "/tmp",
        "tty": True,
        "namespaces": {"pid": "host"},
        "userns": "auto",
        "memory": "64m",
        "memory_swap": "128m",
        "cpus": 0.5,
        "cpu_shares": 512,
        "cpuset_cpus": "0",
        "pids_limit": 50,
        "volumes": ["/tmp:/a"],
        "mounts": [{"type": "bind", "source": "/etc", "target": "/b", "read_only": True}],
        "tmpfs": ["/run:size=1m"],
        "read_only": True,
        "storage_opts": {"size": "64m"},
        "restart_policy": "on-failure:2",
        "labels": {"lab": "x"},
        "stop_signal": "INT",
        "stop_timeout": 2,
        "comparisons": {"*": "strict"},
    }
    record = ao.check_create(params)
    record["image_id"] = IMAGES["busybox"]
    record["userns"] = {"host_id": 100000, "size": 65536}  # as the engine picks it
    assert plan(params, record) == (ao.NOTHING, [])


def test_argument_spec_has_no_defaults_so_that_unset_means_not_compared() -> None:
    spec = ao.argument_spec()
    assert set(spec) == {option.name for option in ao.OPTIONS}
    assert all("default" not in entry for entry in spec.values())
    assert spec["mounts"]["options"]["source"]["required"] is True
