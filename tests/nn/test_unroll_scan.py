"""unroll_scan builds the graph pytensor.scan loops over."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from bntrain.nn.utils import unroll_scan


@pytest.mark.parametrize("go_backwards", [False, True])
def test_equals_scan(go_backwards):
    """Two sequences, one fed-back output, one output not fed back, a non-sequence."""
    xs, ys = pt.dmatrix("xs"), pt.dvector("ys")
    h0, w = pt.dvector("h0"), pt.dscalar("w")

    def step(x, y, h, w):
        return [pt.tanh(x * w + h * y), x.sum() * y]

    args = {"sequences": [xs, ys], "outputs_info": [h0, None], "non_sequences": [w]}
    unrolled = unroll_scan(step, n_steps=4, go_backwards=go_backwards, **args)
    scanned = pytensor.scan(
        step, go_backwards=go_backwards, return_list=True, return_updates=False, **args
    )
    rng = np.random.default_rng(0)
    values = [rng.standard_normal((4, 3)), rng.standard_normal(4), rng.standard_normal(3), 0.7]
    got = pytensor.function([xs, ys, h0, w], unrolled)(*values)
    expected = pytensor.function([xs, ys, h0, w], scanned)(*values)
    assert len(got) == 2
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-12)


def test_single_output_and_bad_steps():
    a = pt.dscalar("a")
    # single values instead of lists, as scan takes them
    [powers] = unroll_scan(lambda t, prev, a: prev * a, pt.arange(3), 1.0, a, 3)
    np.testing.assert_allclose(powers.eval({a: 3.0}), [3.0, 9.0, 27.0])
    with pytest.raises(ValueError, match="n_steps must be a positive int, got None"):
        unroll_scan(lambda t: t, [pt.arange(3)], [], [], None)
