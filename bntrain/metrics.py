"""Classification metrics and batched prediction over a dataset."""

from __future__ import annotations

import numpy as np

__all__ = ["predict_dataset", "classification_metrics"]


def predict_dataset(predict, ds, preprocess, batch_size: int, *, pad_last: bool = False):
    """Run ``predict`` over ``ds`` in stored order.

    Parameters
    ----------
    predict : callable
        ``predict(x) -> probabilities`` (inference mode: each example's output
        does not depend on the rest of its batch).
    ds : Dataset
        The examples (and labels, if it has them).
    preprocess : Preprocessor
        Applied to every batch.
    batch_size : int
        Examples per call.
    pad_last : bool
        Pad the last partial batch to ``batch_size`` (for backends that
        compile one function per batch shape) and drop the padding.

    Returns
    -------
    probabilities : ndarray, float32, (N, classes)
    labels : ndarray of int64, or None
    """
    n = len(ds)
    probs, labels = [], []
    for start in range(0, n, batch_size):
        x, y = ds.read(slice(start, min(start + batch_size, n)))
        x = preprocess.apply(x)
        m = len(x)
        if pad_last and m < batch_size:
            x = np.concatenate([x, np.repeat(x[-1:], batch_size - m, axis=0)])
        probs.append(np.asarray(predict(x))[:m])
        if y is not None:
            labels.append(np.asarray(y))
    out = np.concatenate(probs).astype(np.float32) if probs else np.zeros((0, 0), np.float32)
    return out, (np.concatenate(labels).astype(np.int64) if labels else None)


def classification_metrics(probs: np.ndarray, labels: np.ndarray, n_classes: int) -> dict:
    """Loss (mean cross-entropy), accuracy, per-class accuracy and confusion matrix.

    Computed in float64.  ``confusion[i, j]`` counts examples of class ``i``
    predicted as ``j``; a class without examples has per-class accuracy ``None``.
    """
    p = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    picked = p[np.arange(len(labels)), labels]
    loss = float(-np.mean(np.log(np.maximum(picked, np.finfo(np.float64).tiny))))
    predicted = p.argmax(axis=1)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    support = confusion.sum(axis=1)
    per_class = [
        float(confusion[i, i] / support[i]) if support[i] else None for i in range(n_classes)
    ]
    return {
        "n_examples": int(len(labels)),
        "loss": loss,
        "accuracy": float(np.mean(predicted == labels)),
        "per_class_accuracy": per_class,
        "confusion_matrix": confusion.tolist(),
    }
