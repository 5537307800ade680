"""Command-line parsing in Docker's style, without argparse.

Docker's rules: options come first, then positionals, and after the last
positional everything is the container's command (``hako run -it busybox ls
-l``). Short flags combine (``-dit``), values attach (``-eA=1``, ``--name=x``)
or follow, ``--`` ends the options. argparse cannot stop at a positional and
costs more to import than a container takes to start, so this small parser
does the job for every hako command.
"""

from __future__ import annotations

from .errors import HakoError


class UsageError(HakoError):
    """A command line hako cannot make sense of."""


class HelpRequested(Exception):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class Namespace:
    def __repr__(self) -> str:
        return f"Namespace({vars(self)!r})"


class Command:
    """The options and positionals of one hako command."""

    def __init__(self, name: str, summary: str) -> None:
        self.name = name
        self.summary = summary
        self._options: list[tuple[tuple[str, ...], str, str, object, str]] = []
        self._by_name: dict[str, tuple[tuple[str, ...], str, str, object, str]] = {}
        self._positionals: list[tuple[str, str, str]] = []
        self._rest: str | None = None

    def _add(self, names: tuple[str, ...], kind: str, dest: str | None, default: object, help: str) -> None:
        dest = dest or names[-1].lstrip("-").replace("-", "_")
        option = (names, kind, dest, default, help)
        self._options.append(option)
        for name in names:
            self._by_name[name] = option

    def flag(self, *names: str, dest: str | None = None, help: str = "") -> Command:
        self._add(names, "flag", dest, False, help)
        return self

    def value(self, *names: str, dest: str | None = None, default: object = None, help: str = "") -> Command:
        self._add(names, "value", dest, default, help)
        return self

    def many(self, *names: str, dest: str | None = None, help: str = "") -> Command:
        """An option that may be given several times; its values form a list."""
        self._add(names, "many", dest, None, help)
        return self

    def positional(self, dest: str, nargs: str = "1", help: str = "") -> Command:
        """nargs: "1", "?" (optional), "+" (one or more) or "*" (any number)."""
        self._positionals.append((dest, nargs, help))
        return self

    def rest(self, dest: str) -> Command:
        """After the positionals, everything else goes to ``dest`` untouched."""
        self._rest = dest
        return self

    # Parsing ---------------------------------------------------------------
    def parse(self, argv: list[str]) -> Namespace:
        result = Namespace()
        for _names, kind, dest, default, _help in self._options:
            setattr(result, dest, [] if kind == "many" else default)
        positionals: list[str] = []
        wanted = self._fixed_positionals()
        i = 0
        while i < len(argv):
            arg = argv[i]
            if self._rest is not None and wanted is not None and len(positionals) >= wanted:
                break
            if arg == "--":
                i += 1
                if self._rest is None:
                    positionals += argv[i:]
                    i = len(argv)
                else:
                    need = max(0, (wanted or 0) - len(positionals))
                    positionals += argv[i : i + need]
                    i += need
                break
            if arg in ("--help", "-h") and arg not in self._by_name:
                raise HelpRequested(self.help())
            if arg.startswith("--"):
                name, has_value, value = arg.partition("=")
                option = self._option(name)
                if option[1] == "flag":
                    if has_value:
                        raise UsageError(f"hako {self.name}: flag {name} takes no value")
                    setattr(result, option[2], True)
                else:
                    if not has_value:
                        i += 1
                        value = self._value_at(argv, i, name)
                    self._store(result, option, value)
            elif arg.startswith("-") and len(arg) > 1:
                j = 1
                while j < len(arg):
                    name = "-" + arg[j]
                    option = self._option(name)
                    if option[1] == "flag":
                        setattr(result, option[2], True)
                        j += 1
                        continue
                    value = arg[j + 1 :]
                    if value.startswith("="):
                        value = value[1:]
                    if not value:
                        i += 1
                        value = self._value_at(argv, i, name)
                    self._store(result, option, value)
                    break
            else:
                positionals.append(arg)
            i += 1
        self._assign_positionals(result, positionals)
        if self._rest is not None:
            setattr(result, self._rest, argv[i:])
        return result

    def _fixed_positionals(self) -> int | None:
        if any(nargs in ("+", "*", "?") for _, nargs, _ in self._positionals):
            return None
        return len(self._positionals)

    def _option(self, name: str):
        option = self._by_name.get(name)
        if option is None:
            raise UsageError(f"hako {self.name}: unknown flag: {name}")
        return option

    def _value_at(self, argv: list[str], i: int, name: str) -> str:
        if i >= len(argv):
            raise UsageError(f"hako {self.name}: flag needs an argument: {name}")
        return argv[i]

    @staticmethod
    def _store(result: Namespace, option, value: str) -> None:
        if option[1] == "many":
            getattr(result, option[2]).append(value)
        else:
            setattr(result, option[2], value)

    def _assign_positionals(self, result: Namespace, values: list[str]) -> None:
        values = list(values)
        for index, (dest, nargs, _help) in enumerate(self._positionals):
            later_required = sum(1 for _, n, _ in self._positionals[index + 1 :] if n in ("1", "+"))
            if nargs == "1":
                if not values:
                    raise UsageError(f"hako {self.name}: requires {self._usage_args()}")
                setattr(result, dest, values.pop(0))
            elif nargs == "?":
                setattr(result, dest, values.pop(0) if len(values) > later_required else None)
            else:
                take = max(0, len(values) - later_required)
                if nargs == "+" and take == 0:
                    raise UsageError(f"hako {self.name}: requires {self._usage_args()}")
                setattr(result, dest, values[:take])
                values = values[take:]
        if values:
            raise UsageError(f"hako {self.name}: unexpected argument {values[0]!r}")

    # Help ------------------------------------------------------------------
    def _usage_args(self) -> str:
        parts = []
        for dest, nargs, _ in self._positionals:
            word = dest.upper()
            parts.append(
                {"1": word, "?": f"[{word}]", "+": f"{word} [{word}...]", "*": f"[{word}...]"}[nargs]
            )
        if self._rest:
            parts.append(f"[{self._rest.upper()} [ARG...]]")
        return " ".join(parts)

    def help(self) -> str:
        lines = [f"Usage: hako {self.name} [OPTIONS] {self._usage_args()}".rstrip(), "", self.summary]
        if self._options:
            lines += ["", "Options:"]
            for names, kind, _dest, default, help in self._options:
                text = ", ".join(names) + ("" if kind == "flag" else " VALUE")
                note = f"{help} (default {default})" if default not in (None, False) else help
                lines.append(f"  {text:<28} {note}".rstrip())
        return "\n".join(lines)
