import numpy as np
import pytest
import xarray as xr

from geodl.errors import UserInputError
from geodl.methods.observing import ObsSection, observe, observe_field
from geodl.tasks.simulate import observe_dataset


def _truth() -> xr.DataArray:
    rng = np.random.default_rng(0)
    return xr.DataArray(
        rng.standard_normal((12, 16, 16)),
        dims=("time", "y", "x"),
        coords={
            "time": np.arange(12.0),
            "y": ("y", np.arange(16) * 20.0, {"units": "km"}),
            "x": ("x", np.arange(16) * 20000.0, {"units": "m"}),
        },
        name="ssh",
    )


@pytest.mark.parametrize("kind", ["nadir", "swath", "clouds"])
def test_the_cli_and_the_mapping_task_make_the_same_observations(kind):
    truth = _truth()
    made = observe(truth, ObsSection(kind=kind, seed=3), noise_std=0.1)
    cli = observe_dataset(kind, truth.to_dataset(), "ssh", noise_std=0.1, seed=3)
    np.testing.assert_array_equal(made, cli["ssh_obs"].values.astype(np.float32))
    assert np.isfinite(made).any() and np.isnan(made).any()


def test_land_stays_unobserved_and_bad_options_are_one_line():
    truth = _truth()
    truth[:, :4, :] = np.nan
    made = observe(truth, ObsSection(kind="clouds", cover=0.2), noise_std=0.0)
    assert np.isnan(made[:, :4, :]).all() and np.isfinite(made[:, 4:, :]).any()
    with pytest.raises(UserInputError, match="bad option for observe nadir"):
        observe_field(truth, "nadir", swath_width_km=10.0)
    with pytest.raises(UserInputError, match="unknown observation kind"):
        observe_field(truth, "lidar")
