"""Data-parallel training on 4 simulated CPU devices (one child process runs every fit).

The child (tests/_dist_child.py) sets ``XLA_FLAGS`` before JAX is imported,
trains the same tiny runs on 1, 2 and 4 devices and reports the largest
differences; each test here checks one of them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bntrain.errors import UsageError
from bntrain.parallel import check_global_batch, collectives, traffic_bytes

CHILD = Path(__file__).with_name("_dist_child.py")


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, str(CHILD), str(work)], capture_output=True, text=True, timeout=1200
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    return json.loads(lines[-1][len("RESULT ") :])


def test_four_simulated_devices(measured):
    assert measured["devices_seen"] == 4


def test_sync_bn_matches_one_device_with_the_global_batch(measured):
    assert measured["sync_params"] <= 1e-5
    assert measured["sync_stats"] <= 1e-6


def test_ghost_bn_matches_one_device_normalizing_per_shard(measured):
    assert measured["ghost_params"] <= 1e-5
    assert measured["ghost_stats"] <= 1e-6
    assert measured["ghost_vs_sync"] > 1e-3  # per-shard statistics really differ


def test_global_batch_must_divide_evenly():
    check_global_batch(64, 4)
    with pytest.raises(UsageError) as err:
        check_global_batch(66, 4)
    assert str(err.value) == (
        "training.batch_size: 66 does not divide evenly over 4 devices (it is the global "
        "batch); use 64 or 68"
    )
    with pytest.raises(UsageError, match="use 4$"):
        check_global_batch(3, 4)


def test_collectives_read_from_hlo_text():
    hlo = (
        "  %all-reduce.1 = f32[16,10]{1,0} all-reduce(f32[16,10]{1,0} %dot), channel_id=1\n"
        "  %ar.2 = (f32[10]{0}, f32[]) all-reduce(f32[10]{0} %a, f32[] %b), channel_id=2\n"
        "  %all-gather = bf16[4,8]{1,0} all-gather(bf16[1,8]{1,0} %p), dimensions={0}\n"
        "  %add = f32[10]{0} add(f32[10]{0} %x, f32[10]{0} %y)\n"
    )
    assert collectives(hlo) == [("all-reduce", 640), ("all-reduce", 44), ("all-gather", 64)]
    assert traffic_bytes(hlo) == {"all-reduce": 684, "all-gather": 64}


def test_recompute_stats_and_eval_match_one_device(measured):
    assert measured["recompute"] <= 1e-6
    assert measured["eval_population"] <= 1e-6
    assert measured["eval_batch"] <= 1e-6


def test_resume_on_other_device_counts_continues_the_run(measured):
    assert measured["resume_params"] <= 1e-5
    assert measured["resume_stats"] <= 1e-6


def test_compiled_step_all_reduces_gradients_and_gathers_no_parameters(measured):
    traffic = measured["traffic"]
    assert traffic["all-reduce"] >= traffic["param_bytes"]  # every gradient is summed
    assert traffic["float_gathers"] == 0


def test_more_devices_than_jax_sees_is_a_usage_error(tiny_config_file):
    from click.testing import CliRunner

    from bntrain.cli import main

    r = CliRunner().invoke(main, ["fit", str(tiny_config_file), "--devices", "64", "-q"])
    assert r.exit_code == 2, r.output
    assert "devices: 64 requested but JAX sees" in r.output
    assert "Traceback" not in r.output
    r = CliRunner().invoke(main, ["fit", str(tiny_config_file), "--devices", "two"])
    assert r.exit_code == 2
    assert "'two' is not auto or a device count >= 1" in r.output


def test_several_devices_need_the_jax_backend():
    from bntrain.backend import Runtime
    from bntrain.parallel import resolve_devices

    assert resolve_devices("auto", Runtime("jax", "cpu")) == 1
    with pytest.raises(UsageError, match="devices: 2 needs backend jax"):
        resolve_devices(2, Runtime("numba", "cpu"))


@pytest.mark.parametrize("command", ["check", "plot", "export"])
def test_every_command_takes_devices(tiny_config_file, tmp_path, command):
    from click.testing import CliRunner

    from bntrain.cli import main

    target = {"check": [str(tiny_config_file)], "plot": [str(tmp_path)], "export": ["x.h5"]}
    out = [] if command == "check" else ["-o", str(tmp_path / "out.png")]
    r = CliRunner().invoke(main, [command, *target[command], *out, "--devices", "two"])
    assert r.exit_code == 2
    assert "'two' is not auto or a device count >= 1" in r.output
    if command == "check":  # check resolves the count as fit does
        r = CliRunner().invoke(main, ["check", str(tiny_config_file), "--devices", "64"])
        assert r.exit_code == 2, r.output
        assert r.output.startswith("Error: devices: 64 requested but JAX sees")


def test_per_device_statistics_refuse_batch_renorm(tiny_config_file):
    from bntrain.config import load_config
    from bntrain.parallel import check_parallel_config

    sets = ["model.batch_norm.sync=false", "model.batch_norm.kind=renorm"]
    config = load_config(tiny_config_file, sets)
    check_parallel_config(config, 1)  # one device: nothing is per device
    with pytest.raises(UsageError) as err:
        check_parallel_config(config, 2)
    assert str(err.value) == (
        "model.batch_norm.sync: false (per-device statistics) cannot be combined with kind "
        "renorm; use sync: true or kind bn"
    )
