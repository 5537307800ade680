"""Parsing and formatting of the values people type: sizes, CPU counts, whole numbers, durations."""

from __future__ import annotations

import pytest
from hako.errors import InvalidValue
from hako.units import (
    format_duration,
    format_size,
    parse_cpus,
    parse_int,
    parse_memory,
    parse_size,
)

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30

# --------------------------------------------------------------------------
# parse_size


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("1024", 1024),
        ("512b", 512),
        ("512k", 512 * KIB),
        ("512K", 512 * KIB),
        ("64m", 64 * MIB),
        ("64M", 64 * MIB),
        ("2g", 2 * GIB),
        ("2gb", 2 * GIB),
        ("2GB", 2 * GIB),
        ("1kb", KIB),
        ("1.5g", 3 * GIB // 2),
        ("0.5k", 512),
        ("1t", 1 << 40),
        ("1p", 1 << 50),
        (" 64m ", 64 * MIB),
        (4096, 4096),
        (0, 0),
    ],
)
def test_parse_size_reads_binary_units(text, size: int) -> None:
    assert parse_size("memory", text) == size


@pytest.mark.parametrize(
    "text",
    ["", "m", "12XB", "12x", "-1", "-64m", "1kk", "1mg", "64 m x", "nan", "abc", "1e", -1],
)
def test_parse_size_refuses_what_is_not_a_size(text) -> None:
    with pytest.raises(InvalidValue) as caught:
        parse_size("shm-size", text)
    assert caught.value.field == "shm-size"
    assert caught.value.value == text
    assert "shm-size" in str(caught.value)
    assert repr(text) in str(caught.value)


@pytest.mark.parametrize("text", ["inf", "infinity", "INF"])
def test_parse_size_refuses_infinity_as_invalid_value(text: str) -> None:
    with pytest.raises(InvalidValue):
        parse_size("memory", text)


# --------------------------------------------------------------------------
# parse_memory


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("6m", 6 * MIB),
        ("64m", 64 * MIB),
        ("1g", GIB),
        (str(6 * MIB), 6 * MIB),
        (6 * MIB, 6 * MIB),
    ],
)
def test_parse_memory_accepts_6m_and_above(text, size: int) -> None:
    assert parse_memory("memory", text) == size


@pytest.mark.parametrize("text", ["-1", -1])
def test_parse_memory_takes_minus_one_as_unlimited_only_where_allowed(text) -> None:
    assert parse_memory("memory-swap", text, unlimited_ok=True) == -1
    with pytest.raises(InvalidValue):
        parse_memory("memory", text)


@pytest.mark.parametrize("text", ["1k", "5m", str(6 * MIB - 1), "0", 0, "-2", "x"])
def test_parse_memory_refuses_less_than_6m(text) -> None:
    with pytest.raises(InvalidValue) as caught:
        parse_memory("memory", text)
    assert caught.value.field == "memory"
    assert caught.value.value == text


# --------------------------------------------------------------------------
# parse_cpus


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("0.5", 0.5), ("1", 1.0), ("2", 2.0), (" 1.25 ", 1.25), (3, 3.0), (0.1, 0.1), ("1024", 1024.0)],
)
def test_parse_cpus_reads_a_positive_number(text, cpus: float) -> None:
    assert parse_cpus("cpus", text) == cpus


@pytest.mark.parametrize("text", ["0", "-1", "-0.5", "x", "", "nan", "inf", "1025", None, 0])
def test_parse_cpus_refuses_zero_negative_huge_and_non_numbers(text) -> None:
    with pytest.raises(InvalidValue) as caught:
        parse_cpus("cpus", text)
    assert caught.value.field == "cpus"
    assert "cpus" in str(caught.value)


# --------------------------------------------------------------------------
# parse_int


@pytest.mark.parametrize(
    ("text", "minimum", "value"),
    [
        ("0", None, 0),
        ("-5", None, -5),
        ("42", None, 42),
        (42, None, 42),
        ("2", 2, 2),
        ("10", 0, 10),
        ("0", 0, 0),
    ],
)
def test_parse_int_reads_whole_numbers_at_or_above_the_minimum(text, minimum, value: int) -> None:
    assert parse_int("stop-timeout", text, minimum=minimum) == value


@pytest.mark.parametrize(
    ("text", "minimum", "why"),
    [
        ("x", None, "whole number"),
        ("1.5", None, "whole number"),
        ("", None, "whole number"),
        (None, None, "whole number"),
        ("1", 2, "at least 2"),
        ("-1", 0, "at least 0"),
    ],
)
def test_parse_int_refuses_non_integers_and_values_below_the_minimum(text, minimum, why: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        parse_int("cpu-shares", text, minimum=minimum)
    assert caught.value.field == "cpu-shares"
    assert why in str(caught.value)


# --------------------------------------------------------------------------
# format_size


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0B"),
        (1, "1B"),
        (1023, "1023B"),
        (1023.9, "1023B"),
        (1024, "1KiB"),
        (1536, "1.5KiB"),
        (64 * MIB, "64MiB"),
        (MIB + MIB // 2, "1.5MiB"),
        (GIB, "1GiB"),
        (int(1.2 * GIB), "1.2GiB"),
        (1 << 40, "1TiB"),
        (1 << 50, "1024TiB"),  # TiB is the largest unit
        (123456789, "117.7MiB"),
    ],
)
def test_format_size_picks_the_largest_binary_unit_below_1024(size, text: str) -> None:
    assert format_size(size) == text


@pytest.mark.parametrize("text", ["512k", "64m", "1g", "3t"])
def test_format_size_reads_back_through_parse_size(text: str) -> None:
    formatted = format_size(parse_size("size", text))
    number, unit = formatted[:-3], formatted[-3]
    assert parse_size("size", f"{number}{unit}") == parse_size("size", text)


# --------------------------------------------------------------------------
# format_duration


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "Less than a second"),
        (0.99, "Less than a second"),
        (-3, "Less than a second"),
        (1, "1 second"),
        (1.7, "1 second"),
        (2, "2 seconds"),
        (59, "59 seconds"),
        (60, "1 minute"),
        (119, "1 minute"),
        (120, "2 minutes"),
        (3599, "59 minutes"),
        (3600, "1 hour"),
        (7200, "2 hours"),
        (47 * 3600, "47 hours"),
        (48 * 3600, "2 days"),
        (10 * 86400 + 5, "10 days"),
    ],
)
def test_format_duration_reads_like_docker(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
