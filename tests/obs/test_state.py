"""observe_state (Lorenz systems): which steps and components, noise, seed, errors."""

import numpy as np
import pytest

from geodl.errors import UserInputError
from geodl.obs import observe_state


def test_every_kth_step_of_chosen_components():
    truth = np.arange(2 * 10 * 3, dtype=float).reshape(2, 10, 3)
    obs = observe_state(truth, every=3, components=[0, 2], noise_std=0.0, offset=1)
    seen = np.isfinite(obs)
    assert seen[:, [1, 4, 7], :][:, :, [0, 2]].all()
    assert seen.sum() == 2 * 3 * 2
    np.testing.assert_array_equal(obs[seen], truth[seen])


def test_noise_std_and_seed():
    truth = np.zeros((4, 2000, 3))
    a = observe_state(truth, every=1, noise_std=0.5, seed=7)
    b = observe_state(truth, every=1, noise_std=0.5, seed=7)
    np.testing.assert_array_equal(a, b)
    assert abs(a.std() - 0.5) < 0.01
    assert not np.array_equal(a, observe_state(truth, every=1, noise_std=0.5, seed=8))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"every": 0, "noise_std": 1.0}, "every must be >= 1"),
        ({"every": 1, "noise_std": -1.0}, "noise_std must be >= 0"),
        ({"every": 1, "noise_std": 1.0, "components": [3]}, r"valid: 0..2"),
        ({"every": 1, "noise_std": 1.0, "components": []}, r"invalid for a state"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(UserInputError, match=match):
        observe_state(np.zeros((1, 5, 3)), **kwargs)
