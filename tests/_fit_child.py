"""``bntrain fit`` in a child process, for the signal and kill tests (tests/test_interrupts.py).

Not a test module.  Two modes:

``python tests/_fit_child.py signals CONFIG N [--set ...]``
    Import bntrain once, then run ``bntrain fit CONFIG --set output.dir=run<i>``
    N times in this process (i = 0..N-1), each until it exits.  The CLI's stdout
    (the epoch lines) passes through, so the test sees when training runs and
    sends a signal; after each run one line ``exit <code> <stderr as JSON>`` is
    printed.

``python tests/_fit_child.py kill-at-epoch CONFIG EPOCH [--set ...]``
    Run ``bntrain fit`` once, and SIGKILL this process right after the first
    checkpoint file of epoch EPOCH (``best.h5`` or ``last.h5``) is renamed into
    place: a kill between the two writes that end an improving epoch.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sys

import h5py

from bntrain.cli import main as cli


def run_cli(args: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            cli.main(args, prog_name="bntrain", standalone_mode=True)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, err.getvalue()


def kill_after_write_of(epoch: int) -> None:
    """SIGKILL this process after the first checkpoint of ``epoch`` is renamed into place."""
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        real(src, dst, *args, **kwargs)
        if os.path.basename(dst) in ("best.h5", "last.h5"):
            with h5py.File(dst, "r") as f:
                done = int(f.attrs["epoch"])
            if done == epoch:
                os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace


def main() -> None:
    mode, config, count, *sets = sys.argv[1:]
    if mode == "signals":
        for i in range(int(count)):
            code, err = run_cli(["fit", config, *sets, "--set", f"output.dir=run{i}"])
            print(f"exit {code} {json.dumps(err)}", flush=True)
    elif mode == "kill-at-epoch":
        kill_after_write_of(int(count))
        code, err = run_cli(["fit", config, "--quiet", *sets])
        print(f"exit {code} {json.dumps(err)}", flush=True)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
