"""Mini-batches for one epoch, reproducible and resumable, prefetched in a thread.

Order
-----
The order of an epoch is a pure function of ``(seed, epoch)``:
``np.random.default_rng([seed, epoch]).permutation(len(ds))`` cut into
consecutive pieces of ``batch_size``.  Each piece's indices are then sorted
before reading, because HDF5 reads need increasing indices and sorted reads
are much faster.  This keeps examples at random across batches (which is what
SGD needs) while the order *inside* a batch is stored order (which does not
matter to a loss averaged over the batch).  Without shuffling, batches follow
stored order and are read as contiguous slices.  A run stopped after batch
``k`` of an epoch continues exactly with ``start_batch=k + 1``.

Reading, preprocessing and augmenting (``augment``, e.g. a
:class:`bntrain.data.augment.Augmenter` bound to the epoch) happen in the
prefetch thread, so they overlap with the training step that consumes the
previous batch.
"""

from __future__ import annotations

import math
import queue
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from bntrain.data.base import Dataset

__all__ = ["BatchIterator"]

Batch = tuple[np.ndarray, np.ndarray | None]

_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class BatchIterator:
    """Iterate over one epoch of ``ds`` as ``(x float32, y int32 or None)`` batches.

    Parameters
    ----------
    ds : Dataset
        The examples.
    batch_size : int
        Examples per batch.
    shuffle : bool
        Random order (see the module docstring) or stored order.
    seed : int
        Run seed; with ``epoch`` it determines the order.
    epoch : int
        Epoch number (any int >= 0).
    preprocess : callable or None
        Maps a raw batch ``x`` to float32 (e.g. :meth:`Preprocessor.apply`); None just
        casts to float32.
    start_batch : int
        Skip the first ``start_batch`` batches (to resume inside an epoch).
    drop_last : bool
        Drop the last batch if it is smaller than ``batch_size``.
    prefetch : int
        Batches read ahead in a background thread; 0 reads in the caller's thread.
    augment : callable or None
        ``augment(x, indices)`` maps a preprocessed batch and its example indices
        to the batch to train on (after ``preprocess``, in the prefetch thread).
    part : (int, int)
        ``(index, count)``: read only the ``index``-th of ``count`` consecutive
        equal slices of every batch (one process of a multi-process run; use
        ``drop_last`` so that every batch is whole).

    Notes
    -----
    ``len(it)`` is the number of batches in the whole epoch (independent of
    ``start_batch``); iteration yields batches ``start_batch .. len(it) - 1``.
    The iterator is single-use: make a new one for each epoch.  Its thread stops
    when iteration ends, on :meth:`close`, or when the iterator is garbage
    collected; an exception raised while reading or preprocessing is re-raised
    in the consumer.
    """

    def __init__(
        self,
        ds: Dataset,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int,
        epoch: int,
        preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
        start_batch: int = 0,
        drop_last: bool = False,
        prefetch: int = 2,
        augment: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
        part: tuple[int, int] = (0, 1),
    ) -> None:
        _check_int("batch_size", batch_size, 1)
        if not (0 <= part[0] < part[1] and batch_size % part[1] == 0):
            raise ValueError(
                f"BatchIterator: part {part} needs 0 <= index < count and a batch size "
                f"({batch_size}) that count divides"
            )
        _check_int("seed", seed, 0)
        _check_int("epoch", epoch, 0)
        _check_int("start_batch", start_batch, 0)
        _check_int("prefetch", prefetch, 0)
        if preprocess is not None and not callable(preprocess):
            raise TypeError(
                f"BatchIterator: preprocess must be callable or None, got {preprocess!r}"
            )
        n = len(ds)
        self.ds = ds
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.epoch = int(epoch)
        self.drop_last = bool(drop_last)
        self.prefetch = int(prefetch)
        self.n_batches = n // self.batch_size if drop_last else math.ceil(n / self.batch_size)
        if start_batch > self.n_batches:
            raise ValueError(
                f"BatchIterator: start_batch {start_batch} is past the end of the epoch "
                f"({self.n_batches} batches)"
            )
        self.start_batch = int(start_batch)
        self._perm = (
            np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else None
        )
        self._preprocess = preprocess
        self._augment = augment
        self._part = (int(part[0]), int(part[1]))
        self._local: Iterator[Batch] | None = None
        self._queue: queue.Queue[Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._finalizer: weakref.finalize | None = None
        self._finished = False

    def __len__(self) -> int:
        return self.n_batches

    def batch_indices(self, b: int) -> np.ndarray:
        """The sorted example indices of batch ``b`` of this epoch."""
        if not 0 <= b < self.n_batches:
            raise IndexError(f"BatchIterator: batch {b} out of range ({self.n_batches} batches)")
        sel = self._selection(b)
        if isinstance(sel, slice):
            return np.arange(sel.start, sel.stop, dtype=np.int64)
        return sel

    def _selection(self, b: int) -> slice | np.ndarray:
        start = b * self.batch_size
        stop = min(start + self.batch_size, len(self.ds))
        index, count = self._part  # this process's consecutive share of the batch
        step = (stop - start) // count
        if self._perm is None:
            return slice(start + index * step, start + (index + 1) * step)
        return np.sort(self._perm[start:stop]).astype(np.int64)[index * step : (index + 1) * step]

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> Batch:
        if self._finished:
            raise StopIteration
        if self.prefetch == 0:
            if self._local is None:
                self._local = _produce(
                    self.ds,
                    [self._selection(b) for b in self._order()],
                    self._preprocess,
                    self._augment,
                )
            try:
                return next(self._local)
            except StopIteration:
                self._finished = True
                raise
        if self._queue is None:
            self._start_thread()
        assert self._queue is not None
        item = self._queue.get()
        if item is _DONE:
            self.close()
            raise StopIteration
        if isinstance(item, _Failure):
            self.close()
            raise item.exc
        return item

    def _order(self) -> range:
        return range(self.start_batch, self.n_batches)

    def _start_thread(self) -> None:
        self._queue = queue.Queue(maxsize=self.prefetch)
        selections = [self._selection(b) for b in self._order()]
        self._thread = threading.Thread(
            target=_worker,
            args=(self.ds, selections, self._preprocess, self._augment, self._queue, self._stop),
            name="bntrain-prefetch",
            daemon=True,
        )
        # The worker holds no reference to self, so garbage collection can stop it.
        self._finalizer = weakref.finalize(self, _shutdown, self._stop, self._queue, self._thread)
        self._thread.start()

    def close(self) -> None:
        """Stop the prefetch thread and end the iteration (idempotent)."""
        self._finished = True
        if self._finalizer is not None:
            self._finalizer()
        self._local = None

    def __enter__(self) -> BatchIterator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"BatchIterator(n_batches={self.n_batches}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, seed={self.seed}, epoch={self.epoch}, "
            f"start_batch={self.start_batch})"
        )


