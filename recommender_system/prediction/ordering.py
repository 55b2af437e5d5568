"""Pure array functions of the pipeline: de-duplication, ranking of tiered scores, diversity and stock ordering.

Every function takes and returns numpy arrays of catalogue indices (or positions into them); none of them knows
about models, requests or storage, so each is tested on its own.
"""

from __future__ import annotations

import numpy as np


def unique_in_order(indices: np.ndarray) -> np.ndarray:
    """``indices`` without repeats, each kept at its first occurrence."""
    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) < 2:
        return indices
    if len(indices) < 64:
        if len(set(indices.tolist())) == len(indices):
            return indices
    elif indices.min() >= 0 and np.bincount(indices).max() <= 1:  # catalogue indices: a cheap duplicate check
        return indices
    _, first = np.unique(indices, return_index=True)
    if len(first) == len(indices):
        return indices
    return indices[np.sort(first)]


def admit(indices: np.ndarray, allowed: np.ndarray, limit: int | None = None) -> np.ndarray:
    """The valid, allowed, not yet seen ``indices`` in order (at most ``limit``), marking them taken in ``allowed``.

    ``allowed`` is a boolean mask over the catalogue, updated in place: what this call admits is no longer allowed,
    so a later call (the next model of a cascade) cannot add a duplicate.
    """
    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) == 0:
        return indices
    indices = indices[(indices >= 0) & (indices < len(allowed))]
    indices = unique_in_order(indices[allowed[indices]])
    if limit is not None:
        indices = indices[: max(limit, 0)]
    allowed[indices] = False
    return indices


def rank_tiered(scores: np.ndarray, tiers: np.ndarray, top: int | None = None) -> np.ndarray:
    """Positions of the candidates best first: by tier (0 = the first scoring model), then score descending, then
    position. A tier holds the candidates that its model scored and the models before it could not (NaN); a
    candidate no model scored (NaN in the last tier) goes last. With ``top``, only the first ``top`` positions
    are returned (the same ones, found without sorting everything)."""
    scores = np.asarray(scores, dtype=np.float64)
    tiers = np.asarray(tiers, dtype=np.int64)
    missing = np.isnan(scores)
    if not missing.any() and not tiers.any():  # the common case: one model scored everything
        return _rank_descending(scores, top)
    positions = np.arange(len(scores))
    keyed = np.where(missing, np.inf, -scores)
    tier_key = np.where(missing, np.iinfo(np.int64).max, tiers)
    order = np.lexsort((positions, keyed, tier_key))
    return order if top is None else order[:top]


def _rank_descending(scores: np.ndarray, top: int | None) -> np.ndarray:
    """Positions by descending score, ties by position; with ``top``, a partial selection of the best ``top``."""
    keys = -scores
    if top is None or top >= len(keys) // 2:
        order = np.argsort(keys, kind="stable")
        return order if top is None else order[:top]
    if top <= 0:
        return np.array([], dtype=np.int64)
    threshold = np.partition(keys, top - 1)[top - 1]
    chosen = np.flatnonzero(keys <= threshold)  # every candidate at least as good as the top-th, ties included
    return chosen[np.argsort(keys[chosen], kind="stable")][:top]


def diversify(distances: np.ndarray, picks: int | None = None) -> np.ndarray:
    """Greedy max-sum diversification of ``k`` items given best first: a permutation of ``range(k)``.

    The first item stays first; each next pick is the remaining item with the largest sum of distances to the
    items already picked (a running sum, so O(k^2) in all). Ties go to the better-ranked item (the lower
    position). Missing distances (NaN) count as 0. With ``picks``, only the first ``picks`` positions are chosen
    greedily (all a page of that size shows; each pick depends only on the earlier ones) and the rest keep their
    order: O(picks * k).
    """
    distances = np.asarray(distances, dtype=np.float64)
    k = distances.shape[0]
    picks = k if picks is None else min(max(int(picks), 1), k)
    if k <= 2 or picks <= 1:
        return np.arange(k)
    distances = np.nan_to_num(distances, nan=0.0, posinf=0.0, neginf=0.0)
    running = distances[0].copy()
    running[0] = -np.inf  # taken items stay at -inf: adding finite distances keeps them there
    order = [0]
    for _ in range(1, picks):
        chosen = int(running.argmax())  # the first maximum: the better-ranked item
        order.append(chosen)
        running += distances[chosen]
        running[chosen] = -np.inf
    if picks < k:
        rest = np.ones(k, dtype=bool)
        rest[order] = False
        return np.concatenate([np.array(order, dtype=np.int64), np.flatnonzero(rest)])
    return np.array(order, dtype=np.int64)


def stock_last(indices: np.ndarray, in_stock: np.ndarray) -> np.ndarray:
    """A stable partition: the in-stock catalogue ``indices`` first, then the out-of-stock ones, each in order."""
    indices = np.asarray(indices, dtype=np.int64)
    available = in_stock[indices]
    if available.all():
        return indices
    return np.concatenate([indices[available], indices[~available]])


def group_positions(ranked_groups: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """The first position of each of ``groups`` in a ranking given as the group (e.g. the product id) of each of
    its positions; groups that do not appear get the ranking's length."""
    ranked_groups = np.asarray(ranked_groups, dtype=np.int64)
    groups = np.asarray(groups, dtype=np.int64)
    positions = np.full(len(groups), len(ranked_groups), dtype=np.int64)
    if len(ranked_groups) == 0 or len(groups) == 0:
        return positions
    unique, first = np.unique(ranked_groups, return_index=True)
    where = np.minimum(np.searchsorted(unique, groups), len(unique) - 1)
    found = unique[where] == groups
    positions[found] = first[where[found]]
    return positions
