"""``scripts/bench.py``: the smoke run produces every column; the models match on both sides."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "scripts" / "bench.py"
TORCH_PY = ROOT / ".venv-torch" / "bin" / "python"


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_under_test", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


def _has_torch() -> bool:
    return TORCH_PY.exists() or importlib.util.find_spec("torch") is not None


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One ``bench.py --smoke`` run (MLP only, batch 6, to stay fast); its table and JSON."""
    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--smoke",
            "--models",
            "mlp",
            "--batch",
            "6",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


def test_batch_option_reaches_both_sides(smoke):
    _, result = smoke
    runs = [r for key, rs in result["raw"].items() for r in rs if r]
    assert runs and {r["batch"] for r in runs} == {6}
    assert {r["framework"] for r in runs} == (
        {"bntrain", "pytorch"} if _has_torch() else {"bntrain"}
    )


def _is_number(text: str) -> bool:
    try:
        float(text.rstrip("%"))
    except ValueError:
        return False
    return True


def test_smoke_prints_every_column(smoke):
    stdout, result = smoke
    assert "| " + " | ".join(bench.COLUMNS) + " |" in stdout
    assert "| " + " | ".join(bench.RECOMPUTE_COLUMNS) + " |" in stdout
    rows = {r["framework"]: r for r in result["rows"]}
    assert set(rows) == {"bntrain", "pytorch"}
    ours = rows["bntrain"]
    assert ours["model"] == "MLP-BN" and ours["backend"] == "jax"
    for col in ("samples/s", "MFU", "peak MiB", "first step s"):
        assert _is_number(ours[col]), (col, ours[col])
    assert ours["MFU"].endswith("%")
    assert float(ours["peak MiB"]) > 50  # ru_maxrss of a process that imported PyTensor
    theirs = rows["pytorch"]
    if _has_torch():  # .venv-torch exists: the PyTorch side ran too
        for col in ("samples/s", "MFU", "peak MiB", "first step s"):
            assert _is_number(theirs[col]), (col, theirs[col])
        assert theirs["backend"] == "eager-cpu"
        assert _is_number(ours["ratio"])
        expected = float(ours["samples/s"]) / float(theirs["samples/s"])
        assert float(ours["ratio"]) == pytest.approx(expected, rel=0.02, abs=0.01)
    else:
        assert theirs["samples/s"] == "n/a" and ours["ratio"] == "n/a"
    for row in result["rows"]:
        line = "| " + " | ".join(str(row[c]) for c in bench.COLUMNS) + " |"
        assert line in stdout


def test_smoke_recompute_and_quickstart_rows(smoke):
    _, result = smoke
    measures = {r["measure"]: r for r in result["extra"]}
    rec = measures["recompute-stats / inference pass (MLP-BN)"]
    assert _is_number(rec["ratio"])  # recompute time = total - compile: may be ~0 when tiny
    raw = rec["raw"]
    assert raw["examples"] == 64 and raw["inference_s"] > 0
    assert raw["ratio"] == pytest.approx(raw["recompute_s"] / raw["inference_s"])
    assert rec["ratio"] == f"{raw['ratio']:.2f}"
    qs = measures["quick start: time to first step (default cache)"]
    assert qs["backend"] == "jax"
    assert 0 < float(qs["bntrain s"]) < 200
    assert "AMD" in result["machine"] or "CPU:" in result["machine"]
    assert result["sgemm_gflops"] > 0.1


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("mlp", 784 * 512 + 2 * 512 * 512 + 512 * 10),
        ("cnn", 32 * 32 * 32 * 27 + 16 * 16 * 64 * 32 * 9 + 64 * 8 * 8 * 10),
    ],
)
def test_model_macs_by_hand(name, expected):
    assert bench.model_macs(bench.SPECS[name]) == expected
    assert bench.train_flops_per_example(bench.SPECS[name]) == 6 * expected


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet"])
def test_model_macs_match_the_built_network(name):
    """Count MACs from the bntrain layers' weight and output shapes (no compilation)."""
    from bntrain.nn import layers as L

    for specs in (bench.SPECS, bench.SMOKE_SPECS):
        net = bench.build_bntrain_network(specs[name])
        macs = 0
        for layer in L.get_all_layers(net.output_layer):
            if isinstance(layer, L.DenseLayer):
                macs += int(np.prod(layer.W.get_value().shape))
            elif isinstance(layer, L.Conv2DLayer):
                h, w = layer.output_shape[2:]
                macs += int(np.prod(layer.W.get_value().shape)) * h * w
        assert macs == bench.model_macs(specs[name])
        assert net.output_layer.output_shape == (None, specs[name]["classes"])


