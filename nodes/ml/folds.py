"""Purged walk-forward folds with an embargo on both sides of every test fold.

Samples are ``[start, end]`` intervals: ``start`` is the bar the features describe, ``end`` the
moment its label is decided (:mod:`nodes.ml.targets`). The distinct start times are cut into
``n_folds + 1`` consecutive blocks; fold ``k`` tests block ``k`` and trains on samples before it
(all of them, or the last ``max_train``). A test fold spans ``[a, b]``: its first start to its
last label end. A training sample is kept only if its whole interval lies before
``a - embargo``, so

- no training label window overlaps the test fold (purging, López de Prado), and
- none comes within ``embargo`` of it on either side: before, so the training labels stop a
  margin short of the first test features (serially correlated prices); after, trivially, since
  walk-forward never trains on the future of a fold. FreqAI does not purge; Qlib leaves gaps
  between segments to the user; here the rule is checked by a property test.

Samples of several symbols at one time fall in the same block, so a fold never splits a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nodes.ml.model import ModelError


class FoldError(ModelError, ValueError):
    """The samples cannot make the folds asked for (too few, or too few left after purging)."""


@dataclass(frozen=True)
class Fold:
    index: int
    """1 for the first test fold."""
    train: np.ndarray
    test: np.ndarray
    test_start: int
    """The first test sample's start (ms)."""
    test_end: int
    """The last label end among the test samples (ms)."""


def purged_walk_forward(
    start: np.ndarray,
    end: np.ndarray,
    n_folds: int,
    embargo_ms: int = 0,
    *,
    min_train: int = 1,
    min_test: int = 1,
    max_train: int | None = None,
    trainable: np.ndarray | None = None,
) -> list[Fold]:
    """The folds over samples ``[start[i], end[i]]``; :class:`FoldError` names what is too small.

    ``trainable`` (a mask) limits the training side to some samples (the decisive labels),
    while the test side keeps every sample of its block.
    """
    start = np.asarray(start, dtype=np.int64)
    end = np.asarray(end, dtype=np.int64)
    may_train = np.ones(len(start), dtype=bool) if trainable is None else np.asarray(trainable, dtype=bool)
    if n_folds < 1:
        raise FoldError(f"folds must be at least 1, not {n_folds}")
    if embargo_ms < 0:
        raise FoldError(f"embargo must not be negative ({embargo_ms} ms)")
    if len(start) != len(end) or np.any(end < start):
        raise FoldError("every sample needs an end at or after its start")
    times = np.unique(start)
    if len(times) < n_folds + 1:
        raise FoldError(f"{len(start)} samples at {len(times)} distinct times cannot make {n_folds} walk-forward folds (need {n_folds + 1} times at least)")
    blocks = np.array_split(times, n_folds + 1)
    folds = []
    for k in range(1, n_folds + 1):
        block = blocks[k]
        test = np.flatnonzero((start >= block[0]) & (start <= block[-1]))
        a, b = int(block[0]), int(end[test].max())
        train = np.flatnonzero(may_train & (start < a) & (end < a - embargo_ms))
        if max_train is not None and len(train) > max_train:
            train = train[np.argsort(start[train], kind="stable")[-max_train:]]
            train.sort()
        if len(train) < min_train or len(test) < min_test:
            purged = int(np.count_nonzero(may_train & (start < a))) - len(train)
            raise FoldError(
                f"{len(start)} samples are too few for {n_folds} folds: fold {k} trains on {len(train)} "
                f"(needs {min_train}; {purged} purged or embargoed) and tests {len(test)} (needs {min_test}); "
                "give it more history or fewer folds"
            )
        folds.append(Fold(k, train, test, a, b))
    return folds
