import numpy as np
import pytest

from bntrain.metrics import classification_metrics, predict_dataset


def test_metrics_against_hand_computation():
    probs = np.array(
        [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.6, 0.3, 0.1]], np.float32
    )
    labels = np.array([0, 1, 1, 0])
    m = classification_metrics(probs, labels, 3)
    expected_loss = -np.mean(np.log([0.7, 0.8, 0.3, 0.6]))
    assert m["loss"] == pytest.approx(expected_loss, rel=1e-6)
    assert m["accuracy"] == 0.75
    assert m["confusion_matrix"] == [[2, 0, 0], [0, 1, 1], [0, 0, 0]]
    assert m["per_class_accuracy"] == [1.0, 0.5, None]
    assert m["n_examples"] == 4


class _DS:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def read(self, sl):
        return self.x[sl], self.y[sl]


class _Identity:
    def apply(self, x):
        return x.astype(np.float32)


@pytest.mark.parametrize("pad_last", [False, True])
def test_predict_dataset_covers_every_example_once(pad_last):
    x = np.arange(10, dtype=np.float32).reshape(10, 1)
    seen_shapes = []

    def predict(batch):
        seen_shapes.append(batch.shape[0])
        return np.concatenate([batch, -batch], axis=1)

    probs, labels = predict_dataset(
        predict, _DS(x, np.arange(10)), _Identity(), 4, pad_last=pad_last
    )
    np.testing.assert_array_equal(probs[:, 0], np.arange(10))
    np.testing.assert_array_equal(labels, np.arange(10))
    assert seen_shapes == ([4, 4, 4] if pad_last else [4, 4, 2])
