"""Batch norm with gradient accumulation on the built-in digits: the table of docs/accumulation.md.

Trains a small MLP (64-128-64-10, batch norm after both hidden layers) with an
effective batch of 64 in four ways: one batch of 64; 4 x accumulate 16 with
plain batch norm (each micro-batch of 4 normalized by its own statistics); one
batch of 64 with ghost batch norm of 4 (the same thing in one pass); and
4 x accumulate 16 with batch renorm (r_max 3, d_max 5, ramped over the first
half of training: ``warmup_steps`` = 10 x epochs).  For each seed it reports the test accuracy with the
moving averages (``eval --stats ema``) and with the recomputed whole-set
statistics (``--stats population``), and the gap between the two sets of
statistics (``recompute-stats``' report: mean over channels of
``|mean_ema - mean| / std``, max over layers).

Usage: ``python scripts/accumulation_study.py [--seeds 2] [--epochs 8] [--out DIR]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import textwrap
from pathlib import Path

from bntrain.commands.eval import evaluate_command
from bntrain.commands.recompute import recompute_stats_command
from bntrain.config import load_config
from bntrain.train import fit

CONFIG = textwrap.dedent(
    """\
    name: study
    data:
      train: {builtin: digits, split: train}
      test: {builtin: digits, split: test}
      preprocess: {scale: 0.0625}
    model:
      batch_norm: {insert: auto, alpha: 0.1}
      layers:
        - {type: dense, units: 128, nonlinearity: relu}
        - {type: dense, units: 64, nonlinearity: relu}
        - {type: dense, units: 10, nonlinearity: softmax}
    training:
      epochs: 8
      batch_size: 64
      optimizer: {name: nesterov, lr: 0.1, momentum: 0.9, weight_decay: 1.0e-4}
      schedule: {name: cosine}
      recompute_stats: false
      best_metric: val_loss
    """
)

VARIANTS = {
    "batch 64, BN": [],
    "4 x accumulate 16, BN": ["training.batch_size=4", "training.accumulate=16"],
    "batch 64, ghost BN (V=4)": ["model.batch_norm.virtual_batch_size=4"],
    "4 x accumulate 16, renorm": [
        "training.batch_size=4",
        "training.accumulate=16",
        "model.batch_norm.kind=renorm",
    ],
}


def run_one(folder: Path, name: str, sets: list[str], seed: int, epochs: int) -> dict:
    """Train one variant with one seed; return its accuracies and statistics gap."""
    out = folder / f"{list(VARIANTS).index(name)}_{seed}"
    sets = [*sets, f"training.seed={seed}", f"training.epochs={epochs}", f"output.dir={out}"]
    if "model.batch_norm.kind=renorm" in sets:  # ~20 optimizer steps an epoch: ramp over half
        sets.append(f"model.batch_norm.warmup_steps={10 * epochs}")
    fit(load_config(folder / "study.yaml", sets), force=True)
    ckpt = out / "last.h5"
    report = recompute_stats_command(ckpt)
    gap = max(layer.mean_rel_diff_mean for layer in report.layers)
    accs = {s: evaluate_command(ckpt, stats=s)["accuracy"] for s in ("ema", "population")}
    return {"ema": accs["ema"], "population": accs["population"], "gap": gap}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    folder = args.out or Path(tempfile.mkdtemp(prefix="bntrain-study-"))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "study.yaml").write_text(CONFIG)
    print(f"digits MLP, {args.epochs} epochs, seeds 0..{args.seeds - 1} (mean over seeds)\n")
    print("| variant | test acc (ema) | test acc (population) | EMA-vs-recomputed mean gap |")
    print("|---|---|---|---|")
    for name, sets in VARIANTS.items():
        rows = [run_one(folder, name, sets, seed, args.epochs) for seed in range(args.seeds)]
        ema, pop, gap = (statistics.mean(r[k] for r in rows) for k in ("ema", "population", "gap"))
        print(f"| {name} | {ema:.4f} | {pop:.4f} | {gap:.3f} |", flush=True)


if __name__ == "__main__":
    main()
