"""Leave-one-cluster-out: does any one address decide a criterion's verdict?

A cluster "decides" a cell (a criterion and model pair) when the results without its votes differ: a
significant cell becomes non-significant, a non-significant one significant, or a significant winner changes
sides. The verdicts themselves come from the caller, who recomputes them with the results' own statistics on
the votes without the cluster: this module only chooses which clusters to try and compares verdicts.

Recomputing the statistics costs a tenth of a second or so per cluster, so a study of hundreds of sessions
cannot try them all on every change. ``influence_order`` tries first every cluster of two or more sessions
(what one client controls beyond a single session), then single sessions by how one-sided they are: a
cluster whose answers split evenly cannot move a verdict anywhere its lopsided neighbours do not.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Verdict:
    significant: bool
    leader: str | None  # the model with more wins; None when even


NO_VERDICT = Verdict(False, None)


def changed(before: Verdict, after: Verdict) -> bool:
    """Whether a verdict is different in a way a reader would act on (significance, or a significant winner)."""
    return before.significant != after.significant or (before.significant and before.leader != after.leader)


def influence_order(toward_a: np.ndarray, toward_b: np.ndarray, sizes: Sequence[int], *, limit: int) -> list[int]:
    """At most ``limit`` cluster indices to try: multi-session clusters (largest first), then the most one-sided.

    ``toward_a`` / ``toward_b``: (cells, clusters) counts of each cluster's answers for each cell's two models.
    One-sidedness is a cluster's largest |toward A - toward B| over the cells.
    """
    a = np.asarray(toward_a, dtype=np.int64)
    b = np.asarray(toward_b, dtype=np.int64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] != len(sizes):
        raise ValueError("toward_a and toward_b must be (cells, clusters) arrays, one column per cluster size")
    lean = np.abs(a - b).max(axis=0) if a.shape[0] else np.zeros(len(sizes), dtype=np.int64)
    answered = (a + b).sum(axis=0) > 0 if a.shape[0] else np.zeros(len(sizes), dtype=bool)
    order = sorted((j for j in range(len(sizes)) if answered[j]),
                   key=lambda j: (sizes[j] < 2, -sizes[j] if sizes[j] >= 2 else 0, -int(lean[j]), j))
    return order[:limit]


def verdict_changes(baseline: Mapping[K, Verdict],
                    without: Mapping[int, Mapping[K, Verdict]]) -> dict[K, list[tuple[int, Verdict]]]:
    """Per cell of ``baseline``, the clusters whose removal changes its verdict, with what it becomes.

    A cell missing from a cluster's verdicts (no votes left on it) counts as "not significant".
    """
    out: dict[K, list[tuple[int, Verdict]]] = {cell: [] for cell in baseline}
    for cluster, verdicts in without.items():
        for cell, before in baseline.items():
            after = verdicts.get(cell, NO_VERDICT)
            if changed(before, after):
                out[cell].append((cluster, after))
    return out
