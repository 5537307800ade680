"""The modules' privilege options (capabilities, cap_drop, privileged, security_opts, groups, devices).

Each is normalized the way the engine's record holds it, so that a value
spelt another way compares equal and only a real difference recreates.
"""

from __future__ import annotations

import json

import pytest
from hako import ansible_options as ao
from hako.options import ContainerOptions, validate

IMAGE_ID = "sha256:" + "a" * 64
PROFILE = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}],
}


def existing(**values) -> dict:
    """The record of a busybox container made with ``values`` (ContainerOptions keywords)."""
    record = validate(ContainerOptions("busybox", name="c1", **values))
    record["image_id"] = IMAGE_ID
    return record


def plan(params: dict, record: dict) -> tuple[str, list[str]]:
    wanted = ao.normalize(params)
    if "image" in wanted:
        wanted["image"] = IMAGE_ID  # busybox, as the engine resolves it
    differences = ao.compare(wanted, record, ao.comparison_modes(params.get("comparisons")))
    return ao.decide(differences), [d.option for d in differences]


@pytest.fixture
def profile(tmp_path):
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(PROFILE))
    return path


# --------------------------------------------------------------------------
# Normalizing


@pytest.mark.parametrize(
    ("option", "typed", "normalized"),
    [
        ("capabilities", ["net_admin"], ["CAP_NET_ADMIN"]),
        ("capabilities", ["SYS_TIME", "CAP_NET_ADMIN", "net_admin"], ["CAP_NET_ADMIN", "CAP_SYS_TIME"]),
        ("capabilities", ["all"], ["ALL"]),
        ("capabilities", [], []),
        ("cap_drop", ["ALL"], ["ALL"]),
        ("cap_drop", ["mknod", "Chown"], ["CAP_CHOWN", "CAP_MKNOD"]),
        ("privileged", True, True),
        ("privileged", False, False),
        ("security_opts", ["no-new-privileges"], ["no-new-privileges=true"]),
        ("security_opts", ["no-new-privileges=false"], ["no-new-privileges=false"]),
        (
            "security_opts",
            ["seccomp=unconfined", "no-new-privileges:true", "systempaths=unconfined"],
            ["no-new-privileges=true", "seccomp=unconfined", "systempaths=unconfined"],
        ),
        ("security_opts", [], []),
        ("groups", ["tty", 27, "tty"], ["tty", "27"]),
        ("devices", ["/dev/zero"], ["/dev/zero:/dev/zero:rwm"]),
        ("devices", ["/dev/zero:r"], ["/dev/zero:/dev/zero:r"]),
        ("devices", ["/dev/null:/dev/n0:wr"], ["/dev/null:/dev/n0:rw"]),
        ("devices", ["/dev/./zero:/dev/z//0:mr"], ["/dev/zero:/dev/z/0:rm"]),
    ],
)
def test_normalize_brings_privileges_to_the_records_form(option: str, typed, normalized) -> None:
    assert ao.normalize({option: typed}) == {option: normalized}


def test_a_seccomp_profile_is_normalized_to_its_absolute_path_and_the_digest_of_its_content(
    profile, monkeypatch
) -> None:
    monkeypatch.chdir(profile.parent)
    digest = ao.profile_digest(PROFILE)
    assert digest.startswith("sha256:") and len(digest) == len("sha256:") + 16
    for spelling in (
        "seccomp=profile.json",
        f"seccomp:{profile}",
        f"seccomp={profile.parent}/../{profile.parent.name}/profile.json",
    ):
        assert ao.normalize({"security_opts": [spelling]}) == {
            "security_opts": [f"seccomp={profile} ({digest})"]
        }
    # The same content written another way (spacing, key order) has the same digest.
    profile.write_text(json.dumps(dict(reversed(list(PROFILE.items()))), indent=4))
    assert ao.normalize({"security_opts": ["seccomp=profile.json"]})["security_opts"][0].endswith(
        f"({digest})"
    )


