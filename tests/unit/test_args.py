"""The Docker-style command-line parser (hako.args)."""

from __future__ import annotations

import pytest
from hako.args import Command, HelpRequested, UsageError
from hako.errors import HakoError


def run_command() -> Command:
    """A command shaped like `hako run`: options, one image, then the container's command."""
    return (
        Command("run", "Run a command in a new container.")
        .flag("-d", "--detach", help="run in the background")
        .flag("-i", "--interactive", help="keep standard input open")
        .flag("-t", "--tty", help="allocate a pseudo-terminal")
        .flag("--rm", help="remove the container when it exits")
        .value("--name", help="a unique name")
        .value("-h", "--hostname", help="the host name inside")
        .value("-m", "--memory", help="memory limit")
        .value("--restart", default="no", help="restart policy")
        .value("--net", dest="ns_network", help="network namespace")
        .many("-e", "--env", help="set an environment variable")
        .many("-v", "--volume", help="bind mount")
        .positional("image")
        .rest("command")
    )


def parse_run(*argv: str):
    return run_command().parse(list(argv))


# --------------------------------------------------------------------------
# Options, positionals, the rest


def test_options_come_first_then_the_image_then_the_command() -> None:
    args = parse_run("-it", "--rm", "busybox", "ls", "-l")
    assert args.tty is True
    assert args.interactive is True
    assert args.rm is True
    assert args.detach is False
    assert args.image == "busybox"
    assert args.command == ["ls", "-l"]


def test_defaults_when_nothing_is_given() -> None:
    args = parse_run("busybox")
    assert (args.detach, args.interactive, args.tty, args.rm) == (False, False, False, False)
    assert args.name is None
    assert args.restart == "no"
    assert args.env == [] and args.volume == []
    assert args.command == []


def test_options_after_the_image_belong_to_the_command() -> None:
    args = parse_run("busybox", "-it", "--rm", "--name", "x")
    assert args.tty is False and args.rm is False and args.name is None
    assert args.command == ["-it", "--rm", "--name", "x"]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-dit", "busybox"], {"detach": True, "interactive": True, "tty": True}),
        (["-ti", "busybox"], {"detach": False, "interactive": True, "tty": True}),
        (["-d", "-i", "busybox"], {"detach": True, "interactive": True, "tty": False}),
        (["--detach", "--tty", "busybox"], {"detach": True, "interactive": False, "tty": True}),
    ],
)
def test_short_flags_combine(argv: list, expected: dict) -> None:
    args = run_command().parse(argv)
    assert {key: getattr(args, key) for key in expected} == expected


@pytest.mark.parametrize(
    ("argv", "dest", "value"),
    [
        (["--name", "web", "busybox"], "name", "web"),
        (["--name=web", "busybox"], "name", "web"),
        (["--name=", "busybox"], "name", ""),
        (["--name=a=b", "busybox"], "name", "a=b"),
        (["-m", "64m", "busybox"], "memory", "64m"),
        (["-m64m", "busybox"], "memory", "64m"),
        (["-m=64m", "busybox"], "memory", "64m"),
        (["--memory=64m", "busybox"], "memory", "64m"),
        (["-h", "box", "busybox"], "hostname", "box"),
        (["--net", "host", "busybox"], "ns_network", "host"),
        (["--restart", "always", "busybox"], "restart", "always"),
        (["-m", "-1", "busybox"], "memory", "-1"),  # a value may start with '-'
    ],
)
def test_values_attach_or_follow(argv: list, dest: str, value: str) -> None:
    args = run_command().parse(argv)
    assert getattr(args, dest) == value
    assert args.image == "busybox"


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["-eA=1", "busybox"], ["A=1"]),
        (["-e=A", "busybox"], ["A"]),
        (["-e", "A=1", "busybox"], ["A=1"]),
        (["--env", "A=1", "busybox"], ["A=1"]),
        (["--env=A=1", "busybox"], ["A=1"]),
        (["-e", "A=1", "--env", "B=2", "-eC=3", "busybox"], ["A=1", "B=2", "C=3"]),
        (["-de", "A=1", "busybox"], ["A=1"]),
        (["-deA=1", "busybox"], ["A=1"]),
    ],
)
def test_repeated_options_collect_their_values_in_order(argv: list, env: list) -> None:
    assert run_command().parse(argv).env == env


