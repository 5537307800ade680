"""Errors that hako reports to people: one line, naming what was wrong."""

from __future__ import annotations


class HakoError(Exception):
    """An error meant for the user: its message is one clear line.

    ``exit_code`` follows Docker's conventions: 125 for errors of hako itself
    (bad input, unknown image, a kernel refusal), 126 when the command cannot
    be invoked and 127 when it cannot be found.
    """

    exit_code = 125


class InvalidValue(HakoError):
    """A field has a value hako cannot use."""

    def __init__(self, field: str, value: object, why: str = "") -> None:
        self.field = field
        self.value = value
        text = f"invalid value for {field}: {value!r}"
        if why:
            text += f" ({why})"
        super().__init__(text)


class NotFound(HakoError):
    """A container, image or other object does not exist."""


class Conflict(HakoError):
    """The request conflicts with what exists (a name in use, a running container)."""


class MissingLibrary(HakoError):
    """A Python library an operation needs is not installed (``library`` names it)."""

    def __init__(self, library: str, message: str) -> None:
        self.library = library
        super().__init__(message)


class CommandNotFound(HakoError):
    exit_code = 127


class CommandNotExecutable(HakoError):
    exit_code = 126