def _check_int(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"BatchIterator: {name} must be an int, got {value!r}")
    if value < low:
        raise ValueError(f"BatchIterator: {name} must be >= {low}, got {value}")


def _produce(
    ds: Dataset,
    selections: list[slice | np.ndarray],
    preprocess: Callable[[np.ndarray], np.ndarray] | None,
    augment: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> Iterator[Batch]:
    for sel in selections:
        x, y = ds.read(sel)
        x = np.ascontiguousarray(preprocess(x) if preprocess is not None else x, dtype=np.float32)
        if augment is not None:
            idx = np.arange(sel.start, sel.stop) if isinstance(sel, slice) else sel
            x = np.ascontiguousarray(augment(x, idx), dtype=np.float32)
        yield x, (None if y is None else y.astype(np.int32))


def _put(q: queue.Queue[Any], item: object, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _worker(
    ds: Dataset,
    selections: list[slice | np.ndarray],
    preprocess: Callable[[np.ndarray], np.ndarray] | None,
    augment: Callable[[np.ndarray, np.ndarray], np.ndarray] | None,
    q: queue.Queue[Any],
    stop: threading.Event,
) -> None:
    try:
        for batch in _produce(ds, selections, preprocess, augment):
            if not _put(q, batch, stop):
                return
    except BaseException as exc:  # noqa: BLE001 - handed to the consumer
        _put(q, _Failure(exc), stop)
        return
    _put(q, _DONE, stop)


def _shutdown(stop: threading.Event, q: queue.Queue[Any], thread: threading.Thread) -> None:
    stop.set()
    while True:  # unblock a worker waiting on a full queue
        try:
            q.get_nowait()
        except queue.Empty:
            break
    if thread.is_alive() and thread is not threading.current_thread():
        thread.join(timeout=5)
