"""Run the escape catalogue and write its side-by-side table into docs/SECURITY.md.

    python3 tests/security/report.py                  # run the catalogue (as root), rewrite the table
    python3 tests/security/report.py --keep r.json    # ... and keep the raw outcomes
    python3 tests/security/report.py --results r.json # rewrite the table from outcomes kept before

The catalogue runs as its tests do (pytest tests/security, with
HAKO_SECURITY_RESULTS naming a file for the outcomes): hako default, hako
--privileged for the admin tasks, Podman default. Only the part of
docs/SECURITY.md between the catalogue markers is rewritten.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.security.catalogue import ATTEMPTS  # noqa: E402

BEGIN = "<!-- catalogue:begin (written by tests/security/report.py) -->"
END = "<!-- catalogue:end -->"
COMMAND = "sudo python3 tests/security/report.py"


def run_catalogue(results: str) -> int:
    pytest = REPO / ".venv" / "bin" / "pytest"
    command = [str(pytest)] if pytest.exists() else [sys.executable, "-m", "pytest"]
    env = dict(os.environ, HAKO_SECURITY_RESULTS=results)
    return subprocess.run(
        [*command, "tests/security", "-q", "-p", "no:cacheprovider"], cwd=REPO, env=env
    ).returncode


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def errno_of(expect: str) -> str:
    match = re.match(r"\^\(?([A-Z|]+)\)?[ \\]", expect)
    return match.group(1).replace("|", " or ") if match else "/" + expect + "/"


def default_cell(attempt, outcome: dict | None, ours: bool) -> str:
    if outcome is None:
        return "not run"
    kind, message = outcome["kind"], cell(outcome["message"])
    if kind == "blocked":
        if ours and not re.search(attempt.expect, outcome["message"]):
            return f"blocked, but not as expected ({errno_of(attempt.expect)}): {message}"
        return f"blocked: {message}"
    if kind == "succeeded":
        return f"**ESCAPED**: {message}"
    if kind == "absent":
        return f"n/a: {message}"
    return f"not run: {message}"


def privileged_cell(attempt, outcome: dict | None) -> str:
    if not attempt.admin:
        return ""
    if outcome is None:
        return f"not run ({cell(attempt.admin)})"
    if outcome["kind"] == "succeeded":
        return f"succeeds: {cell(outcome['message'])}"
    return f"**fails** ({cell(attempt.admin)}): {cell(outcome['message'])}"


def table(data: dict) -> str:
    outcomes = data["outcomes"]
    hako, podman, privileged = (outcomes.get(k, {}) for k in ("hako", "podman", "hako-privileged"))
    v = data["versions"]
    lines = [
        BEGIN,
        "",
        f"Produced by `{COMMAND}` on {data.get('date', '?')}: kernel {v['kernel']} ({v['machine']}), "
        f"hako at commit {v['hako']}, {v['podman']} with {v['runc']}.",
        "",
    ]
    counts = {
        name: {
            k: sum(1 for o in runs.values() if o["kind"] == k)
            for k in ("blocked", "succeeded", "absent", "error")
        }
        for name, runs in (("hako", hako), ("podman", podman))
    }
    as_expected = sum(
        1
        for a in ATTEMPTS
        if a.id in hako and hako[a.id]["kind"] == "blocked" and re.search(a.expect, hako[a.id]["message"])
    )
    missed = [
        a.id
        for a in ATTEMPTS
        if podman.get(a.id, {}).get("kind") == "blocked"
        and hako.get(a.id, {}).get("kind") not in ("blocked", "absent")
    ]
    admin = [a for a in ATTEMPTS if a.admin]
    admin_ok = sum(1 for a in admin if privileged.get(a.id, {}).get("kind") == "succeeded")
    lines += [
        f"- {len(ATTEMPTS)} attempts. hako default: {counts['hako']['blocked']} blocked "
        f"({as_expected} with the expected error), {counts['hako']['succeeded']} escaped, "
        f"{counts['hako']['absent']} n/a on this kernel, {counts['hako']['error']} not run.",
        f"- Podman default: {counts['podman']['blocked']} blocked, {counts['podman']['succeeded']} escaped, "
        f"{counts['podman']['absent']} n/a, {counts['podman']['error']} not run.",
        "- Blocked by Podman but not by hako: "
        + (", ".join(f"`{m}`" for m in missed) if missed else "none")
        + ".",
        f"- hako `--privileged`: {admin_ok} of {len(admin)} admin tasks succeed.",
        "",
        "| # | attempt | what it tries | hako default | Podman default | hako `--privileged` (admin tasks) |",
        "|---|---|---|---|---|---|",
    ]
    for number, attempt in enumerate(ATTEMPTS, 1):
        options = " ".join(o.replace("{volume}", "HOSTDIR") for o in attempt.options)
        tries = cell(attempt.tries) + (f" (`{options}`)" if options and "with " not in attempt.tries else "")
        lines.append(
            f"| {number} | `{attempt.id}`: {cell(attempt.title)} | {tries} "
            f"| {default_cell(attempt, hako.get(attempt.id), True)} "
            f"| {default_cell(attempt, podman.get(attempt.id), False)} "
            f"| {privileged_cell(attempt, privileged.get(attempt.id))} |"
        )
    lines += ["", END]
    return "\n".join(lines)


def write(doc: Path, text: str) -> None:
    current = doc.read_text()
    start, end = current.index(BEGIN), current.index(END) + len(END)
    doc.write_text(current[:start] + text + current[end:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "SECURITY.md"), help="the document to update")
    parser.add_argument("--results", help="outcomes kept by an earlier run (do not run the catalogue)")
    parser.add_argument("--keep", help="keep this run's outcomes in this file")
    args = parser.parse_args(argv)
    status = 0
    if args.results:
        data = json.loads(Path(args.results).read_text())
    else:
        if os.geteuid() != 0:
            parser.error("the catalogue runs containers: run it as root")
        with tempfile.TemporaryDirectory() as tmp:
            results = args.keep or os.path.join(tmp, "outcomes.json")
            status = run_catalogue(results)
            data = json.loads(Path(results).read_text())
        data["date"] = datetime.date.today().isoformat()
        if args.keep:
            Path(args.keep).write_text(json.dumps(data, indent=1))
    write(Path(args.out), table(data))
    print(f"report: wrote the table into {args.out} (the catalogue's tests exited {status})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
