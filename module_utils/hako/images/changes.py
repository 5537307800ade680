"""Dockerfile instructions applied to an image config (`hako commit -c`, `hako import -c`).

Docker accepts CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER,
VOLUME and WORKDIR there; hako takes the ones a container start honours.
"""

from __future__ import annotations

from .. import lean
from ..errors import InvalidValue

INSTRUCTIONS = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR")


def apply(config: dict, changes: list[str]) -> dict:
    """A copy of the image config's ``config`` part with each change applied in order."""
    out = dict(config)
    for change in changes:
        keyword, _, value = change.strip().partition(" ")
        keyword, value = keyword.upper(), value.strip()
        if keyword not in INSTRUCTIONS:
            raise InvalidValue("change", change, f"expected one of {', '.join(INSTRUCTIONS)}")
        if not value:
            raise InvalidValue("change", change, f"{keyword} needs a value")
        if keyword in ("CMD", "ENTRYPOINT"):
            out["Cmd" if keyword == "CMD" else "Entrypoint"] = _command(change, value)
        elif keyword in ("ENV", "LABEL"):
            key = "Env" if keyword == "ENV" else "Labels"
            pairs = _pairs(change, value)
            if keyword == "ENV":
                env = {e.partition("=")[0]: e for e in out.get("Env") or []}
                env.update({k: f"{k}={v}" for k, v in pairs})
                out[key] = list(env.values())
            else:
                out[key] = {**(out.get("Labels") or {}), **dict(pairs)}
        elif keyword in ("EXPOSE", "VOLUME"):
            key = "ExposedPorts" if keyword == "EXPOSE" else "Volumes"
            items = value.split()
            if keyword == "EXPOSE":
                items = [p if "/" in p else p + "/tcp" for p in items]
            out[key] = {**(out.get(key) or {}), **{i: {} for i in items}}
        else:
            out[{"STOPSIGNAL": "StopSignal", "USER": "User", "WORKDIR": "WorkingDir"}[keyword]] = value
    return out


def _command(change: str, value: str) -> list[str]:
    """JSON form ["a", "b"] as it is; shell form through /bin/sh -c, as Docker does."""
    if value.startswith("["):
        try:
            parsed = lean.loads(value)
        except ValueError:
            parsed = None
        if not isinstance(parsed, list) or not all(isinstance(a, str) for a in parsed):
            raise InvalidValue("change", change, 'the JSON form is a list of strings: ["cmd", "arg"]')
        return parsed
    return ["/bin/sh", "-c", value]


def _pairs(change: str, value: str) -> list[tuple[str, str]]:
    """KEY=value pairs (quoted values may hold spaces), or the old form 'KEY value'."""
    import shlex

    if "=" not in value.split()[0]:
        key, _, rest = value.partition(" ")
        return [(key, rest.strip())]
    pairs = []
    try:
        words = shlex.split(value)
    except ValueError as e:
        raise InvalidValue("change", change, str(e)) from None
    for word in words:
        key, eq, val = word.partition("=")
        if not eq or not key:
            raise InvalidValue("change", change, f"{word!r} is not KEY=value")
        pairs.append((key, val))
    return pairs