@pytest.mark.skipif(not TORCH_PY.exists(), reason="no .venv-torch (scripts/bench_setup.sh)")
def test_same_parameter_counts_in_pytorch():
    """Both sides train the same model: equal trainable-parameter counts per spec."""
    from bntrain.nn import layers as L

    code = (
        "import json, sys; sys.path.insert(0, 'scripts'); import bench_torch; "
        "specs = json.loads(sys.argv[1]); "
        "print(json.dumps({k: sum(p.numel() for p in bench_torch.build_model(s).parameters()) "
        "for k, s in specs.items()}))"
    )
    out = subprocess.run(
        [str(TORCH_PY), "-c", code, json.dumps(bench.SPECS)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=True,
    )
    torch_counts = json.loads(out.stdout)
    for name, spec in bench.SPECS.items():
        net = bench.build_bntrain_network(spec)
        ours = L.count_params(net.output_layer, trainable=True)
        assert ours == torch_counts[name], name


def test_traffic_report_smoke():
    """JAX mode keeps parameters and optimizer state on the device; a partial batch compiles once."""
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--traffic"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = dict(
        line.strip().split(": ", 1) for line in proc.stdout.splitlines() if line.startswith("  ")
    )
    assert report["param_state_bytes_copied_per_step"] == "0"
    assert int(report["on_host_before_first_call"]) > 0  # the check can see host storage
    n_vars = int(report["param_vars"]) + int(report["state_vars"])
    assert int(report["param_state_vars_held_as_jax_arrays"]) == n_vars
    assert int(report["compiles_in_12_steps_alternating_full_partial"]) <= 1
    assert report["input_bytes_per_step"] == str(8 * 20 * 4 + 8 * 4)


def test_fit_smoke_fills_the_bntrain_columns(tmp_path):
    out = tmp_path / "fit.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--fit", "--smoke", "--models", "cnn",
         "--torch-python", str(tmp_path / "no-python"), "--json", str(out)],
        capture_output=True, text=True, timeout=400, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_fit import FIT_COLUMNS

    assert "| " + " | ".join(FIT_COLUMNS) + " |" in proc.stdout
    (row,) = json.loads(out.read_text())["rows"]
    for key in ("step only", "fit", "fit / step", "fit + augment", "augment / plain"):
        assert _is_number(row[key]), (key, row[key])
    assert row["PyTorch loop"] == "n/a" and row["fit / PyTorch"] == "n/a"


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_fit_config_builds_the_benchmark_model(name, tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_fit import fit_config

    from bntrain.config import parse_config
    from bntrain.model import build_network
    from bntrain.nn import layers as L

    spec = bench.SPECS[name]
    cfg = parse_config(fit_config(spec, 2, augment=name == "cnn"), source="bench.yaml")
    shape = (spec["inputs"],) if name == "mlp" else (spec["channels"], spec["hw"], spec["hw"])
    ours = build_network(cfg.model, shape, seed=0)
    theirs = bench.build_bntrain_network(spec)
    sizes = [
        sorted(p.get_value().shape for p in L.get_all_params(net.output_layer))
        for net in (ours, theirs)
    ]
    assert sizes[0] == sizes[1]
    assert [a.output_shape for a in ours.layers] == [b.output_shape for b in theirs.layers]
    modes = [getattr(layer, "mode", None) for net in (ours, theirs) for layer in net.layers]
    assert set(modes) <= {None, "max"}
