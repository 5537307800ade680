"""The loop device bindings (hako.loop): the kernel's structures, packed as linux/loop.h lays them out."""

from __future__ import annotations

from hako import loop


def test_loop_info64_and_loop_config_have_the_kernel_s_sizes() -> None:
    # struct loop_info64 is 232 bytes, struct loop_config 304 (linux/loop.h, no padding).
    assert loop._INFO64.size == 232
    assert loop._CONFIG_SIZE == 304


def test_info_carries_the_flags_and_a_bounded_file_name() -> None:
    fields = loop._INFO64.unpack(loop._info(loop.LO_FLAGS_AUTOCLEAR, "/x/" + "a" * 100))
    assert fields[8] == loop.LO_FLAGS_AUTOCLEAR
    name = fields[9].rstrip(b"\0")
    assert name.startswith(b"/x/a") and len(name) == loop.LO_NAME_SIZE - 1


def test_backing_devices_match_the_path_also_once_deleted(tmp_path, monkeypatch) -> None:
    sys_block = tmp_path / "block"
    image = tmp_path / "layer.ext4"
    image.write_bytes(b"")
    for name, backing in (("loop0", str(image)), ("loop1", f"{image} (deleted)"), ("loop2", "/elsewhere")):
        (sys_block / name / "loop").mkdir(parents=True)
        (sys_block / name / "loop" / "backing_file").write_text(backing + "\n")
    (sys_block / "loop3").mkdir()  # detached: no loop/ directory
    (sys_block / "vda").mkdir()
    monkeypatch.setattr(loop, "SYS_BLOCK", str(sys_block))
    assert loop.backing_devices(str(image)) == ["/dev/loop0", "/dev/loop1"]
