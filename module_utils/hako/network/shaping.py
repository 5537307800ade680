"""Traffic shaping as people type it: rates, sizes, times and percentages the way tc reads them.

A shape is what leaves one interface: a rate limit (a token bucket, tbf),
and delay, jitter and loss (netem, which not every kernel has). It is kept
as a record of plain numbers, in the kernel's units::

    {"rate": bytes per second, "burst": bytes, "delay": µs, "jitter": µs, "loss": percent}

with only the keys that were asked for. Pure functions: the kernel side is
in netlink.py.
"""

from __future__ import annotations

from ..errors import InvalidValue

# tc's rate suffixes (tc_util.c, get_rate), matched without regard to case:
# "bit" units are bits per second, "Bps" units bytes per second; k, m, g, t
# are powers of 1000 and ki, mi, gi, ti powers of 1024. A bare number is bits.
_RATE_UNITS = {
    "": 1,
    "bit": 1,
    "kibit": 1024,
    "kbit": 1000,
    "mibit": 1024**2,
    "mbit": 1000**2,
    "gibit": 1024**3,
    "gbit": 1000**3,
    "tibit": 1024**4,
    "tbit": 1000**4,
    "bps": 8,
    "kibps": 8 * 1024,
    "kbps": 8 * 1000,
    "mibps": 8 * 1024**2,
    "mbps": 8 * 1000**2,
    "gibps": 8 * 1024**3,
    "gbps": 8 * 1000**3,
    "tibps": 8 * 1024**4,
    "tbps": 8 * 1000**4,
}
# tc's size suffixes (get_size): bytes, binary multiples, or bits of them.
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "kbit": 1024 // 8,
    "mbit": 1024**2 // 8,
    "gbit": 1024**3 // 8,
}
# tc's time suffixes (get_time), in microseconds. Unlike tc, a unit is
# required: a bare "20" (20 µs to tc) is too easily meant as 20 ms.
_TIME_UNITS = {
    "s": 1_000_000,
    "sec": 1_000_000,
    "secs": 1_000_000,
    "ms": 1000,
    "msec": 1000,
    "msecs": 1000,
    "us": 1,
    "usec": 1,
    "usecs": 1,
}

# The kernel's tbf and netem take the rate as 32 bits of bytes per second.
MIN_RATE = 125  # 1kbit
MAX_RATE = 2**32 - 1  # about 34gbit
MAX_DELAY = 60_000_000  # a minute
# The bucket's size, as time at the rate, must fit the kernel's 32-bit tick count.
MAX_BURST_SECONDS = 250
NETEM_KEYS = ("delay", "jitter", "loss")


def _split_number(text: str) -> tuple[float, str] | None:
    """A leading decimal number and the rest, or None."""
    end = 0
    while end < len(text) and (text[end].isdigit() or text[end] == "."):
        end += 1
    try:
        return float(text[:end]), text[end:]
    except ValueError:
        return None


def _scaled(field: str, text, units: dict[str, int], why: str) -> float:
    """A number with one of ``units`` after it (matched without regard to case), times the unit."""
    split = _split_number(str(text).strip())
    if split is None or split[1].lower() not in units:
        raise InvalidValue(field, text, why)
    return split[0] * units[split[1].lower()]


def parse_rate(field: str, text) -> int:
    """Bytes per second from a tc rate: 10mbit, 512kbit, 1gbit, 100kbps (bytes), 1.5mibit."""
    why = "expected a rate such as 10mbit, 512kbit, 1gbit or 100kbps (bytes)"
    rate = int(_scaled(field, text, _RATE_UNITS, why) / 8)
    if not MIN_RATE <= rate <= MAX_RATE:
        raise InvalidValue(field, text, "expected 1kbit to 34gbit")
    return rate


def parse_size(field: str, text) -> int:
    """Bytes from a tc size: 32k, 1m, 1600, 1600b, 64kbit."""
    size = int(_scaled(field, text, _SIZE_UNITS, "expected a size such as 32k, 1m or 1600 (bytes)"))
    if not 1 <= size <= 2**31:
        raise InvalidValue(field, text, "expected 1 byte to 2g")
    return size


def parse_time(field: str, text) -> int:
    """Microseconds from a tc time with its unit: 20ms, 1.5s, 500us."""
    why = "expected a time with its unit, such as 20ms, 1s or 500us"
    micros = int(_scaled(field, text, _TIME_UNITS, why))
    if micros > MAX_DELAY:
        raise InvalidValue(field, text, "at most 60s")
    return micros


def parse_percent(field: str, text) -> float:
    """A percentage from 1%, 0.5% or 2 (tc reads both)."""
    value = str(text).strip()
    split = _split_number(value[:-1] if value.endswith("%") else value)
    if split is None or split[1]:
        raise InvalidValue(field, text, "expected a percentage such as 1% or 0.5%")
    if not 0 < split[0] <= 100:
        raise InvalidValue(field, text, "expected more than 0% and at most 100%")
    return split[0]


def parse_shape(rate=None, burst=None, delay=None, jitter=None, loss=None) -> dict:
    """A shape record from typed values (None: not asked for); at least one must be given."""
    shape: dict = {}
    if rate not in (None, ""):
        shape["rate"] = parse_rate("rate", rate)
    if burst not in (None, ""):
        if "rate" not in shape:
            raise InvalidValue("burst", burst, "needs --rate")
        shape["burst"] = parse_size("burst", burst)
        if shape["burst"] > shape["rate"] * MAX_BURST_SECONDS:
            raise InvalidValue("burst", burst, f"more than {MAX_BURST_SECONDS} seconds at the rate")
    if delay not in (None, ""):
        shape["delay"] = parse_time("delay", delay)
    if jitter not in (None, ""):
        if "delay" not in shape:
            raise InvalidValue("jitter", jitter, "needs --delay")
        shape["jitter"] = parse_time("jitter", jitter)
    if loss not in (None, ""):
        shape["loss"] = parse_percent("loss", loss)
    if not shape:
        raise InvalidValue("shape", "", "give --rate, --delay, --jitter or --loss (or --clear)")
    return shape


def needs_netem(shape: dict | None) -> bool:
    return bool(shape) and any(key in shape for key in NETEM_KEYS)


def default_burst(rate: int, mtu: int) -> int:
    """The bucket when none is asked for: 10 ms at the rate, and at least two full frames."""
    return max(rate // 100, 2 * (mtu + 14))


def format_rate(rate: int) -> str:
    """Bytes per second as tc prints a rate: 10mbit, 512kbit, 1200bit."""
    bits = rate * 8
    for unit, size in (("gbit", 1000**3), ("mbit", 1000**2), ("kbit", 1000)):
        if bits >= size:
            return f"{bits / size:.4g}{unit}"
    return f"{bits}bit"


def format_time(micros: int) -> str:
    if micros >= 1_000_000:
        return f"{micros / 1_000_000:.4g}s"
    if micros >= 1000:
        return f"{micros / 1000:.4g}ms"
    return f"{micros}us"


def describe(shape: dict | None) -> str:
    """One short line for tables: "rate 10mbit delay 20ms jitter 5ms loss 1%", or "-"."""
    if not shape:
        return "-"
    words = []
    if "rate" in shape:
        words.append(f"rate {format_rate(shape['rate'])}")
    if "burst" in shape:
        words.append(f"burst {shape['burst']}b")
    for key in ("delay", "jitter"):
        if key in shape:
            words.append(f"{key} {format_time(shape[key])}")
    if "loss" in shape:
        words.append(f"loss {shape['loss']:g}%")
    return " ".join(words)
