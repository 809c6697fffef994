"""bntrain.data.augment against per-example NumPy references, and its place in BatchIterator."""

from __future__ import annotations

import numpy as np
import pytest

from bntrain.data import ArrayDataset, BatchIterator
from bntrain.data.augment import (
    CROP_X,
    CROP_Y,
    HFLIP,
    SHIFT_X,
    SHIFT_Y,
    VFLIP,
    Augmenter,
    draws,
)

SEED, EPOCH = 7, 3


def images(n=40, c=2, h=6, w=5, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, c, h, w)).astype(np.float32)


# --------------------------------------------------------------------------- draws


def test_draws_depend_on_the_example_not_on_the_batch():
    idx = np.array([3, 17, 5, 40, 1000])
    d = draws(SEED, EPOCH, idx, CROP_Y, 9)
    for i, k in enumerate(idx):
        assert draws(SEED, EPOCH, np.array([k]), CROP_Y, 9)[0] == d[i]
    np.testing.assert_array_equal(draws(SEED, EPOCH, idx[::-1], CROP_Y, 9), d[::-1])


def test_draws_change_with_seed_epoch_and_stream_and_cover_the_range():
    idx = np.arange(20000)
    base = draws(SEED, EPOCH, idx, CROP_Y, 9)
    assert base.min() == 0 and base.max() == 8
    counts = np.bincount(base, minlength=9)
    assert np.all(np.abs(counts - 20000 / 9) < 5 * np.sqrt(20000 / 9))  # ~uniform
    for other in (
        draws(SEED + 1, EPOCH, idx, CROP_Y, 9),
        draws(SEED, EPOCH + 1, idx, CROP_Y, 9),
        draws(SEED, EPOCH, idx, CROP_X, 9),
    ):
        # independent streams agree about 1/9 of the time
        assert abs(np.mean(other == base) - 1 / 9) < 0.02


# --------------------------------------------------------------------------- each step


def _ref_crop(x, idx, h, w, pad, mode):
    out = np.empty((len(x), x.shape[1], h, w), np.float32)
    for i, (img, k) in enumerate(zip(x, idx, strict=True)):
        oy = draws(SEED, EPOCH, np.array([k]), CROP_Y, img.shape[1] + 2 * pad - h + 1)[0]
        ox = draws(SEED, EPOCH, np.array([k]), CROP_X, img.shape[2] + 2 * pad - w + 1)[0]
        p = np.pad(
            img, ((0, 0), (pad, pad), (pad, pad)), mode="constant" if mode == "zeros" else mode
        )
        out[i] = p[:, oy : oy + h, ox : ox + w]
    return out


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_random_crop_matches_a_per_example_reference(mode):
    x, idx = images(), np.arange(100, 140)
    got = Augmenter(SEED, crop=(6, 5, 2, mode))(x, idx, EPOCH)
    np.testing.assert_array_equal(got, _ref_crop(x, idx, 6, 5, 2, mode))
    offsets = draws(SEED, EPOCH, idx, CROP_Y, 5)
    assert len(set(offsets.tolist())) > 1  # crops really move
    assert got.dtype == np.float32 and got.flags.c_contiguous


def test_random_translate_matches_a_per_example_reference():
    x, idx, t = images(), np.arange(40), 2
    got = Augmenter(SEED, translate=t)(x, idx, EPOCH)
    ref = np.zeros_like(x)
    h, w = x.shape[2:]
    for i, k in enumerate(idx):
        dy = draws(SEED, EPOCH, np.array([k]), SHIFT_Y, 2 * t + 1)[0] - t
        dx = draws(SEED, EPOCH, np.array([k]), SHIFT_X, 2 * t + 1)[0] - t
        for r in range(h):
            for c in range(w):
                if 0 <= r + dy < h and 0 <= c + dx < w:
                    ref[i, :, r, c] = x[i, :, r + dy, c + dx]
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("which", ["hflip", "vflip"])
def test_flips_match_a_per_example_reference(which):
    x, idx = images(), np.arange(5, 45)
    got = Augmenter(SEED, **{which: True})(x, idx, EPOCH)
    stream, axis = (HFLIP, 3) if which == "hflip" else (VFLIP, 2)
    flip = draws(SEED, EPOCH, idx, stream, 2)
    assert 0 < flip.sum() < len(flip)
    for i in range(len(x)):
        want = np.flip(x[i], axis=axis - 1) if flip[i] else x[i]
        np.testing.assert_array_equal(got[i], want)


def test_all_steps_follow_the_example_not_the_batch():
    x, idx = images(), np.arange(40)
    aug = Augmenter(SEED, crop=(6, 5, 1, "reflect"), translate=1, hflip=True, vflip=True)
    whole = aug(x, idx, EPOCH)
    order = np.random.default_rng(1).permutation(40)
    for part in np.array_split(order, 3):
        np.testing.assert_array_equal(aug(x[part], idx[part], EPOCH), whole[part])
    assert not np.array_equal(aug(x, idx, EPOCH + 1), whole)
    np.testing.assert_array_equal(x, images())  # the input is left alone


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "aug, shape, key, text",
    [
        (Augmenter(0, hflip=True), (64,), "", "needs image examples"),
        (Augmenter(0, crop=(8, 8, 4, "zeros")), (1, 6, 6), "random_crop.size", "[8, 8] must"),
        (Augmenter(0, crop=(6, 6, 6, "reflect")), (1, 6, 6), "random_crop.pad", "6 must be"),
        (Augmenter(0, translate=6), (1, 6, 9), "random_translate.max", "6 must be"),
    ],
)
def test_settings_that_do_not_fit_the_examples(aug, shape, key, text):
    got_key, message = aug.problem(shape)
    assert got_key == key and message.startswith(text)


def test_fitting_settings_have_no_problem():
    assert Augmenter(0, crop=(6, 6, 5, "reflect"), translate=5).problem((3, 6, 6)) is None
    assert not Augmenter(0).active
    with pytest.raises(ValueError, match="crop mode"):
        Augmenter(0, crop=(6, 6, 1, "wrap"))


# --------------------------------------------------------------------------- in BatchIterator


@pytest.mark.parametrize("prefetch", [0, 2])
def test_batch_iterator_hands_each_batch_its_example_indices(prefetch):
    x = images(n=23)
    y = np.arange(23)
    ds = ArrayDataset(x, y)
    aug = Augmenter(SEED, crop=(6, 5, 2, "zeros"), hflip=True)

    def augment(batch, indices):
        return aug(batch, indices, EPOCH)

    it = BatchIterator(
        ds, 5, shuffle=True, seed=1, epoch=0, augment=augment, prefetch=prefetch, start_batch=1
    )
    batches = list(it)
    assert len(batches) == 4
    for xb, yb in batches:  # labels are the example indices here
        np.testing.assert_array_equal(xb, aug(x[yb], yb, EPOCH))
