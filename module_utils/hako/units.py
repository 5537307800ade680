"""Parsing the values people type: sizes, CPU counts, durations."""

from __future__ import annotations

from .errors import InvalidValue

_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_size(field: str, text: str | int) -> int:
    """Bytes from '64m', '1.5g', '512k', '1024' or '2gb' (binary units, as Docker reads them)."""
    if isinstance(text, int):
        if text < 0:
            raise InvalidValue(field, text, "must not be negative")
        return text
    value = text.strip().lower()
    number = value.rstrip("bkmgtp")
    unit = value[len(number) :]
    if len(unit) == 2 and unit.endswith("b"):
        unit = unit[0]
    try:
        amount = float(number)
    except ValueError:
        raise InvalidValue(field, text, "expected a size such as 64m, 1g or 512k") from None
    if unit not in _SIZE_UNITS or not 0 <= amount < float("inf"):
        raise InvalidValue(field, text, "expected a size such as 64m, 1g or 512k")
    return int(amount * _SIZE_UNITS[unit])


def parse_memory(field: str, text: str | int, unlimited_ok: bool = False) -> int:
    """A memory limit; with ``unlimited_ok``, -1 means unlimited (as --memory-swap allows)."""
    if unlimited_ok and text in (-1, "-1"):
        return -1
    size = parse_size(field, text)
    if size < 6 * (1 << 20):
        raise InvalidValue(field, text, "the minimum memory limit is 6m")
    return size


def parse_cpus(field: str, text: str | float) -> float:
    try:
        cpus = float(text)
    except (TypeError, ValueError):
        raise InvalidValue(field, text, "expected a number of CPUs such as 0.5 or 2") from None
    # The kernel's smallest CFS quota is 1 ms per 100 ms period.
    if not 0.01 <= cpus <= 1024:
        raise InvalidValue(field, text, "must be a number of CPUs from 0.01 to 1024")
    return cpus


def parse_int(field: str, text: str | int, minimum: int | None = None) -> int:
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise InvalidValue(field, text, "expected a whole number") from None
    if minimum is not None and value < minimum:
        raise InvalidValue(field, text, f"must be at least {minimum}")
    return value


def format_size(size: float) -> str:
    """Sizes for people: 1.5MiB, 64MiB, 1.2GiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.4g}{unit}" if unit != "B" else f"{int(size)}B"
        size /= 1024
    return f"{size}B"


def format_duration(seconds: float) -> str:
    """Docker's human durations: 'Less than a second', '5 seconds', '3 minutes', '2 hours'."""
    seconds = int(seconds)
    if seconds < 1:
        return "Less than a second"
    if seconds < 60:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    hours = minutes // 60
    if hours < 48:
        return f"{hours} hour{'s' if hours != 1 else ''}"
    return f"{hours // 24} days"
