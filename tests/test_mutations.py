"""The mutation list of scripts/mutate.py stays in step with the code (nothing is run here).

A snippet that no longer occurs exactly once means the code moved: update
scripts/mutations.toml (docs/testing.md says how).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_mutate():
    spec = importlib.util.spec_from_file_location("bntrain_mutate", ROOT / "scripts" / "mutate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up by name
    spec.loader.exec_module(module)
    return module


mutate = _load_mutate()
MUTATIONS = mutate.load_mutations()

AUDIT = {  # the 18 mutations of issue #10's audit
    "grad-negated",
    "l2-dropped",
    "schedule-not-applied",
    "bn-alpha-ignored",
    "conv-flip-from-config",
    "fit-recompute-options",
    "bn-stats-data-provenance",
    "dense-b-before-W",
    "bn-variance-unbiased",
    "chan-merge-cross-term",
    "bn-ema-swapped",
    "population-unbiased",
    "batch-mean-biased",
    "conv-flip-in-layer",
    "ckpt-attr-epsilon",
    "ckpt-attr-flip-filters",
    "jax-last-batch-unmerged",
    "jax-mean-uncorrected",
}


def test_the_audit_mutations_are_listed_and_a_fast_subset_exists():
    ids = {m.id for m in MUTATIONS}
    assert AUDIT <= ids, sorted(AUDIT - ids)
    assert 1 <= sum(m.fast for m in MUTATIONS) <= 5


@pytest.mark.parametrize("m", MUTATIONS, ids=lambda m: m.id)
def test_snippet_applies_exactly_once_and_tests_exist(m, tmp_path):
    assert mutate.check_snippets([m]) == []
    for path in mutate.test_files(m):
        assert (ROOT / path).is_file(), f"{m.id}: test file {path} does not exist"
    # applying to a copy changes the file by exactly the replacement
    copy = tmp_path / m.file
    copy.parent.mkdir(parents=True)
    original = (ROOT / m.file).read_text()
    copy.write_text(original)
    m.apply(tmp_path)
    mutated = copy.read_text()
    assert mutated != original and mutated.count(m.replace) >= 1


def test_a_stale_snippet_stops_the_run_with_exit_2(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "mutations.toml"
    stale.write_text(
        "[[mutation]]\n"
        "id = 'gone'\n"
        "description = 'code that is not there'\n"
        "file = 'bntrain/graphs.py'\n"
        "find = 'this line is not in graphs.py'\n"
        "replace = 'x'\n"
        "tests = ['tests/test_mutations.py']\n"
    )
    monkeypatch.setattr(mutate, "MUTATIONS_FILE", stale)
    assert mutate.main(["--list"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "error: mutation 'gone': its snippet occurs 0 times in bntrain/graphs.py (expected "
        "exactly once); the code moved: update its entry in scripts/mutations.toml\n"
    )


def test_unknown_only_id_is_refused(capsys):
    assert mutate.main(["--only", "no-such-mutation", "--list"]) == 2
    assert "unknown mutation id(s) ['no-such-mutation']" in capsys.readouterr().err
