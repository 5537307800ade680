"""The character-set checks on names, host names, CPU lists and image names."""

from __future__ import annotations

import pytest
from hako import text


@pytest.mark.parametrize(
    ("value", "allowed", "first", "max_len", "ok"),
    [
        ("abc", text.LOWER, None, 0, True),
        ("", text.LOWER, None, 0, False),
        ("abC", text.LOWER, None, 0, False),
        ("a1", text.ALNUM, None, 0, True),
        ("1a", text.ALNUM, text.LOWER, 0, False),
        ("a1", text.ALNUM, text.LOWER, 0, True),
        ("abcd", text.LOWER, None, 4, True),
        ("abcde", text.LOWER, None, 4, False),
        ("deadbeef", text.HEX, None, 0, True),
        ("DEADBEEF", text.HEX, None, 0, False),
    ],
)
def test_made_of_checks_characters_first_character_and_length(value, allowed, first, max_len, ok) -> None:
    assert text.made_of(value, allowed, first=first, max_len=max_len) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [("0", True), ("123", True), ("007", True), ("", False), ("-1", False), ("1.0", False), ("1a", False)],
)
def test_is_number_accepts_only_decimal_digits(value: str, ok: bool) -> None:
    assert text.is_number(value) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("a", True),
        ("web", True),
        ("web-1", True),
        ("Web01", True),
        ("1web", True),
        ("db.example.com", True),
        ("a" * 63, True),
        (".".join(["a" * 63] * 3) + "." + "a" * 61, True),  # 253 characters
        ("", False),
        ("a" * 64, False),
        (".".join(["a" * 63] * 4), False),  # 255 characters
        ("-lead", False),
        ("trail-", False),
        ("bad_host!", False),
        ("under_score", False),
        ("a..b", False),
        (".a", False),
        ("a.", False),
        ("a.-b", False),
        ("sp ace", False),
    ],
)
def test_is_hostname_follows_rfc_1123(value: str, ok: bool) -> None:
    assert text.is_hostname(value) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("busybox", True),
        ("library/busybox", True),
        ("my-app", True),
        ("my_app.v2", True),
        ("a/b/c", True),
        ("alpine3", True),
        ("", False),
        ("Busybox", False),
        ("-lead", False),
        ("trail.", False),
        ("_x", False),
        ("a//b", False),
        ("/abs", False),
        ("a/", False),
        ("..", False),
        ("a/../b", False),
        ("with space", False),
        ("name:tag", False),
        ("host:5000/x", False),
    ],
)
def test_is_image_name_accepts_lowercase_path_components(value: str, ok: bool) -> None:
    assert text.is_image_name(value) is ok