def test_a_short_value_option_ends_a_group_of_flags() -> None:
    args = parse_run("-dim64m", "busybox")
    assert args.detach is True and args.interactive is True
    assert args.memory == "64m"


def test_a_single_value_option_given_twice_keeps_the_last() -> None:
    assert parse_run("--name", "a", "--name", "b", "busybox").name == "b"


@pytest.mark.parametrize(
    ("argv", "image", "command"),
    [
        (["--", "busybox", "ls"], "busybox", ["ls"]),
        (["-d", "--", "busybox", "--rm"], "busybox", ["--rm"]),
        (["--", "-weird", "x"], "-weird", ["x"]),
        (["busybox", "--", "ls"], "busybox", ["--", "ls"]),
    ],
)
def test_double_dash_ends_the_options(argv: list, image: str, command: list) -> None:
    args = run_command().parse(argv)
    assert args.image == image
    assert args.command == command


def test_double_dash_without_a_rest_makes_everything_positional() -> None:
    command = Command("rm", "Remove.").flag("-f", "--force").positional("containers", nargs="+")
    args = command.parse(["-f", "--", "-a", "--force"])
    assert args.force is True
    assert args.containers == ["-a", "--force"]


def test_a_lone_dash_is_a_positional() -> None:
    assert parse_run("-", "x").image == "-"


# --------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--bogus", "busybox"], "--bogus"),
        (["--bogus=1", "busybox"], "--bogus"),
        (["-z", "busybox"], "-z"),
        (["-dz", "busybox"], "-z"),
        (["-itX", "busybox"], "-X"),
    ],
)
def test_an_unknown_flag_is_a_usage_error_naming_it(argv: list, flag: str) -> None:
    with pytest.raises(UsageError) as caught:
        run_command().parse(argv)
    assert str(caught.value) == f"hako run: unknown flag: {flag}"


@pytest.mark.parametrize(
    ("argv", "flag"),
    [(["--name"], "--name"), (["-e"], "-e"), (["-dm"], "-m"), (["--memory"], "--memory")],
)
def test_a_value_option_at_the_end_needs_an_argument(argv: list, flag: str) -> None:
    with pytest.raises(UsageError) as caught:
        run_command().parse(argv)
    assert str(caught.value) == f"hako run: flag needs an argument: {flag}"


@pytest.mark.parametrize("argv", [["--rm=yes", "busybox"], ["--tty=true", "busybox"], ["--rm=", "busybox"]])
def test_a_flag_given_a_value_is_refused(argv: list) -> None:
    with pytest.raises(UsageError, match="takes no value"):
        run_command().parse(argv)


def test_a_missing_positional_is_a_usage_error_showing_the_usage() -> None:
    with pytest.raises(UsageError) as caught:
        parse_run("-d")
    assert str(caught.value) == "hako run: requires IMAGE [COMMAND [ARG...]]"


def test_usage_errors_are_hako_errors_with_status_125() -> None:
    with pytest.raises(HakoError) as caught:
        parse_run("--bogus")
    assert caught.value.exit_code == 125


def test_an_unexpected_positional_is_refused() -> None:
    command = Command("inspect", "Inspect.").positional("container")
    with pytest.raises(UsageError, match="unexpected argument 'b'"):
        command.parse(["a", "b"])


# --------------------------------------------------------------------------
# nargs


def nargs_command(*spec: tuple[str, str]) -> Command:
    command = Command("test", "A test command.")
    for dest, nargs in spec:
        command.positional(dest, nargs=nargs)
    return command


