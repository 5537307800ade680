"""The lean stand-ins for json, socket and shutil (hako.lean)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from hako import lean

VALUES = [
    None,
    True,
    False,
    0,
    -1,
    2**63,
    -(2**64) - 1,
    10**40,
    0.1,
    -2.5,
    1e300,
    5e-324,
    "",
    "plain",
    'quote " backslash \\ slash / tab \t newline \n nul \x00',
    "héllo wörld",
    "日本語",
    "emoji \U0001f433",
    [],
    {},
    [1, "two", 3.0, None, True, [False, []]],
    {"b": 1, "a": 2, "c": {"z": [], "y": {}}},
    {"nested": {"deeper": {"deepest": [{"id": "sha256:" + "ab" * 32, "size": 4096}]}}},
    {"ünïcode": "välue", "": "empty key"},
    {"limits": {"memory": 67108864, "cpus": 0.5, "pids_limit": -1}, "tty": False, "user": None},
]


@pytest.mark.parametrize("value", VALUES)
def test_dumps_writes_what_json_dumps_writes_with_sorted_keys(value) -> None:
    assert lean.dumps(value) == json.dumps(value, sort_keys=True, separators=(",", ":"))


@pytest.mark.parametrize("value", VALUES)
def test_loads_reads_back_what_dumps_wrote(value) -> None:
    assert lean.loads(lean.dumps(value)) == value


@pytest.mark.parametrize("value", VALUES)
def test_loads_reads_what_json_dumps_writes_in_any_layout(value) -> None:
    assert lean.loads(json.dumps(value, indent=2, ensure_ascii=False)) == value
    assert lean.loads(json.dumps(value)) == json.loads(json.dumps(value))


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("  {} ", {}),
        ("\n\t[1]\r\n", [1]),
        (b'{"a": 1}', {"a": 1}),
        ('"\\u00e9\\ud83d\\udc33"', "é\U0001f433"),
        ("1E3", 1000.0),
        ("-0", 0),
        ("Infinity", math.inf),
        ("-Infinity", -math.inf),
    ],
)
def test_loads_reads_documents(text, value) -> None:
    assert lean.loads(text) == value


def test_loads_reads_nan_as_json_does() -> None:
    assert math.isnan(lean.loads("NaN"))
    assert lean.dumps(float("nan")) == json.dumps(float("nan")) == "NaN"


def test_dumps_tuples_as_lists_and_non_string_keys_as_strings() -> None:
    assert lean.dumps((1, 2)) == "[1,2]"
    assert lean.dumps({1: "a", 2: "b"}) == '{"1":"a","2":"b"}'


@pytest.mark.parametrize(
    "text",
    ["", "   ", "{", "[1,", '{"a" 1}', "{'a': 1}", "nul", "tru", '"unterminated', "[1,]", "01", "\x00"],
)
def test_loads_refuses_what_is_not_json(text: str) -> None:
    with pytest.raises(ValueError):
        lean.loads(text)


@pytest.mark.parametrize("text", ["{} {}", "[1] 2", "1 x", '"a""b"', "{}]", "null null"])
def test_loads_refuses_data_after_the_document(text: str) -> None:
    with pytest.raises(ValueError, match="extra data"):
        lean.loads(text)


@pytest.mark.parametrize(
    "value",
    [{1, 2}, b"bytes", object(), {"a": [1, object()]}, {(1, 2): "tuple key"}, complex(1, 2)],
)
def test_dumps_refuses_what_json_cannot_hold(value) -> None:
    with pytest.raises(TypeError):
        lean.dumps(value)


def test_read_json_reads_a_file_or_gives_none_when_missing(tmp_path: Path) -> None:
    path = tmp_path / "record.json"
    assert lean.read_json(str(path)) is None
    path.write_text(lean.dumps({"id": "x", "n": [1, 2]}) + "\n")
    assert lean.read_json(str(path)) == {"id": "x", "n": [1, 2]}
    path.write_text("{broken")
    with pytest.raises(ValueError):
        lean.read_json(str(path))


# --------------------------------------------------------------------------
# rmtree


def make_tree(root: Path) -> None:
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "a" / "file").write_text("x")
    (root / "a" / "b" / "c" / "deep").write_text("y")
    (root / "empty").mkdir()
    (root / "top").write_text("z")
    os.symlink("a/file", root / "relative-link")
    os.symlink("/nonexistent/target", root / "dangling")
    os.mkfifo(root / "a" / "fifo")
    (root / "a" / "b" / "readonly").mkdir()
    (root / "a" / "b" / "readonly" / "inside").write_text("w")
    os.chmod(root / "a" / "b" / "readonly", 0o555)


def test_rmtree_removes_a_whole_tree(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    make_tree(tree)
    lean.rmtree(str(tree))
    assert not os.path.lexists(tree)


def test_rmtree_does_not_follow_symlinks_out_of_the_tree(tmp_path: Path) -> None:
    tree, outside = tmp_path / "tree", tmp_path / "outside"
    tree.mkdir()
    (outside / "sub").mkdir(parents=True)
    (outside / "precious").write_text("keep")
    (outside / "sub" / "also").write_text("keep")
    make_tree(tree)
    os.symlink(outside, tree / "link-to-dir")
    os.symlink(outside, tree / "a" / "b" / "c" / "deep-link")
    os.symlink(outside / "precious", tree / "link-to-file")

    lean.rmtree(str(tree))

    assert not os.path.lexists(tree)
    assert (outside / "precious").read_text() == "keep"
    assert (outside / "sub" / "also").read_text() == "keep"


def test_rmtree_of_a_missing_tree_is_fine(tmp_path: Path) -> None:
    lean.rmtree(str(tmp_path / "missing"))
    lean.rmtree(str(tmp_path / "missing" / "below"))


def test_rmtree_of_a_file_removes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    lean.rmtree(str(path))
    assert not os.path.lexists(path)


def test_rmtree_of_a_symlink_to_a_directory_leaves_the_target_alone(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep")
    link = tmp_path / "link"
    os.symlink(outside, link)
    try:
        lean.rmtree(str(link))
    except OSError:
        pass
    assert os.listdir(outside) == ["precious"]


# --------------------------------------------------------------------------
# Sockets and descriptors


@pytest.fixture
def pair():
    """A lean.socketpair(), closed after the test (_socket sockets are no context managers)."""
    a, b = lean.socketpair()
    yield a, b
    a.close()
    b.close()


def test_socketpair_is_close_on_exec_seqpacket(pair) -> None:
    a, b = pair
    assert a.type & ~lean.SOCK_CLOEXEC == lean.SOCK_SEQPACKET
    assert not os.get_inheritable(a.fileno()) and not os.get_inheritable(b.fileno())
    a.send(b"one")
    a.send(b"two")
    assert b.recv(100) == b"one"  # one message per receive
    assert b.recv(100) == b"two"
    a.close()
    assert b.recv(100) == b""


def test_send_fds_passes_a_pipe_that_works_on_the_other_side(pair) -> None:
    a, b = pair
    read_end, write_end = os.pipe()
    try:
        lean.send_fds(a, b"pipe", [write_end])
        os.close(write_end)  # only the passed copy is left
        write_end = -1
        data, fds = lean.recv_fds(b)
        assert data == b"pipe"
        assert len(fds) == 1
        received = fds[0]
        assert not os.get_inheritable(received)
        os.write(received, b"through the passed descriptor")
        os.close(received)
        assert os.read(read_end, 100) == b"through the passed descriptor"
        assert os.read(read_end, 100) == b""  # the last write end is closed
    finally:
        os.close(read_end)
        if write_end != -1:
            os.close(write_end)


def test_send_fds_passes_several_descriptors_in_order(pair) -> None:
    a, b = pair
    pipes = [os.pipe() for _ in range(3)]
    received: list[int] = []
    try:
        lean.send_fds(a, b"three", [w for _, w in pipes])
        data, received = lean.recv_fds(b)
        assert data == b"three"
        assert len(received) == 3
        for index, fd in enumerate(received):
            os.write(fd, b"%d" % index)
        for index, (r, _) in enumerate(pipes):
            assert os.read(r, 10) == b"%d" % index
    finally:
        for fd in received + [fd for pipe in pipes for fd in pipe]:
            os.close(fd)


def test_send_fds_without_descriptors_sends_only_data(pair) -> None:
    a, b = pair
    lean.send_fds(a, b"just data", [])
    assert lean.recv_fds(b) == (b"just data", [])


def test_rmtree_removes_a_tree_deeper_than_path_max_and_the_recursion_limit(tmp_path: Path) -> None:
    tree = tmp_path / "deep"
    tree.mkdir()
    fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(3000):  # 6000 characters of path: more than PATH_MAX
        os.mkdir("d", dir_fd=fd)
        with open(os.open("f", os.O_WRONLY | os.O_CREAT, dir_fd=fd), "w") as f:
            f.write("x")
        child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)
    lean.rmtree(str(tree))
    assert not tree.exists()
