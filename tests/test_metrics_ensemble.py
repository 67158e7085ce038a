"""Ensemble scores: marginal ones against known values, joint ones that see coherent errors."""

from __future__ import annotations

import numpy as np
import pytest

from geodl.metrics import energy_score, ensemble_scores, variogram_score


def test_marginal_scores_of_a_calibrated_gaussian_ensemble():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(4, 2000))
    members = rng.normal(size=(50, 4, 2000))  # the truth is one more draw of the same law
    s = ensemble_scores(members, truth)
    # CRPS of N(0, 1) averaged over y ~ N(0, 1): 1 / sqrt(pi)
    assert s["crps"] == pytest.approx(1 / np.sqrt(np.pi), rel=0.03)
    # a finite ensemble's quantile range covers a new draw with probability p (M - 1) / (M + 1)
    assert s["coverage_68"] == pytest.approx(0.68 * 49 / 51, abs=0.015)
    assert s["coverage_95"] == pytest.approx(0.95 * 49 / 51, abs=0.01)
    assert s["spread_skill"] == pytest.approx(1.0, abs=0.05)
    wide = ensemble_scores(3 * members, truth)
    assert wide["coverage_68"] > 0.95 and wide["spread_skill"] > 5 and wide["crps"] > s["crps"]


def test_nan_truth_entries_are_left_out():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=(2, 100))
    members = rng.normal(size=(10, 2, 100))
    ref = ensemble_scores(members[:, :, :50], truth[:, :50])
    truth[:, 50:] = np.nan
    got = ensemble_scores(members, truth)
    assert got["crps"] == pytest.approx(ref["crps"])
    assert got["energy_score"] == pytest.approx(ref["energy_score"])


def test_joint_scores_prefer_the_ensemble_with_the_right_correlation():
    """Truth errors shared by the whole patch (one offset): an ensemble of coherent offsets has
    the same marginals as independent per-pixel noise, but better energy/variogram scores."""
    rng = np.random.default_rng(2)
    shape = (1, 8, 8)
    n, m, s = 64, 40, 30
    truth = rng.normal(size=(s, 1)) * np.ones((s, n))  # a coherent error field
    coherent = rng.normal(size=(m, s, 1)) * np.ones((m, s, n))
    independent = rng.normal(size=(m, s, n))
    good, bad = ensemble_scores(coherent, truth, shape), ensemble_scores(independent, truth, shape)
    assert good["crps"] == pytest.approx(bad["crps"], rel=0.1)  # marginals alike
    assert good["energy_score"] < 0.9 * bad["energy_score"]  # known to be weakly sensitive
    assert good["variogram_score"] < 0.2 * bad["variogram_score"]
    assert energy_score(coherent, truth) == good["energy_score"]
    assert variogram_score(coherent, truth, shape) == good["variogram_score"]


def test_shapes_are_checked():
    with pytest.raises(ValueError, match=r"\(M, S, N\)"):
        ensemble_scores(np.zeros((3, 4)), np.zeros((4,)))