@pytest.mark.parametrize(
    ("params", "named", "words"),
    [
        ({"capabilities": ["FLY"]}, "capabilities", "'FLY' (not a capability"),
        ({"capabilities": "NET_ADMIN"}, "capabilities", "expected a list"),
        ({"capabilities": [True]}, "capabilities", "quote it"),
        ({"cap_drop": ["nothing"]}, "cap_drop", "not a capability"),
        ({"privileged": "yes"}, "privileged", "expected true or false"),
        ({"security_opts": ["apparmor=unconfined"]}, "security_opts", "known options"),
        ({"security_opts": ["no-new-privileges=maybe"]}, "security_opts", "takes true or false"),
        ({"security_opts": ["seccomp=/no/such/profile.json"]}, "security_opts", "No such file"),
        ({"security_opts": ["seccomp"]}, "security_opts", "seccomp takes unconfined or a profile"),
        ({"groups": ["a b"]}, "groups", "expected a group name or number"),
        ({"groups": "tty"}, "groups", "expected a list"),
        ({"devices": ["/dev/no-such-device"]}, "devices", "no such file or directory"),
        ({"devices": ["dev/zero"]}, "devices", "not absolute"),
        ({"devices": ["/dev/zero:rx"]}, "devices", "permissions are made of r, w and m"),
        ({"devices": ["/dev/zero", "/dev/null:/dev/zero"]}, "devices", "named twice"),
        ({"devices": ["/etc/passwd"]}, "devices", "not a character or block device"),
    ],
)
def test_bad_privileges_fail_with_one_message_naming_the_option(params: dict, named: str, words: str) -> None:
    with pytest.raises(ao.OptionError) as caught:
        ao.normalize(params)
    assert caught.value.option == named
    assert str(caught.value).startswith(f"invalid value for {named}: ")
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_a_bad_profile_names_its_first_bad_entry(tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"defaultAction": "SCMP_ACT_NOTHING"}')
    with pytest.raises(ao.OptionError, match="invalid value for security_opts: .*SCMP_ACT_NOTHING"):
        ao.normalize({"security_opts": [f"seccomp={bad}"]})


@pytest.mark.parametrize(
    ("params", "named", "words"),
    [
        ({"capabilities": ["NET_ADMIN"], "cap_drop": ["net_admin"]}, "cap_drop", "is also in cap-add"),
        # The engine's own check names the module's option.
        ({"capabilities": ["FLY"]}, "capabilities", "cap-add 'FLY' (not a capability"),
        ({"groups": ["a:b"]}, "groups", "group-add 'a:b'"),
    ],
)
def test_a_new_container_is_checked_as_a_whole(params: dict, named: str, words: str) -> None:
    with pytest.raises(ao.OptionError) as caught:
        ao.check_create({"name": "c1", "image": "busybox", **params})
    assert caught.value.option == named and words in str(caught.value)


def test_a_capability_the_hosts_root_lacks_is_refused_when_planned(monkeypatch) -> None:
    import hako.linux

    held = [c for c in hako.linux.CAPABILITIES if c != "CAP_SYS_TIME"]
    monkeypatch.setattr(hako.linux, "bounding_capabilities", lambda: held)
    with pytest.raises(ao.OptionError) as caught:
        ao.check_create({"name": "c1", "image": "busybox", "capabilities": ["sys_time"]})
    assert caught.value.option == "capabilities"
    assert "'CAP_SYS_TIME'" in str(caught.value) and "bounding set" in str(caught.value)


# --------------------------------------------------------------------------
# Comparing and deciding


SECURE = {
    "cap_add": ["NET_ADMIN", "sys_time"],
    "cap_drop": ["MKNOD"],
    "security_opt": ["no-new-privileges"],
    "group_add": ["tty", "27"],
    "devices": ["/dev/zero", "/dev/null:/dev/n0:r"],
}