@pytest.mark.parametrize(
    ("spec", "argv", "expected"),
    [
        ([("a", "1")], ["x"], {"a": "x"}),
        ([("a", "1"), ("b", "1")], ["x", "y"], {"a": "x", "b": "y"}),
        ([("a", "+")], ["x"], {"a": ["x"]}),
        ([("a", "+")], ["x", "y", "z"], {"a": ["x", "y", "z"]}),
        ([("a", "*")], [], {"a": []}),
        ([("a", "*")], ["x", "y"], {"a": ["x", "y"]}),
        ([("a", "?")], [], {"a": None}),
        ([("a", "?")], ["x"], {"a": "x"}),
        ([("a", "1"), ("b", "?")], ["x"], {"a": "x", "b": None}),
        ([("a", "1"), ("b", "?")], ["x", "y"], {"a": "x", "b": "y"}),
        # an optional or open-ended positional leaves what later required ones need
        ([("a", "?"), ("b", "1")], ["x"], {"a": None, "b": "x"}),
        ([("a", "?"), ("b", "1")], ["x", "y"], {"a": "x", "b": "y"}),
        ([("a", "*"), ("b", "1")], ["x", "y", "z"], {"a": ["x", "y"], "b": "z"}),
        ([("a", "*"), ("b", "1")], ["z"], {"a": [], "b": "z"}),
        ([("a", "+"), ("b", "1")], ["x", "y"], {"a": ["x"], "b": "y"}),
        ([("a", "1"), ("b", "+")], ["x", "y", "z"], {"a": "x", "b": ["y", "z"]}),
        ([("a", "*"), ("b", "+")], ["x", "y"], {"a": ["x"], "b": ["y"]}),
    ],
)
def test_positionals_take_what_their_nargs_allow(spec: list, argv: list, expected: dict) -> None:
    args = nargs_command(*spec).parse(argv)
    assert {dest: getattr(args, dest) for dest in expected} == expected


@pytest.mark.parametrize(
    ("spec", "argv", "message"),
    [
        ([("a", "1")], [], "requires A"),
        ([("a", "+")], [], "requires A [A...]"),
        ([("a", "1"), ("b", "+")], ["x"], "requires A B [B...]"),
        ([("a", "?")], ["x", "y"], "unexpected argument 'y'"),
        ([("a", "1"), ("b", "*")], [], "requires A [B...]"),
    ],
)
def test_positionals_that_do_not_fit_are_usage_errors(spec: list, argv: list, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        nargs_command(*spec).parse(argv)
    assert str(caught.value) == f"hako test: {message}"


def test_options_may_mix_with_open_ended_positionals() -> None:
    command = Command("stop", "Stop.").value("-t", "--time", default="10").positional("containers", nargs="+")
    args = command.parse(["a", "-t", "3", "b"])
    assert args.containers == ["a", "b"]
    assert args.time == "3"


# --------------------------------------------------------------------------
# Help


@pytest.mark.parametrize("argv", [["--help"], ["-d", "--help"], ["--help", "busybox"]])
def test_help_is_requested_with_a_text_listing_the_options(argv: list) -> None:
    with pytest.raises(HelpRequested) as caught:
        run_command().parse(argv)
    text = caught.value.text
    assert str(caught.value) == text
    lines = text.splitlines()
    assert lines[0] == "Usage: hako run [OPTIONS] IMAGE [COMMAND [ARG...]]"
    assert "Run a command in a new container." in lines
    assert "Options:" in lines
    for option in ("-d, --detach", "--rm", "--name VALUE", "-h, --hostname VALUE", "-e, --env VALUE"):
        assert any(line.strip().startswith(option) for line in lines), option
    assert any("--restart VALUE" in line and "(default no)" in line for line in lines)


def test_help_after_the_image_belongs_to_the_command() -> None:
    assert parse_run("busybox", "--help").command == ["--help"]


def test_dash_h_asks_for_help_unless_a_command_defines_it() -> None:
    assert parse_run("-h", "box", "busybox").hostname == "box"
    with pytest.raises(HelpRequested):
        Command("ps", "List.").flag("-a", "--all").parse(["-h"])


def test_help_of_a_command_without_options_or_positionals() -> None:
    text = Command("version", "Show the version.").help()
    assert text.splitlines() == ["Usage: hako version [OPTIONS]", "", "Show the version."]
