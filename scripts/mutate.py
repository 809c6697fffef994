#!/usr/bin/env python
"""Mutation testing: break one thing in a copy of bntrain, run the tests that should notice.

Each mutation in ``scripts/mutations.toml`` names a file, an exact source snippet that must
occur in it exactly once, its replacement, and the tests that should fail once it is applied.
For each selected mutation this script copies the repository to a temporary folder, applies
the mutation there, runs the named tests with the copy first on ``PYTHONPATH`` and reports
``caught`` (a test failed) or ``survived`` (all passed).

    python scripts/mutate.py                 # every mutation
    python scripts/mutate.py --fast          # the subset marked fast (scripts/test.sh runs it)
    python scripts/mutate.py --only grad-negated --only l2-dropped
    python scripts/mutate.py --list          # ids, files and descriptions; runs nothing
    python scripts/mutate.py --markdown      # also print the results as a Markdown table

Exit status: 0 when every mutation run was caught; 1 when one survived or its tests could not
run (collection error, timeout); 2 when a snippet is not found exactly once (the code moved:
update the list) or the list itself is malformed.  See docs/testing.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTATIONS_FILE = ROOT / "scripts" / "mutations.toml"
KEYS = {"id", "description", "file", "find", "replace", "tests", "fast"}
COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv*", "__pycache__", "*.egg-info", "runs", ".pytest_cache", ".ruff_cache", "build"
)
#: pytest exit codes: 0 all passed, 1 some failed; anything else means the tests did not run.
PASSED, FAILED = 0, 1


class ListError(Exception):
    """The mutation list is malformed or out of date with the code (exit 2)."""


@dataclass(frozen=True)
class Mutation:
    id: str
    description: str
    file: str
    find: str
    replace: str
    tests: tuple[str, ...]
    fast: bool = False

    def count_in(self, root: Path) -> int:
        """How often the snippet occurs in the mutated file under ``root``."""
        path = root / self.file
        if not path.is_file():
            return 0
        return path.read_text().count(self.find)

    def apply(self, root: Path) -> None:
        """Rewrite the file under ``root`` (the snippet must occur exactly once)."""
        path = root / self.file
        text = path.read_text()
        n = text.count(self.find)
        if n != 1:
            raise ListError(stale_message(self, n))
        path.write_text(text.replace(self.find, self.replace))


def stale_message(m: Mutation, count: int) -> str:
    return (
        f"mutation {m.id!r}: its snippet occurs {count} times in {m.file} (expected exactly "
        "once); the code moved: update its entry in scripts/mutations.toml"
    )


def load_mutations(path: Path = MUTATIONS_FILE) -> list[Mutation]:
    """Read and check the mutation list (unique ids, known keys, a test to run each)."""
    with open(path, "rb") as fh:
        entries = tomllib.load(fh).get("mutation", [])
    out: list[Mutation] = []
    for i, entry in enumerate(entries):
        where = f"{path.name}: mutation #{i + 1} ({entry.get('id', '?')})"
        unknown = set(entry) - KEYS
        missing = KEYS - {"fast"} - set(entry)
        if unknown or missing:
            raise ListError(f"{where}: unknown keys {sorted(unknown)}, missing {sorted(missing)}")
        if not entry["tests"]:
            raise ListError(f"{where}: names no tests")
        if entry["find"] == entry["replace"]:
            raise ListError(f"{where}: the replacement equals the snippet")
        out.append(Mutation(**{**entry, "tests": tuple(entry["tests"])}))
    ids = [m.id for m in out]
    dup = sorted({x for x in ids if ids.count(x) > 1})
    if dup:
        raise ListError(f"{path.name}: duplicate mutation ids {dup}")
    return out


def check_snippets(mutations: list[Mutation], root: Path = ROOT) -> list[str]:
    """One message per mutation whose snippet does not occur exactly once."""
    return [stale_message(m, n) for m in mutations if (n := m.count_in(root)) != 1]


def test_files(m: Mutation) -> list[str]:
    """The test files a mutation names (node ids and ``-k`` suffixes stripped)."""
    return sorted({t.split("::")[0].split(" ")[0] for t in m.tests})


def run_one(m: Mutation, python: str, timeout: float, verbose: bool) -> tuple[str, float, str]:
    """Apply ``m`` to a fresh copy and run its test entries in turn until one fails.

    Each entry of ``m.tests`` is one pytest run (so that its ``-k`` applies to it alone).
    Returns ``(result, seconds, output tail)``.
    """
    with tempfile.TemporaryDirectory(prefix=f"mutate-{m.id}-") as tmp:
        copy = Path(tmp) / "repo"
        shutil.copytree(ROOT, copy, ignore=COPY_IGNORE)
        m.apply(copy)
        env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
        t0 = time.monotonic()
        tail = ""
        for entry in m.tests:
            cmd = [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *entry.split()]
            left = timeout - (time.monotonic() - t0)
            try:
                proc = subprocess.run(
                    cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=max(left, 1)
                )
            except subprocess.TimeoutExpired:
                return "timeout", time.monotonic() - t0, ""
            output = proc.stdout + proc.stderr
            if verbose:
                print(output)
            tail = "\n".join(output.strip().splitlines()[-3:])
            if proc.returncode == FAILED:
                return "caught", time.monotonic() - t0, tail
            if proc.returncode != PASSED:
                return f"error (pytest exit {proc.returncode})", time.monotonic() - t0, tail
        return "survived", time.monotonic() - t0, tail


def markdown_table(rows: list[tuple[Mutation, str, float]]) -> str:
    lines = [
        "| id | file | what breaks | tests | result | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for m, result, seconds in rows:
        tests = ", ".join(f"`{t}`" for t in m.tests)
        lines.append(
            f"| `{m.id}` | `{m.file}` | {m.description} | {tests} | {result} | {seconds:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--fast", action="store_true", help="only the mutations marked fast")
    parser.add_argument("--only", action="append", default=[], metavar="ID", help="run only ID")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per mutation")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown results table")
    parser.add_argument("-v", "--verbose", action="store_true", help="show pytest's output")
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs pytest")
    args = parser.parse_args(argv)
    try:
        mutations = load_mutations(MUTATIONS_FILE)
        known = {m.id for m in mutations}
        unknown = [i for i in args.only if i not in known]
        if unknown:
            raise ListError(f"--only: unknown mutation id(s) {unknown}; see --list")
        if args.only:
            mutations = [m for m in mutations if m.id in args.only]
        if args.fast:
            mutations = [m for m in mutations if m.fast]
        stale = check_snippets(mutations)
        if stale:
            raise ListError("\n".join(stale))
    except ListError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.list:
        for m in mutations:
            flag = " [fast]" if m.fast else ""
            print(f"{m.id}{flag}  ({m.file})\n    {m.description}\n    tests: {' '.join(m.tests)}")
        return 0
    rows = []
    for m in mutations:
        result, seconds, tail = run_one(m, args.python, args.timeout, args.verbose)
        rows.append((m, result, seconds))
        print(f"{m.id:28s} {result:10s} {seconds:6.0f}s", flush=True)
        if result not in ("caught", "survived") and tail:
            print("    " + tail.replace("\n", "\n    "), flush=True)
    caught = sum(r == "caught" for _, r, _ in rows)
    print(f"{caught} of {len(rows)} mutations caught")
    if args.markdown:
        print(markdown_table(rows))
    return 0 if caught == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
