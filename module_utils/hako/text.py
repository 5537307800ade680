"""Checks on short strings (names, tags, numbers) without the re module.

``re`` costs several milliseconds to import (it pulls in enum); the patterns
hako checks are simple enough to test with sets of characters.
"""

from __future__ import annotations

LOWER = frozenset("abcdefghijklmnopqrstuvwxyz")
ALNUM = LOWER | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
DIGITS = frozenset("0123456789")
HEX = frozenset("0123456789abcdef")


def made_of(text: str, allowed: frozenset, first: frozenset | None = None, max_len: int = 0) -> bool:
    """True if ``text`` is non-empty, uses only ``allowed`` (``first`` for its first character)."""
    if not text or (max_len and len(text) > max_len):
        return False
    if first is not None and text[0] not in first:
        return False
    return all(ch in allowed for ch in text)


def is_number(text: str) -> bool:
    return made_of(text, DIGITS)


def is_hostname(text: str) -> bool:
    """RFC 1123: dot-separated labels of 1-63 letters, digits and inner hyphens."""
    if len(text) > 253:
        return False
    return all(
        made_of(label, ALNUM | {"-"}, max_len=63) and not label.startswith("-") and not label.endswith("-")
        for label in text.split(".")
    )


def is_image_name(text: str) -> bool:
    """Lowercase path components joined by '/', each alphanumerics with single . _ - inside."""
    for component in text.split("/"):
        if not made_of(component, LOWER | DIGITS | {".", "_", "-"}):
            return False
        if component[0] in "._-" or component[-1] in "._-":
            return False
    return True