@pytest.mark.parametrize(
    ("params", "record_values", "decision", "differing"),
    [
        # Nothing set: nothing compared, whatever the container holds.
        ({}, SECURE, ao.NOTHING, []),
        ({"memory": None, "capabilities": None, "devices": None}, SECURE, ao.NOTHING, []),
        # The same privileges spelt another way, in another order, twice.
        (
            {
                "capabilities": ["CAP_SYS_TIME", "net_admin", "NET_ADMIN"],
                "cap_drop": ["cap_mknod"],
                "security_opts": ["no-new-privileges=true"],
                "groups": [27, "tty"],
                "devices": ["/dev/null:/dev/n0:r", "/dev/zero:/dev/zero:rwm"],
                "privileged": False,
            },
            SECURE,
            ao.NOTHING,
            [],
        ),
        (
            {"capabilities": [], "cap_drop": [], "security_opts": [], "groups": [], "devices": []},
            {},
            ao.NOTHING,
            [],
        ),
        # A real difference makes the container again.
        ({"capabilities": ["NET_ADMIN"]}, SECURE, ao.RECREATE, ["capabilities"]),
        ({"capabilities": ["NET_ADMIN", "SYS_TIME", "CHOWN"]}, SECURE, ao.RECREATE, ["capabilities"]),
        ({"cap_drop": ["ALL"]}, SECURE, ao.RECREATE, ["cap_drop"]),
        ({"privileged": True}, SECURE, ao.RECREATE, ["privileged"]),
        ({"privileged": False}, {"privileged": True}, ao.RECREATE, ["privileged"]),
        ({"security_opts": ["no-new-privileges=false"]}, SECURE, ao.RECREATE, ["security_opts"]),
        ({"security_opts": ["seccomp=unconfined"]}, {}, ao.RECREATE, ["security_opts"]),
        ({"groups": ["tty"]}, SECURE, ao.RECREATE, ["groups"]),
        ({"devices": ["/dev/zero:r", "/dev/null:/dev/n0:r"]}, SECURE, ao.RECREATE, ["devices"]),
        ({"devices": ["/dev/zero"]}, SECURE, ao.RECREATE, ["devices"]),
        # Together with an in-place change: still made again.
        ({"capabilities": ["CHOWN"], "memory": "64m"}, {}, ao.RECREATE, ["capabilities", "memory"]),
        # The comparison modes apply as to other lists.
        (
            {"capabilities": ["NET_ADMIN"], "comparisons": {"capabilities": "allow_more_present"}},
            SECURE,
            ao.NOTHING,
            [],
        ),
        (
            {"security_opts": [], "comparisons": {"security_opts": "allow_more_present"}},
            SECURE,
            ao.NOTHING,
            [],
        ),
        ({"devices": [], "comparisons": {"devices": "ignore"}}, SECURE, ao.NOTHING, []),
        ({"capabilities": ["CHOWN"], "comparisons": {"*": "ignore"}}, SECURE, ao.NOTHING, []),
    ],
)
def test_compare_and_decide_privileges(params: dict, record_values: dict, decision: str, differing) -> None:
    assert plan(params, existing(**record_values)) == (decision, differing)


def test_a_seccomp_profile_compares_by_content_not_by_path(profile, tmp_path) -> None:
    record = existing(security_opt=[f"seccomp={profile}", "no-new-privileges"])
    assert record["seccomp_profile"] == PROFILE
    same = {"security_opts": ["no-new-privileges", f"seccomp={profile}"]}
    assert plan(same, record) == (ao.NOTHING, [])
    # The same content under another path: nothing to do.
    copy = tmp_path / "elsewhere.json"
    copy.write_text(json.dumps(PROFILE, indent=2))
    assert plan({"security_opts": ["no-new-privileges", f"seccomp={copy}"]}, record) == (ao.NOTHING, [])
    # The file edited: the container keeps the profile it was made with, so it is made again.
    profile.write_text(json.dumps({**PROFILE, "defaultAction": "SCMP_ACT_LOG"}))
    assert plan(same, record) == (ao.RECREATE, ["security_opts"])
    # Without the profile: unconfined and the default filter are not a custom one.
    assert plan({"security_opts": ["no-new-privileges"]}, record) == (ao.RECREATE, ["security_opts"])
    assert plan({"security_opts": ["no-new-privileges", "seccomp=unconfined"]}, record)[0] == ao.RECREATE


