"""Gradient-boosted trees flattened into numpy arrays, to score one feature row in microseconds.

scikit-learn's ``HistGradientBoostingRegressor.predict`` validates its input and walks its trees one Python
call per tree: about 0.7 ms for one row of a 60-tree model, several times per forecast step. A forecaster
predicts one row at a time, so the trees of every quantile model are stacked into one node table and walked
together, one vectorised step per tree level (``depth`` steps in all). The rules are scikit-learn's for
numerical features: a NaN goes the way ``missing_go_to_left`` says, else ``x <= threshold`` goes left; the
prediction is the baseline plus the leaf values (identity link, as for the quantile loss). A test checks it
gives scikit-learn's predictions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Forest"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Forest:
    """Several boosted models (one per quantile level) as one table of nodes."""

    levels: tuple[float, ...]
    baseline: FloatArray
    """Per model: the constant every prediction starts from."""
    roots: IntArray
    """Per tree: its root's row in the node table."""
    owner: IntArray
    """Per tree: the model (index into ``levels``) it belongs to."""
    feature: IntArray
    threshold: FloatArray
    missing_left: npt.NDArray[np.bool_]
    left: IntArray
    right: IntArray
    is_leaf: npt.NDArray[np.bool_]
    value: FloatArray
    depth: int

    @staticmethod
    def from_models(models: Mapping[float, Any]) -> Forest:
        """Flatten fitted ``HistGradientBoostingRegressor`` models (numerical features, one output)."""
        levels = tuple(sorted(models))
        parts: list[Any] = []
        roots: list[int] = []
        owner: list[int] = []
        baseline = np.zeros(len(levels))
        offset = 0
        for i, q in enumerate(levels):
            m = models[q]
            if getattr(m, "n_trees_per_iteration_", 1) != 1 or getattr(m, "is_categorical_", None) is not None:
                raise ValueError("only single-output models on numerical features can be flattened")
            baseline[i] = float(np.ravel(m._baseline_prediction)[0])
            for (tree,) in m._predictors:
                nodes = tree.nodes
                parts.append((nodes, offset))
                roots.append(offset)
                owner.append(i)
                offset += len(nodes)
        return Forest._stack(levels, baseline, parts, roots, owner)

    @staticmethod
    def _stack(
        levels: tuple[float, ...], baseline: FloatArray, parts: Sequence[Any], roots: list[int], owner: list[int]
    ) -> Forest:
        if not parts:
            empty_i = np.zeros(0, dtype=np.int64)
            return Forest(
                levels,
                baseline,
                empty_i,
                empty_i,
                empty_i,
                np.zeros(0),
                np.zeros(0, dtype=bool),
                empty_i,
                empty_i,
                np.zeros(0, dtype=bool),
                np.zeros(0),
                0,
            )
        nodes = np.concatenate([n for n, _ in parts])
        shift = np.concatenate([np.full(len(n), off, dtype=np.int64) for n, off in parts])
        is_leaf = nodes["is_leaf"].astype(bool)
        left = np.where(is_leaf, 0, nodes["left"].astype(np.int64) + shift)
        right = np.where(is_leaf, 0, nodes["right"].astype(np.int64) + shift)
        return Forest(
            levels=levels,
            baseline=baseline,
            roots=np.asarray(roots, dtype=np.int64),
            owner=np.asarray(owner, dtype=np.int64),
            feature=nodes["feature_idx"].astype(np.int64),
            threshold=nodes["num_threshold"].astype(np.float64),
            missing_left=nodes["missing_go_to_left"].astype(bool),
            left=left,
            right=right,
            is_leaf=is_leaf,
            value=nodes["value"].astype(np.float64),
            depth=int(nodes["depth"].max()) if len(nodes) else 0,
        )

    def predict_row(self, x: FloatArray) -> dict[float, float]:
        """Each model's prediction for one feature row ``x`` (1-D, the columns the models were fitted on)."""
        node = self.roots.copy()
        for _ in range(self.depth):
            leaf = self.is_leaf[node]
            if leaf.all():
                break
            v = x[self.feature[node]]
            go_left = np.where(np.isnan(v), self.missing_left[node], v <= self.threshold[node])
            node = np.where(leaf, node, np.where(go_left, self.left[node], self.right[node]))
        sums = np.bincount(self.owner, weights=self.value[node], minlength=len(self.levels))
        total = self.baseline + sums
        return {q: float(total[i]) for i, q in enumerate(self.levels)}
