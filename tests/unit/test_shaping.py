"""Shaping values as tc reads them: rates (bits or bytes), sizes, times, percentages (table-driven)."""

from __future__ import annotations

import pytest
from hako.errors import InvalidValue
from hako.network import shaping


@pytest.mark.parametrize(
    ("text", "bytes_per_second"),
    [
        ("10mbit", 1_250_000),
        ("10Mbit", 1_250_000),
        ("512kbit", 64_000),
        ("1gbit", 125_000_000),
        ("100kbps", 100_000),  # bytes, as tc has it
        ("100KBps", 100_000),
        ("1mbps", 1_000_000),
        ("1mibit", 131_072),
        ("1Kibit", 128),
        ("2kibps", 2048),
        ("1.5mbit", 187_500),
        ("8000", 1000),  # a bare number is bits per second
        ("8000bit", 1000),
        ("1000bps", 1000),
        ("34gbit", 4_250_000_000),
        (" 10mbit ", 1_250_000),
    ],
)
def test_rates_are_read_as_tc_reads_them(text, bytes_per_second) -> None:
    assert shaping.parse_rate("rate", text) == bytes_per_second


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "expected a rate"),
        ("fast", "expected a rate"),
        ("10 mbit", "expected a rate"),
        ("10mbits", "expected a rate"),
        ("10mb", "expected a rate"),  # a size, not a rate
        ("-1mbit", "expected a rate"),
        ("1e6bit", "expected a rate"),
        ("0", "1kbit to 34gbit"),
        ("999bit", "1kbit to 34gbit"),
        ("35gbit", "1kbit to 34gbit"),
    ],
)
def test_nonsense_rates_are_refused_naming_the_field(text, why) -> None:
    with pytest.raises(InvalidValue) as caught:
        shaping.parse_rate("rate", text)
    assert caught.value.field == "rate" and caught.value.value == text
    assert why in str(caught.value)


@pytest.mark.parametrize(
    ("text", "size"),
    [("1600", 1600), ("1600b", 1600), ("32k", 32768), ("32kb", 32768), ("1m", 1 << 20), ("64kbit", 8192)],
)
def test_sizes_are_bytes_or_binary_multiples(text, size) -> None:
    assert shaping.parse_size("burst", text) == size


@pytest.mark.parametrize(
    ("text", "micros"),
    [("20ms", 20_000), ("1s", 1_000_000), ("1.5s", 1_500_000), ("500us", 500), ("2msec", 2000), ("0ms", 0)],
)
def test_times_need_their_unit(text, micros) -> None:
    assert shaping.parse_time("delay", text) == micros


@pytest.mark.parametrize("text", ["20", "20 ms", "twenty", "20m", "-5ms", "61s"])
def test_bad_times_are_refused(text) -> None:
    with pytest.raises(InvalidValue) as caught:
        shaping.parse_time("delay", text)
    assert caught.value.field == "delay"


@pytest.mark.parametrize(("text", "percent"), [("1%", 1.0), ("0.5%", 0.5), ("2", 2.0), ("100%", 100.0)])
def test_percentages(text, percent) -> None:
    assert shaping.parse_percent("loss", text) == percent


@pytest.mark.parametrize("text", ["0%", "101%", "-1%", "1%%", "much", ""])
def test_bad_percentages_are_refused(text) -> None:
    with pytest.raises(InvalidValue):
        shaping.parse_percent("loss", text)


def test_a_shape_keeps_only_what_was_asked() -> None:
    assert shaping.parse_shape(rate="10mbit") == {"rate": 1_250_000}
    assert shaping.parse_shape(rate="1mbit", burst="32k") == {"rate": 125_000, "burst": 32768}
    assert shaping.parse_shape(delay="20ms", jitter="5ms", loss="1%") == {
        "delay": 20_000,
        "jitter": 5000,
        "loss": 1.0,
    }


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({}, "shape"),
        ({"burst": "32k"}, "burst"),  # a bucket needs a rate
        ({"jitter": "5ms"}, "jitter"),  # jitter needs a delay
        ({"rate": "1kbit", "burst": "1g"}, "burst"),  # too many seconds at the rate
    ],
)
def test_incomplete_shapes_are_refused(values, field) -> None:
    with pytest.raises(InvalidValue) as caught:
        shaping.parse_shape(**values)
    assert caught.value.field == field


def test_only_delay_jitter_and_loss_need_netem() -> None:
    assert not shaping.needs_netem({"rate": 1000, "burst": 5000})
    assert not shaping.needs_netem(None)
    assert shaping.needs_netem({"delay": 20_000})
    assert shaping.needs_netem({"rate": 1000, "loss": 1.0})


def test_the_default_bucket_holds_ten_milliseconds_and_two_frames() -> None:
    assert shaping.default_burst(1_250_000, 1500) == 12_500
    assert shaping.default_burst(64_000, 1500) == 3028
    assert shaping.default_burst(64_000, 9000) == 18_028


@pytest.mark.parametrize(
    ("shape", "text"),
    [
        (None, "-"),
        ({"rate": 1_250_000}, "rate 10mbit"),
        ({"rate": 64_000, "burst": 4096}, "rate 512kbit burst 4096b"),
        ({"delay": 20_000, "jitter": 5000, "loss": 0.5}, "delay 20ms jitter 5ms loss 0.5%"),
        ({"rate": 125, "delay": 1_500_000}, "rate 1kbit delay 1.5s"),
    ],
)
def test_shapes_are_described_in_tc_units(shape, text) -> None:
    assert shaping.describe(shape) == text