def test_diff_shows_privileges_as_compared(profile) -> None:
    record = existing(cap_add=["net_admin"], security_opt=[f"seccomp={profile}"], devices=["/dev/zero"])
    params = {
        "capabilities": ["SYS_TIME"],
        "security_opts": [f"seccomp={profile}"],
        "devices": ["/dev/zero:r"],
    }
    wanted = ao.normalize(params)
    modes = ao.comparison_modes(None)
    before, after = ao.diff_values(wanted, record, modes, ao.RECREATE)
    digest = ao.profile_digest(PROFILE)
    assert before == {
        "capabilities": ["CAP_NET_ADMIN"],
        "security_opts": [f"seccomp={profile} ({digest})"],
        "devices": ["/dev/zero:/dev/zero:rwm"],
    }
    assert after == {
        "capabilities": ["CAP_SYS_TIME"],
        "security_opts": [f"seccomp={profile} ({digest})"],
        "devices": ["/dev/zero:/dev/zero:r"],
    }


def test_create_options_make_a_container_that_then_compares_equal(profile, monkeypatch) -> None:
    monkeypatch.chdir(profile.parent)
    params = {
        "name": "c1",
        "image": "busybox",
        "capabilities": ["net_admin", "SYS_TIME"],
        "cap_drop": ["mknod"],
        "privileged": False,
        "security_opts": ["no-new-privileges", "seccomp:profile.json", "systempaths=unconfined"],
        "groups": ["tty", 27],
        "devices": ["/dev/zero:r", "/dev/null:/dev/n0"],
        "user": "1000:100",
        "userns": "auto",
        "comparisons": {"*": "strict"},
    }
    options = ao.create_options(params)
    assert options["cap_add"] == ["net_admin", "SYS_TIME"] and options["group_add"] == ["tty", "27"]
    # A profile's path is made absolute: the supervisor that reads it runs elsewhere.
    assert options["security_opt"][1] == f"seccomp={profile}"
    record = ao.check_create(params)
    record["image_id"] = IMAGE_ID
    record["userns"] = {"host_id": 100000, "size": 65536}  # as the engine picks it
    assert record["seccomp_profile"] == PROFILE
    assert plan(params, record) == (ao.NOTHING, [])
    privileged = {"name": "c2", "image": "busybox", "privileged": True, "comparisons": {"*": "strict"}}
    record = ao.check_create(privileged)
    record["image_id"] = IMAGE_ID
    assert plan(privileged, record) == (ao.NOTHING, [])


def test_the_privilege_options_and_their_aliases_are_in_the_argument_spec() -> None:
    spec = ao.argument_spec()
    assert spec["capabilities"] == {"type": "list", "elements": "str", "aliases": ["cap_add"]}
    assert spec["security_opts"]["aliases"] == ["security_opt"]
    assert spec["groups"]["aliases"] == ["group_add"]
    assert spec["privileged"] == {"type": "bool"}
    for name in ("capabilities", "cap_drop", "security_opts", "groups", "devices"):
        assert spec[name]["type"] == "list" and "default" not in spec[name]
        assert ao.comparison_modes(None)[name] == ao.STRICT


def test_check_mode_sets_aside_a_profile_an_earlier_task_would_write(profile, monkeypatch) -> None:
    monkeypatch.chdir(profile.parent)
    params = {"name": "c1", "security_opts": ["no-new-privileges", "seccomp=later.json"]}
    kept, missing = ao.set_aside_missing_profiles(params)
    assert kept == {"name": "c1", "security_opts": ["no-new-privileges"]}
    assert missing == [f"seccomp={profile.parent}/later.json (not yet present)"]
    # Predicted as a difference from any container's options.
    wanted = ao.normalize(kept)
    wanted["security_opts"] = sorted(wanted["security_opts"] + missing)
    record = existing(security_opt=["no-new-privileges", f"seccomp={profile}"])
    assert [d.option for d in ao.compare(wanted, record, ao.comparison_modes(None))] == ["security_opts"]
    # Profiles that are there, unconfined, nothing: left as they are.
    for there in (
        {"security_opts": ["seccomp=profile.json", "seccomp=unconfined"]},
        {},
        {"security_opts": None},
    ):
        assert ao.set_aside_missing_profiles(there) == (there, [])
