"""Content similarity: variants that look alike by their attributes and price, as stored nearest neighbours.

**Features.** Every variant is described by up to F features:

* its price, ``log1p`` then min-max scaled between the 1st and 99th percentile of the catalogue (clipped to
  [0, 1]). Prices are heavy-tailed and shoppers judge them by ratio (10 vs 20 is as far apart as 100 vs 200),
  which the log captures; the percentile range keeps a handful of extreme prices from squeezing every other
  variant into a sliver of the scale. Price lists are not known here, so the ``price`` column is taken as is;
* each ``NUMERICAL`` attribute type: ``numeric_value`` min-max normalised over that type (the mean when a variant
  has several values of one type);
* each ``CATEGORICAL`` attribute type: the *set* of values the variant has for it (usually one value; several for
  types such as genres).

**Distance** (a Gower-type coefficient with an absence penalty). For two variants u, v let F_u, F_v be the
features each defines. Over the union of the two sets every feature contributes a dissimilarity in [0, 1]:

* both define it: categorical, the Jaccard distance of the two value sets (a plain mismatch for single values);
  numerical, the squared difference of the normalised values (the per-feature term of the original's Euclidean
  block: near values count as almost equal, distant ones in full);
* only one defines it: 1, i.e. "absent" is a value of its own when compared with a present one (a book has a
  genre, a phone has none: they differ);
* neither defines it: the feature is left out (two absences say nothing, as in Jaccard's coefficient).

``d(u, v)`` is the mean over ``F_u | F_v``, so ``d = 1 - S / U`` with ``U = |F_u | F_v|`` and ``S`` the sum of
the similarities (1 - dissimilarity) over the features both define. It fixes the two problems of the original
(notes 3.4): a missing value is never replaced by the most frequent one, and the union/intersection weight
cannot blow a distance up past 1: every distance is in [0, 1], and 1 means "nothing in common". A variant with no
feature at all carries no information; the model does not know it (like an unknown SKU).

**Neighbours.** Each variant keeps its ``neighbours`` nearest variants with ``d < 1`` among the eligible ones,
never all n^2 pairs. Up to ``exact_limit`` eligible variants every distance is computed exactly, block by block.
Above it, a filter-and-verify search, still exact:

* ``d <= t`` is equivalent to ``S - (1 - t) U >= 0``, and both ``S`` and ``U`` are (bounded by) inner products
  of small per-variant vectors: one-hot values (a large vocabulary hashed into at most ``bucket_budget`` shared
  buckets: a collision can only add similarity), value sets weighted by ``1/sqrt(size)`` (their product, the
  Ochiai coefficient, is >= Jaccard), the squared difference expanded as ``1 - x^2 - y^2 + 2xy``, and presence
  flags for ``U``. Every factor is a bfloat16 value rounded in the safe direction, so one bf16 matrix product per
  (row block, column tile) tells which pairs *may* be within each row's current k-th distance ``t``: the sign of
  the product is exact up to fp32 accumulation, covered by a small margin. Only those pairs are computed exactly
  (float64) and merged into the row's k best.
* Rows are sorted so that alike variants sit together (presence pattern, then values, fewest-valued type first).
  Each row first computes its 2k neighbours in that order exactly, which gives a finite ``t``; the block's own
  column tile comes next, then the others, and ``t`` shrinks as batches are merged.
* Row blocks are independent and searched by ``workers`` threads (numpy and torch release the GIL).

On the 100,000-variant benchmark (``bench/similarity.py``) about 700 distances per variant are computed exactly
instead of 100,000. Ties at the k-th distance are broken arbitrarily.

The artefact keeps the compact per-variant features, so the distance between any two known variants is
computed on demand (``distances``, ``score``) in microseconds.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from recommender_system.domain import CatalogSnapshot, RecommendationContext
from recommender_system.prediction.config import SimilarityConfig
from recommender_system.prediction.models.base import (
    FitReport,
    ModelNotFittedError,
    PredictionModel,
    TrainingData,
    load_mapped,
)

if TYPE_CHECKING:  # torch is imported only where a fit searches neighbours: serving never needs it
    import torch

logger = logging.getLogger(__name__)

_PAIR_CHUNK = 1 << 18
"""Pairs computed at once by ``VariantFeatures.pair_distances`` (bounds its temporary arrays)."""
_MAX_SET_BITS = 8192
"""Values per multi-valued type kept exactly in the bitsets (the most frequent ones)."""
_PRICE_QUANTILES = (1.0, 99.0)

_FEATURE_FILES = ("codes.npy", "bits.npy", "bit_words.npy", "set_sizes.npy", "numeric.npy", "numeric_defined.npy")
_NEIGHBOUR_FILES = ("neighbours.npy", "neighbour_distances.npy")


# --------------------------------------------------------------------------------------------------------------
# Features and the exact distance
# --------------------------------------------------------------------------------------------------------------
@dataclass
class VariantFeatures:
    """The compact per-variant features the distance is computed from, stored feature-major.

    Column ``i`` of every array describes variant ``i``; each row is one feature, so that computing many pairs
    gathers contiguous one-dimensional arrays.
    """

    codes: np.ndarray
    """int32 (Tc, n): value code of each single-valued categorical type, -1 where undefined."""
    bits: np.ndarray
    """uint64 (W, n): value bitsets of the multi-valued categorical types (values held by one variant omitted)."""
    bit_words: np.ndarray
    """int64 (Tm + 1,): multi-valued type t owns words ``bit_words[t]:bit_words[t + 1]`` of ``bits``."""
    set_sizes: np.ndarray
    """int32 (Tm, n): number of values of each multi-valued type (all of them), 0 where undefined."""
    numeric: np.ndarray
    """float64 (N, n): price (row 0) and the numerical types, normalised to [0, 1], 0 where undefined."""
    numeric_defined: np.ndarray
    """bool (N, n)."""

    def __post_init__(self) -> None:
        presence = self.presence
        self.counts = presence.sum(axis=0).astype(np.int64)
        # derived, packed forms for computing many pairs fast (not saved)
        self._presence_bits = _pack_bits(presence)
        codes = np.asarray(self.codes)
        narrow = [t for t in range(codes.shape[0]) if codes.shape[1] == 0 or codes[t].max() < _LANE_UNDEFINED_U]
        self._wide_types = [t for t in range(codes.shape[0]) if t not in narrow]
        self._lanes_u, self._lanes_v = _pack_lanes(codes[narrow])
        self._numeric_or_nan = np.where(self.numeric_defined, self.numeric, np.nan)

    def __len__(self) -> int:
        return int(self.codes.shape[1])

    @property
    def presence(self) -> np.ndarray:
        """bool (F, n): which features each variant defines."""
        return np.vstack([np.asarray(self.codes) >= 0, np.asarray(self.set_sizes) > 0, self.numeric_defined])

    def subset(self, rows: np.ndarray) -> VariantFeatures:
        return VariantFeatures(
            codes=self.codes[:, rows],
            bits=self.bits[:, rows],
            bit_words=self.bit_words,
            set_sizes=self.set_sizes[:, rows],
            numeric=self.numeric[:, rows],
            numeric_defined=self.numeric_defined[:, rows],
        )

    def pair_distances(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Exact float64 distance of each pair ``(rows[i], cols[i])``."""
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        if len(rows) <= _PAIR_CHUNK:
            return self._pair_chunk(rows, cols)
        out = np.empty(len(rows), dtype=np.float64)
        for start in range(0, len(rows), _PAIR_CHUNK):
            stop = min(start + _PAIR_CHUNK, len(rows))
            out[start:stop] = self._pair_chunk(rows[start:stop], cols[start:stop])
        return out

    def _pair_chunk(self, r: np.ndarray, c: np.ndarray) -> np.ndarray:
        """Distances of ``r`` against ``c``: equal-length index vectors, or shapes that broadcast (a block)."""
        shape = np.broadcast_shapes(r.shape, c.shape)
        union = self.counts.take(r) + self.counts.take(c)
        for word in self._presence_bits:
            union -= np.bitwise_count(word.take(r) & word.take(c))
        # single values: 16-bit lanes, 4 per word; a lane of u equals v's only when both define the same value
        unequal = np.zeros(shape, dtype=np.int64)
        for word_u, word_v in zip(self._lanes_u, self._lanes_v, strict=True):
            x = word_u.take(r) ^ word_v.take(c)
            unequal += np.bitwise_count((((x & _LANE_LOW) + _LANE_LOW) | x) & _LANE_HIGH)
        similarity = (4 * len(self._lanes_u) - unequal).astype(np.float64)
        for t in self._wide_types:
            cu = self.codes[t].take(r)
            similarity += (cu == self.codes[t].take(c)) & (cu >= 0)
        for t in range(self.set_sizes.shape[0]):
            inter = np.zeros(shape, dtype=np.int64)
            for w in range(int(self.bit_words[t]), int(self.bit_words[t + 1])):
                inter += np.bitwise_count(self.bits[w].take(r) & self.bits[w].take(c))
            sizes = self.set_sizes[t]
            # inter > 0 only when both define the type; otherwise this adds 0
            similarity += inter / np.maximum(sizes.take(r) + sizes.take(c) - inter, 1)
        for values in self._numeric_or_nan:
            diff = values.take(r) - values.take(c)
            similarity += np.fmax(1.0 - diff * diff, 0.0)  # NaN (one side undefined) -> 0
        return np.where(union > 0, 1.0 - similarity / np.maximum(union, 1), 0.0)

    def block_distances(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Exact (len(rows), len(cols)) distance matrix."""
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        out = np.empty((len(rows), len(cols)), dtype=np.float64)
        step = max(1, _PAIR_CHUNK // max(len(cols), 1))
        for start in range(0, len(rows), step):
            out[start : start + step] = self._pair_chunk(rows[start : start + step, None], cols[None, :])
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "codes.npy": self.codes,
            "bits.npy": self.bits,
            "bit_words.npy": self.bit_words,
            "set_sizes.npy": self.set_sizes,
            "numeric.npy": self.numeric,
            "numeric_defined.npy": self.numeric_defined,
        }


_LANE_UNDEFINED_U = 0xFFFE
_LANE_UNDEFINED_V = 0xFFFF
_LANE_LOW = np.uint64(0x7FFF7FFF7FFF7FFF)
_LANE_HIGH = np.uint64(0x8000800080008000)


def _pack_bits(flags: np.ndarray) -> np.ndarray:
    """bool (F, n) -> uint64 (ceil(F / 64), n): bit f of word f // 64 is ``flags[f]``."""
    n_words = (flags.shape[0] + 63) // 64
    words = np.zeros((n_words, flags.shape[1]), dtype=np.uint64)
    for f in range(flags.shape[0]):
        words[f // 64] |= np.asarray(flags[f], dtype=np.uint64) << np.uint64(f % 64)
    return words


def _pack_lanes(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes (< 0xFFFE) in 16-bit lanes, 4 types per uint64 word; one array for each side of a pair.

    Undefined values (and unused lanes) are 0xFFFE on the u side and 0xFFFF on the v side, so they never match.
    """
    n_types, n = codes.shape
    n_words = (n_types + 3) // 4
    lanes_u = np.zeros((n_words, n), dtype=np.uint64)
    lanes_v = np.zeros((n_words, n), dtype=np.uint64)
    for lane in range(4 * n_words):
        shift = np.uint64(16 * (lane % 4))
        if lane < n_types:
            defined = codes[lane] >= 0
            u = np.where(defined, codes[lane], _LANE_UNDEFINED_U).astype(np.uint64)
            v = np.where(defined, codes[lane], _LANE_UNDEFINED_V).astype(np.uint64)
        else:
            u = np.full(n, _LANE_UNDEFINED_U, dtype=np.uint64)
            v = np.full(n, _LANE_UNDEFINED_V, dtype=np.uint64)
        lanes_u[lane // 4] |= u << shift
        lanes_v[lane // 4] |= v << shift
    return lanes_u, lanes_v


@dataclass
class _FeatureLayout:
    """What each feature column is (written to the artefact's ``meta.json`` for people and tools)."""

    single_types: list[Any]
    multi_types: list[Any]
    numeric_columns: list[Any]
    price_range: tuple[float, float] | None
    numeric_ranges: dict[str, tuple[float, float]]


def build_features(
    variants: pd.DataFrame, attributes: pd.DataFrame
) -> tuple[list[str], VariantFeatures, _FeatureLayout]:
    """Features of every variant that defines at least one (variants with none are left out)."""
    if variants.empty or "sku" not in variants:
        raise ValueError("similarity needs at least one variant to fit on")
    frame = variants.assign(sku=variants["sku"].astype(str)).drop_duplicates("sku", keep="last")
    skus = frame["sku"].to_numpy(dtype=object)
    n = len(skus)
    sku_index = pd.Index(skus)

    numeric_columns: list[Any] = ["price"]
    numeric_parts: list[np.ndarray] = []
    price = pd.to_numeric(frame["price"], errors="coerce").to_numpy(dtype=np.float64) if "price" in frame else None
    price_range: tuple[float, float] | None = None
    if price is None:
        price = np.full(n, np.nan)
    log_price = np.log1p(np.clip(price, 0.0, None))
    if np.isfinite(log_price).any():
        lo, hi = np.nanpercentile(log_price, _PRICE_QUANTILES)
        price_range = (float(lo), float(hi))
        scaled = np.clip((log_price - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.full(n, 0.5)
        numeric_parts.append(np.where(np.isfinite(log_price), scaled, np.nan))
    else:
        numeric_parts.append(np.full(n, np.nan))

    single_types: list[Any] = []
    multi_types: list[Any] = []
    codes_parts: list[np.ndarray] = []
    bit_parts: list[np.ndarray] = []
    size_parts: list[np.ndarray] = []
    numeric_ranges: dict[str, tuple[float, float]] = {}

    attrs = _clean_attributes(attributes, sku_index)
    if not attrs.empty:
        kinds = attrs.groupby("attribute_type_id")["type"].agg(lambda s: s.mode().iat[0])
        for type_id in sorted(kinds.index, key=str):
            part = attrs[attrs["attribute_type_id"] == type_id]
            if kinds[type_id] == "NUMERICAL":
                values = pd.to_numeric(part["numeric_value"], errors="coerce")
                values = values.fillna(pd.to_numeric(part["raw_value"], errors="coerce"))
                ok = values.notna().to_numpy()
                if not ok.any():
                    continue
                means = pd.Series(values.to_numpy()[ok]).groupby(part["row"].to_numpy()[ok]).mean()
                lo, hi = float(means.min()), float(means.max())
                column = np.full(n, np.nan)
                column[means.index.to_numpy()] = (means.to_numpy() - lo) / (hi - lo) if hi > lo else 0.5
                numeric_parts.append(column)
                numeric_columns.append(type_id)
                numeric_ranges[str(type_id)] = (lo, hi)
            else:
                part = part[part["raw_value"].notna()]
                if part.empty:
                    continue
                rows = part["row"].to_numpy()
                values = part["raw_value"].astype(str).to_numpy()
                pairs = pd.DataFrame({"row": rows, "value": values}).drop_duplicates()
                frequency = pairs["value"].value_counts()
                rank = pd.Series(np.arange(len(frequency)), index=frequency.index)
                value_code = pairs["value"].map(rank).to_numpy(dtype=np.int64)
                row_arr = pairs["row"].to_numpy()
                per_row = np.bincount(row_arr, minlength=n)
                if per_row.max() <= 1:
                    column = np.full(n, -1, dtype=np.int32)
                    column[row_arr] = value_code
                    codes_parts.append(column)
                    single_types.append(type_id)
                else:
                    shared_values = int(min((frequency.to_numpy() >= 2).sum(), _MAX_SET_BITS))
                    if (frequency.to_numpy() >= 2).sum() > _MAX_SET_BITS:
                        logger.warning(
                            "similarity: type %s has more than %d shared values; the rarest are not compared",
                            type_id,
                            _MAX_SET_BITS,
                        )
                    words = (shared_values + 63) // 64
                    bits = np.zeros((words, n), dtype=np.uint64)
                    keep = value_code < shared_values
                    if keep.any():
                        positions = value_code[keep]
                        np.bitwise_or.at(
                            bits,
                            (positions // 64, row_arr[keep]),
                            np.left_shift(np.uint64(1), (positions % 64).astype(np.uint64)),
                        )
                    bit_parts.append(bits)
                    size_parts.append(per_row.astype(np.int32))
                    multi_types.append(type_id)

    numeric = np.vstack(numeric_parts)
    numeric_defined = np.isfinite(numeric)
    numeric = np.where(numeric_defined, numeric, 0.0)
    codes = np.vstack(codes_parts).astype(np.int32) if codes_parts else np.zeros((0, n), dtype=np.int32)
    bit_words = np.concatenate([[0], np.cumsum([b.shape[0] for b in bit_parts], dtype=np.int64)]).astype(np.int64)
    bits = np.vstack(bit_parts) if bit_parts else np.zeros((0, n), dtype=np.uint64)
    set_sizes = np.vstack(size_parts).astype(np.int32) if size_parts else np.zeros((0, n), dtype=np.int32)
    features = VariantFeatures(codes, bits, bit_words, set_sizes, numeric, numeric_defined)
    known = np.flatnonzero(features.counts > 0)
    if len(known) == 0:
        raise ValueError("no variant has a price or an attribute: similarity has nothing to compare")
    if len(known) < n:
        features = features.subset(known)
        skus = skus[known]
    layout = _FeatureLayout(single_types, multi_types, numeric_columns, price_range, numeric_ranges)
    return [str(s) for s in skus], features, layout


def _clean_attributes(attributes: pd.DataFrame, sku_index: pd.Index) -> pd.DataFrame:
    """Attribute rows of known variants, with their variant row and an upper-case ``type``."""
    needed = {"sku", "attribute_type_id", "type", "raw_value"}
    if attributes.empty or not needed <= set(attributes.columns):
        return pd.DataFrame(columns=["row", "attribute_type_id", "type", "raw_value", "numeric_value"])
    frame = attributes.copy()
    frame["row"] = sku_index.get_indexer(frame["sku"].astype(str))
    frame = frame[(frame["row"] >= 0) & frame["attribute_type_id"].notna()]
    frame["type"] = frame["type"].astype(str).str.upper()
    if "numeric_value" not in frame:
        frame["numeric_value"] = np.nan
    return frame[["row", "attribute_type_id", "type", "raw_value", "numeric_value"]]


# --------------------------------------------------------------------------------------------------------------
# Nearest-neighbour search
# --------------------------------------------------------------------------------------------------------------
def _bf16_round(values: np.ndarray) -> np.ndarray:
    """The nearest bfloat16 value (ties to even) of each float32 value, as float32."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return rounded.view(np.float32)


def _bf16_split(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``values ~= hi + lo`` with hi and lo exactly representable in bfloat16 (residual <= 2^-16 |values|)."""
    x = np.asarray(values, dtype=np.float32)
    hi = _bf16_round(x)
    return hi, _bf16_round(x - hi)


def _filter_tensor(values: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """A tensor of float32 values that are all exactly representable in bfloat16 (so no rounding happens)."""
    import torch

    values = np.ascontiguousarray(values, dtype=np.float32)
    if dtype is torch.bfloat16:
        upper = (values.view(np.uint32) >> np.uint32(16)).astype(np.uint16)
        return torch.from_numpy(upper).view(torch.bfloat16)
    return torch.from_numpy(values)


def _bf16_floor(values: np.ndarray) -> np.ndarray:
    """The largest bfloat16 value <= each (non-negative) value, as float32."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32) & np.uint32(0xFFFF0000)
    return bits.view(np.float32)


def _bf16_up(values: np.ndarray) -> np.ndarray:
    """The smallest bfloat16 value >= each float64 value, as float32."""
    values = np.asarray(values, dtype=np.float64)
    v = values.astype(np.float32)
    v = np.where(v < values, np.nextafter(v, np.float32(np.inf)), v).astype(np.float32)
    bits = v.view(np.uint32)
    truncated = bits & np.uint32(0xFFFF0000)  # towards zero: up for negative values
    up = np.where((v > 0) & (truncated != bits), truncated + np.uint32(0x10000), truncated).astype(np.uint32)
    return up.view(np.float32)


@dataclass
class _Embedding:
    """Row and column vectors with ``a_u . b_v = S~(u, v)`` (an upper bound of S) plus the union terms.

    Dims ``[0, dynamic)`` are fixed; the rest depend on the row's threshold and are filled per block:
    ``F`` presence dims (``a = w p_u``, ``b = p_v``), two for ``-w c_v`` and two for ``-w c_u + slack``.
    """

    a: np.ndarray
    b: np.ndarray
    presence: np.ndarray
    dynamic: int


def _categorical_buckets(frequencies: Sequence[np.ndarray], budget: int) -> list[int]:
    """Buckets per categorical type so that they fit ``budget`` (water-filling over the shared values)."""
    shared = [int((f >= 2).sum()) for f in frequencies]
    if sum(shared) <= budget:
        return shared
    cap = budget
    while cap > 1 and sum(min(s, cap) for s in shared) > budget:
        cap -= 1
    return [min(s, cap) for s in shared]


def _unpacked_bits(features: VariantFeatures, t: int) -> np.ndarray:
    """uint8 (n, 64 W): the value bitset of multi-valued type ``t``, one column per value."""
    w0, w1 = int(features.bit_words[t]), int(features.bit_words[t + 1])
    words = np.ascontiguousarray(np.asarray(features.bits[w0:w1]).T)
    return np.unpackbits(words.view(np.uint8), axis=1, bitorder="little")


def _embedding(features: VariantFeatures, bucket_budget: int) -> _Embedding:
    """The filter vectors of ``features``' variants (see the module docstring)."""
    n = len(features)
    codes = np.asarray(features.codes)
    set_sizes = np.asarray(features.set_sizes)
    n_single, n_multi = codes.shape[0], set_sizes.shape[0]
    # values held by one variant can never match: they get no bucket
    single_freq = [np.bincount(codes[t][codes[t] >= 0]) for t in range(n_single)]
    multi_bits = [_unpacked_bits(features, t) for t in range(n_multi)]
    buckets = _categorical_buckets(single_freq + [bits.sum(axis=0) for bits in multi_bits], bucket_budget)
    a_parts: list[np.ndarray] = []
    b_parts: list[np.ndarray] = []
    for t in range(n_single):
        h = buckets[t]
        if h == 0:
            continue
        onehot = np.zeros((n, h), dtype=np.float32)
        column = codes[t]
        shared = (column >= 0) & (single_freq[t][np.maximum(column, 0)] >= 2)
        # values are coded by descending frequency, so ``code % h`` spreads the mass evenly over the buckets
        onehot[np.flatnonzero(shared), column[shared] % h] = 1.0
        a_parts.append(onehot)
        b_parts.append(onehot)
    for t in range(n_multi):
        h = buckets[n_single + t]
        if h == 0:
            continue
        unpacked = multi_bits[t]
        to_bucket = np.zeros((unpacked.shape[1], h), dtype=np.float32)
        to_bucket[np.arange(unpacked.shape[1]), np.arange(unpacked.shape[1]) % h] = 1.0
        counts = unpacked.astype(np.float32) @ to_bucket
        sizes = set_sizes[t].astype(np.float64)
        weight = np.where(sizes > 0, 1.0 / np.sqrt(np.maximum(sizes, 1.0)), 0.0)
        # rounding up keeps sum_b a_ub a_vb >= |A & B| / sqrt(|A||B|) >= Jaccard
        vec = _bf16_up(counts * weight[:, None])
        a_parts.append(vec)
        b_parts.append(vec)
    for f in range(features.numeric.shape[0]):
        p = np.asarray(features.numeric_defined[f], dtype=np.float32)
        x = np.asarray(features.numeric[f], dtype=np.float64)
        # p_u p_v (1 - (x_u - x_v)^2) as three products, each factor rounded up: the sum can only grow
        a_parts.append(np.column_stack([_bf16_up(p * (1.0 - x * x)), _bf16_up(2.0 * p * x), p]))
        b_parts.append(np.column_stack([p, _bf16_up(p * x), _bf16_up(-p * x * x)]))
    presence = np.ascontiguousarray(features.presence.T, dtype=np.float32)
    fixed_a = np.hstack(a_parts).astype(np.float32) if a_parts else np.zeros((n, 0), dtype=np.float32)
    fixed_b = np.hstack(b_parts).astype(np.float32) if b_parts else np.zeros((n, 0), dtype=np.float32)
    dynamic = fixed_a.shape[1]
    n_dyn = presence.shape[1] + 4
    a = np.hstack([fixed_a, np.zeros((n, n_dyn), dtype=np.float32)])
    c_hi, c_lo = _bf16_split(features.counts.astype(np.float32))
    b = np.hstack([fixed_b, presence, c_hi[:, None], c_lo[:, None], np.ones((n, 2), dtype=np.float32)])
    return _Embedding(a=a, b=b, presence=presence, dynamic=dynamic)


class _Neighbours:
    """The k best of each row of a block so far: (n_rows, k) distances (+inf padded, unordered) and columns."""

    def __init__(self, k: int, n_rows: int) -> None:
        self.k = k
        self.dists = np.full((n_rows, k), np.inf)
        self.cols = np.full((n_rows, k), -1, dtype=np.int64)
        self.tau = np.ones(n_rows)
        """Each row's k-th distance, 1 while it has fewer than k neighbours (only ``d < 1`` counts)."""

    def merge(self, rows: np.ndarray, cols: np.ndarray, dists: np.ndarray) -> None:
        """Merge new pairs ``(local row, column, distance)``."""
        keep = (dists <= self.tau[rows]) & (dists < 1.0)
        if not keep.any() or self.k == 0:
            return
        r, c, d = rows[keep], cols[keep], dists[keep]
        if (np.diff(r) < 0).any():  # pairs arrive grouped by row, but not necessarily
            order = np.argsort(r, kind="stable")
            r, c, d = r[order], c[order], d[order]
        counts = np.bincount(r)
        if counts.max() > 8 * self.k:  # a few rows bring very many pairs: keep each row's k nearest first
            order = np.argsort(r + d, kind="stable")  # d < 1: by row, then distance
            r, c, d = r[order], c[order], d[order]
            rank = np.arange(len(r)) - np.repeat(np.cumsum(counts) - counts, counts)
            best = rank < self.k
            r, c, d = r[best], c[best], d[best]
        starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
        touched = r[starts]
        counts = np.diff(np.r_[starts, len(r)])
        rank = np.arange(len(r)) - np.repeat(starts, counts)
        slot = np.repeat(np.arange(len(touched)), counts)
        new_d = np.full((len(touched), int(counts.max())), np.inf)  # at most 8k wide
        new_c = np.full(new_d.shape, -1, dtype=np.int64)
        new_d[slot, rank] = d
        new_c[slot, rank] = c
        all_d = np.hstack([self.dists[touched], new_d])
        all_c = np.hstack([self.cols[touched], new_c])
        pick = np.argpartition(all_d, self.k - 1, axis=1)[:, : self.k]
        self.dists[touched] = np.take_along_axis(all_d, pick, axis=1)
        self.cols[touched] = np.take_along_axis(all_c, pick, axis=1)
        kth = self.dists[touched].max(axis=1)
        self.tau[touched] = np.where(np.isfinite(kth), kth, 1.0)

    def ordered(self) -> tuple[np.ndarray, np.ndarray]:
        """Columns and distances of each row, nearest first (ties by column)."""
        order = np.lexsort((self.cols, self.dists), axis=1)
        return np.take_along_axis(self.cols, order, axis=1), np.take_along_axis(self.dists, order, axis=1)


@dataclass
class SearchSettings:
    """Knobs of the neighbour search (the defaults suit 2 cores; tests shrink them to exercise every path)."""

    exact_limit: int = 4096
    """Up to ``exact_limit ** 2`` pairs (variants x eligible variants), every distance is computed exactly."""
    block_rows: int = 1024
    tile_columns: int = 4096
    bucket_budget: int = 128
    """Filter dimensions shared by all categorical types; larger vocabularies are hashed into buckets (a
    looser filter: more pairs computed exactly, never a missed one)."""
    workers: int = 2
    """Row blocks searched at once (threads); torch runs single-threaded inside the search when above 1."""
    dtype: str | None = None
    """``"bfloat16"`` or ``"float32"`` for the filter product; None picks the faster one on this CPU."""


@dataclass
class SearchResult:
    neighbours: np.ndarray
    """int32 (n, k): each variant's nearest eligible variants, nearest first, padded with -1."""
    distances: np.ndarray
    """float32 (n, k): their distances, padded with +inf."""
    pairs_computed: int
    """Distances computed exactly (n x eligible for a brute-force search; far fewer when filtered)."""


def nearest_neighbours(
    features: VariantFeatures, eligible: np.ndarray, k: int, settings: SearchSettings | None = None
) -> SearchResult:
    """The ``k`` nearest eligible variants (``d < 1``, not itself) of every variant."""
    settings = settings or SearchSettings()
    n = len(features)
    neighbours = np.full((n, max(k, 0)), -1, dtype=np.int32)
    distances = np.full((n, max(k, 0)), np.inf, dtype=np.float32)
    columns = np.flatnonzero(np.asarray(eligible, dtype=bool))
    if k <= 0 or n == 0 or len(columns) == 0:
        return SearchResult(neighbours, distances, 0)
    if n * len(columns) <= settings.exact_limit**2:
        blocks, computed = _exact_search(features, columns, k), n * len(columns)
    else:
        blocks, computed = _filtered_search(features, columns, k, settings)
    for rows, found in blocks:
        neighbours[rows], distances[rows] = found.ordered()
    return SearchResult(neighbours, distances, computed)


def _exact_search(features: VariantFeatures, columns: np.ndarray, k: int) -> list[tuple[np.ndarray, _Neighbours]]:
    n = len(features)
    block = max(1, (1 << 20) // len(columns))
    out = []
    for start in range(0, n, block):
        rows = np.arange(start, min(start + block, n))
        d = features.block_distances(rows, columns)
        local = np.repeat(np.arange(len(rows)), len(columns))
        cols = np.tile(columns, len(rows))
        flat = d.ravel()
        not_self = cols != rows[local]
        found = _Neighbours(k, len(rows))
        found.merge(local[not_self], cols[not_self], flat[not_self])
        out.append((rows, found))
    return out


def _pick_dtype(settings: SearchSettings) -> torch.dtype:
    import torch

    if settings.dtype == "float32":
        return torch.float32
    if settings.dtype == "bfloat16":
        return torch.bfloat16
    a = torch.linspace(0.0, 1.0, 256 * 128).reshape(256, 128)  # not torch.rand: leave the global RNG alone
    b = torch.linspace(1.0, 0.0, 128 * 4096).reshape(128, 4096)
    timings = {}
    for dtype in (torch.float32, torch.bfloat16):
        x, y = a.to(dtype), b.to(dtype)
        torch.mm(x, y)
        start = time.perf_counter()
        for _ in range(3):
            torch.mm(x, y)
        timings[dtype] = time.perf_counter() - start
    return min(timings, key=timings.__getitem__)


def _sort_key(features: VariantFeatures) -> np.ndarray:
    """An order that puts alike variants next to each other: presence pattern, then values (fewest first)."""
    codes = np.asarray(features.codes)
    distinct = [len(np.unique(codes[t])) for t in range(codes.shape[0])]
    by_cardinality = sorted(range(codes.shape[0]), key=lambda t: distinct[t])
    pattern = np.packbits(features.presence, axis=0, bitorder="little")
    keys: list[np.ndarray] = [np.asarray(features.numeric[0])]
    keys += [codes[t] for t in reversed(by_cardinality)]
    keys += [pattern[j] for j in reversed(range(pattern.shape[0]))]
    return np.lexsort(keys)


def _filtered_search(
    features: VariantFeatures, columns: np.ndarray, k: int, settings: SearchSettings
) -> tuple[list[tuple[np.ndarray, _Neighbours]], int]:
    """Filter-and-verify search over row blocks of alike variants (see the module docstring)."""
    import torch

    dtype = _pick_dtype(settings)
    int_view = torch.int16 if dtype is torch.bfloat16 else torch.int32  # the sign bit, read as an integer
    order = _sort_key(features)
    position = np.empty(len(features), dtype=np.int64)
    position[order] = np.arange(len(features))
    columns = columns[np.argsort(position[columns], kind="stable")]
    column_positions = position[columns]

    emb = _embedding(features, settings.bucket_budget)
    col_b = emb.b[columns]
    col_bound = np.abs(col_b).max(axis=0)
    width = settings.tile_columns
    tiles = [_filter_tensor(col_b[s : s + width].T, dtype) for s in range(0, len(columns), width)]
    fixed = emb.dynamic
    n_dims = emb.a.shape[1]
    n_presence = emb.presence.shape[1]
    base_slack = 1e-3
    n_seeds = min(2 * k, len(columns))

    def block_vectors(rows: np.ndarray, tau: np.ndarray) -> torch.Tensor:
        """Row vectors whose product with a column is >= 0 whenever ``d(row, column) <= tau[row]``."""
        a = emb.a[rows].copy()
        w = _bf16_floor((1.0 - tau).astype(np.float32))
        a[:, fixed : fixed + n_presence] = w[:, None] * emb.presence[rows]
        a[:, fixed + n_presence : fixed + n_presence + 2] = -w[:, None]
        # every error of the product (split residuals, fp32 accumulation) is below this margin
        slack = base_slack + n_dims * 2.0**-23 * (np.abs(a) @ col_bound)
        hi, lo = _bf16_split(-w.astype(np.float64) * features.counts[rows] + slack)
        a[:, fixed + n_presence + 2] = hi
        a[:, fixed + n_presence + 3] = lo
        return _filter_tensor(a, dtype)

    def search_block(start: int) -> tuple[np.ndarray, _Neighbours, int]:
        rows = order[start : start + settings.block_rows]
        n_rows = len(rows)
        local = np.arange(n_rows)
        # seeds: the 2k columns nearest in the sorted order (alike variants), computed exactly first
        nearest = np.searchsorted(column_positions, start + local)
        seed_lo = np.clip(nearest - n_seeds // 2, 0, len(columns) - n_seeds)
        r = np.repeat(local, n_seeds)
        c = columns[(seed_lo[:, None] + np.arange(n_seeds)).ravel()]
        keep = c != rows[r]
        found = _Neighbours(k, n_rows)
        _verify(features, rows, found, r[keep], c[keep])
        verified = int(keep.sum())
        a = block_vectors(rows, found.tau)
        first = min(int(nearest[0]) // width, len(tiles) - 1)
        pending_r: list[np.ndarray] = []
        pending_c: list[np.ndarray] = []
        waiting = 0
        for tile_index in [first, *range(first), *range(first + 1, len(tiles))]:
            tile = tiles[tile_index]
            product = torch.mm(a, tile).view(int_view).numpy()
            flat = np.flatnonzero(product >= 0)
            r = flat // tile.shape[1]
            position = flat % tile.shape[1] + tile_index * width
            c = columns[position]
            # rows whose k-th distance is 0 cannot improve; seeded pairs are already computed
            keep = (found.tau[r] > 0.0) & (c != rows[r])
            keep &= (position < seed_lo[r]) | (position >= seed_lo[r] + n_seeds)
            pending_r.append(r[keep])
            pending_c.append(c[keep])
            waiting += int(keep.sum())
            # merging costs O(rows x k): tighten the thresholds after the home tile, then in batches
            if waiting and (tile_index == first or waiting >= n_rows * k // 2):
                _verify(features, rows, found, np.concatenate(pending_r), np.concatenate(pending_c))
                verified += waiting
                pending_r, pending_c, waiting = [], [], 0
                a = block_vectors(rows, found.tau)
        if waiting:
            _verify(features, rows, found, np.concatenate(pending_r), np.concatenate(pending_c))
            verified += waiting
        return rows, found, verified

    # blocks are independent: two workers keep both cores busy through the single-threaded numpy steps
    starts = range(0, len(order), settings.block_rows)
    threads = torch.get_num_threads()
    try:
        if settings.workers > 1:
            torch.set_num_threads(1)
            with ThreadPoolExecutor(settings.workers) as pool:
                results = list(pool.map(search_block, starts))
        else:
            results = [search_block(start) for start in starts]
    finally:
        torch.set_num_threads(threads)
    verified = sum(count for _, _, count in results)
    logger.info(
        "similarity search: %d rows, %d columns, %d pairs computed exactly (%.0f per row), filter dtype %s",
        len(order),
        len(columns),
        verified,
        verified / max(len(order), 1),
        dtype,
    )
    return [(rows, found) for rows, found, _ in results], verified


def _verify(features: VariantFeatures, rows: np.ndarray, found: _Neighbours, r: np.ndarray, c: np.ndarray) -> None:
    """Compute the pairs ``(rows[r], c)`` exactly and merge them into ``found``."""
    found.merge(r, c, features.pair_distances(rows[r], c))


# --------------------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------------------
def similarity_config(hyperparameters: Mapping[str, Any]) -> SimilarityConfig:
    """``SimilarityConfig`` from training hyper-parameters: a ``similarity_config`` dict or a ``neighbours`` key."""
    raw = hyperparameters.get("similarity_config", hyperparameters.get("similarityConfig"))
    if isinstance(raw, SimilarityConfig):
        return raw
    if isinstance(raw, Mapping):
        return SimilarityConfig.model_validate(dict(raw))
    if "neighbours" in hyperparameters:
        return SimilarityConfig(neighbours=hyperparameters["neighbours"])
    return SimilarityConfig()


class SimilarityModel(PredictionModel):
    """Content similarity over attributes and price; retrieves and scores for product-detail and cart pages."""

    name = "similarity"
    artefact_files: ClassVar[tuple[str, ...]] = (
        "skus.json",
        "meta.json",
        *_FEATURE_FILES,
        *_NEIGHBOUR_FILES,
    )

    def __init__(self, version: str | None = None, search: SearchSettings | None = None) -> None:
        super().__init__(version)
        self.search = search or SearchSettings()
        self.skus: list[str] = []
        self.features: VariantFeatures | None = None
        self.neighbours: np.ndarray | None = None
        self.neighbour_distances: np.ndarray | None = None
        self.meta: dict[str, Any] = {}
        self._row_of: dict[str, int] = {}
        self._alignment: tuple[int, np.ndarray, np.ndarray] | None = None

    # --- training -------------------------------------------------------------------------------------------
    def fit(self, data: TrainingData) -> FitReport:
        started = time.perf_counter()
        config = similarity_config(data.hyperparameters)
        skus, features, layout = build_features(data.variants, data.attributes)
        eligible_by_sku = _eligible(data.variants)
        eligible = np.array([eligible_by_sku.get(s, True) for s in skus], dtype=bool)
        k = min(config.neighbours, max(len(skus) - 1, 0))
        result = nearest_neighbours(features, eligible, k, self.search)
        neighbours, distances = result.neighbours, result.distances
        self._set_state(skus, features, neighbours, distances)
        self.meta = {
            "neighbours": k,
            "single_valued_types": [str(t) for t in layout.single_types],
            "multi_valued_types": [str(t) for t in layout.multi_types],
            "numeric_columns": [str(t) for t in layout.numeric_columns],
            "price_log_range": layout.price_range,
            "numeric_ranges": layout.numeric_ranges,
        }
        found = neighbours >= 0
        seconds = time.perf_counter() - started
        logger.info("similarity fitted on %d variants in %.1f s (k=%d)", len(skus), seconds, k)
        return FitReport(
            hyperparameters={"neighbours": config.neighbours},
            metrics={
                "coverage": float(found.any(axis=1).mean()) if len(skus) else 0.0,
                "mean_neighbours": float(found.sum(axis=1).mean()) if len(skus) else 0.0,
                "mean_neighbour_distance": float(distances[found].mean()) if found.any() else 1.0,
                "exact_pairs_per_variant": result.pairs_computed / max(len(skus), 1),
                "fit_seconds": seconds,
            },
            n_items=len(skus),
        )

    def _set_state(
        self, skus: list[str], features: VariantFeatures, neighbours: np.ndarray, distances: np.ndarray
    ) -> None:
        self.skus = skus
        self.features = features
        self.neighbours = neighbours
        self.neighbour_distances = distances
        self._row_of = {sku: i for i, sku in enumerate(skus)}
        self._alignment = None

    def save(self, directory: Path) -> None:
        if self.features is None or self.neighbours is None or self.neighbour_distances is None:
            raise ModelNotFittedError("similarity is not fitted")
        directory = Path(directory)
        for file_name, array in self.features.arrays().items():
            np.save(directory / file_name, np.ascontiguousarray(array))
        np.save(directory / "neighbours.npy", np.ascontiguousarray(self.neighbours))
        np.save(directory / "neighbour_distances.npy", np.ascontiguousarray(self.neighbour_distances))
        (directory / "skus.json").write_text(json.dumps(self.skus))
        (directory / "meta.json").write_text(json.dumps(self.meta))

    @classmethod
    def load(cls, directory: Path, version: str) -> SimilarityModel:
        directory = Path(directory)
        model = cls(version=version)

        def array(file_name: str) -> np.ndarray:
            return load_mapped(directory / file_name)

        features = VariantFeatures(
            codes=array("codes.npy"),
            bits=array("bits.npy"),
            bit_words=np.load(directory / "bit_words.npy"),
            set_sizes=array("set_sizes.npy"),
            numeric=array("numeric.npy"),
            numeric_defined=array("numeric_defined.npy"),
        )
        skus = json.loads((directory / "skus.json").read_text())
        model._set_state(skus, features, array("neighbours.npy"), array("neighbour_distances.npy"))
        model.meta = json.loads((directory / "meta.json").read_text())
        return model

    # --- serving --------------------------------------------------------------------------------------------
    def is_ready(self, ctx: RecommendationContext, catalog: CatalogSnapshot) -> bool:
        """Ready when the page's anchors (viewed product's variants, or the cart) hold a known variant."""
        return self.features is not None and any(s in self._row_of for s in ctx.anchors)

    def retrieve(self, ctx: RecommendationContext, catalog: CatalogSnapshot, size: int) -> np.ndarray:
        """The anchors' neighbours, nearest to any anchor first, as catalogue indices (anchors left out)."""
        anchors = self._anchor_rows(ctx)
        if size <= 0 or len(anchors) == 0 or self.neighbours is None:
            return np.array([], dtype=np.int64)
        pool = np.unique(np.asarray(self.neighbours[anchors]).ravel())
        pool = pool[pool >= 0]
        pool = pool[~np.isin(pool, anchors)]
        _, row_to_catalog = self._align(catalog)
        pool = pool[row_to_catalog[pool] >= 0]
        if len(pool) == 0:
            return np.array([], dtype=np.int64)
        nearest = self._min_distance(pool, anchors)
        order = np.lexsort((pool, nearest))[:size]
        return row_to_catalog[pool[order]].astype(np.int64)

    def score(self, ctx: RecommendationContext, catalog: CatalogSnapshot, candidates: np.ndarray) -> np.ndarray:
        """Minus the smallest exact distance from each candidate to the anchors; NaN for unknown candidates."""
        candidates = np.asarray(candidates, dtype=np.int64)
        scores = np.full(len(candidates), np.nan, dtype=np.float64)
        anchors = self._anchor_rows(ctx)
        if len(anchors) == 0 or len(candidates) == 0:
            return scores
        catalog_to_row, _ = self._align(catalog)
        inside = (candidates >= 0) & (candidates < len(catalog_to_row))
        rows = np.full(len(candidates), -1, dtype=np.int64)
        rows[inside] = catalog_to_row[candidates[inside]]
        known = rows >= 0
        if known.any():
            scores[known] = -self._min_distance(rows[known], anchors)
        return scores

    def distances(self, catalog: CatalogSnapshot, indices: np.ndarray) -> np.ndarray:
        """Symmetric distance matrix among catalogue ``indices`` (unknown variants: 0 to everything)."""
        indices = np.asarray(indices, dtype=np.int64)
        size = len(indices)
        matrix = np.zeros((size, size), dtype=np.float64)
        if self.features is None or size < 2:
            return matrix
        catalog_to_row, _ = self._align(catalog)
        inside = (indices >= 0) & (indices < len(catalog_to_row))
        rows = np.full(size, -1, dtype=np.int64)
        rows[inside] = catalog_to_row[indices[inside]]
        known = np.flatnonzero(rows >= 0)
        if len(known) < 2:
            return matrix
        block = self.features.block_distances(rows[known], rows[known])  # exactly symmetric
        np.fill_diagonal(block, 0.0)
        if len(known) == size:
            return block
        matrix[np.ix_(known, known)] = block
        return matrix

    # --- helpers --------------------------------------------------------------------------------------------
    def _anchor_rows(self, ctx: RecommendationContext) -> np.ndarray:
        rows = {self._row_of[s] for s in ctx.anchors if s in self._row_of}
        return np.array(sorted(rows), dtype=np.int64)

    def _min_distance(self, rows: np.ndarray, anchors: np.ndarray) -> np.ndarray:
        if self.features is None:
            raise ModelNotFittedError("similarity is not fitted")
        return self.features.block_distances(rows, anchors).min(axis=1)

    def _align(self, catalog: CatalogSnapshot) -> tuple[np.ndarray, np.ndarray]:
        """``(catalog index -> model row, model row -> catalog index)``, -1 where absent; cached per revision."""
        cached = self._alignment
        if cached is not None and cached[0] == catalog.revision and len(cached[1]) == len(catalog):
            return cached[1], cached[2]
        row_to_catalog = catalog.indices(self.skus) if self.skus else np.zeros(0, dtype=np.int64)
        catalog_to_row = np.full(len(catalog), -1, dtype=np.int64)
        present = row_to_catalog >= 0
        catalog_to_row[row_to_catalog[present]] = np.flatnonzero(present)
        self._alignment = (catalog.revision, catalog_to_row, row_to_catalog)
        return catalog_to_row, row_to_catalog


def _eligible(variants: pd.DataFrame) -> dict[str, bool]:
    if "eligible" not in variants:
        return {}
    frame = variants.assign(sku=variants["sku"].astype(str)).drop_duplicates("sku", keep="last")
    return dict(zip(frame["sku"], frame["eligible"].fillna(True).astype(bool), strict=True))
