"""The data package's layout: one module per format, a registry of built-in datasets."""

from __future__ import annotations

import numpy as np
import pytest

import bntrain.data as data
import bntrain.data.datasets as old
import bntrain.data.open as open_mod
from bntrain.data import ArrayDataset, open_dataset
from bntrain.errors import ConfigError


def test_old_module_re_exports_the_same_objects() -> None:
    for name in old.__all__:
        assert getattr(old, name) is getattr(data, name), name


def test_a_new_builtin_dataset_is_one_registry_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def load_tiny(split: str, *, where: str) -> ArrayDataset:
        calls.append((split, where))
        return ArrayDataset(np.arange(12.0).reshape(4, 3), np.arange(4), name="tiny", where=where)

    monkeypatch.setitem(open_mod.BUILTINS, "tiny", load_tiny)
    ds = open_dataset({"builtin": "tiny", "split": "val"}, None, "data.val")
    assert calls == [("val", "data.val")] and len(ds) == 4
    with pytest.raises(ConfigError) as e:
        open_dataset({"builtin": "svhn"}, None, "data.train")
    assert str(e.value) == (
        "data.train.builtin: unknown dataset 'svhn' (available: digits, mnist, fashion_mnist, "
        "cifar10, cifar100, tiny)"
    )
