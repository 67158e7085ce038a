"""Batch: shape validation on construction, collate, device moves."""

import pytest
import torch

from geodl.data import Batch, collate


def make(b=2, t=3, c=1, h=4, w=5, **over):
    z = torch.zeros(b, t, c, h, w)
    m = torch.ones(b, t, c, h, w, dtype=torch.bool)
    kw = dict(
        target=z, obs=z, obs_mask=m, target_mask=m,
        land_mask=torch.zeros(b, 1, 1, h, w, dtype=torch.bool),
        time_index=torch.arange(b), y0=torch.zeros(b, dtype=torch.long),
        x0=torch.zeros(b, dtype=torch.long),
    )  # fmt: skip
    kw.update(over)
    return Batch(**kw)


def test_valid_batch_and_starts():
    b = make(inputs=torch.zeros(2, 3, 4, 4, 5), static=torch.zeros(2, 1, 2, 4, 5))
    assert b.batch_size == 2
    assert b.starts.tolist() == [[0, 0, 0], [1, 0, 0]]
    with pytest.raises(AttributeError):
        b.target = b.obs  # frozen


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("target", torch.zeros(2, 3, 4, 5), "has 4 dims"),
        ("inputs", torch.zeros(2, 2, 1, 4, 5), r"Batch.inputs has shape \(2, 2, 1, 4, 5\)"),
        ("land_mask", torch.zeros(2, 1, 2, 4, 5, dtype=torch.bool), "Batch.land_mask"),
        ("static", torch.zeros(2, 3, 1, 4, 5), "Batch.static"),
        ("obs_mask", torch.ones(2, 3, 2, 4, 5, dtype=torch.bool), "obs_mask shape"),
        ("obs_mask", torch.ones(2, 3, 1, 4, 5), "must be bool"),
        ("obs", torch.zeros(2, 3, 1, 4, 5, dtype=torch.long), "must be a float tensor"),
        ("time_index", torch.zeros(3, dtype=torch.long), r"expected \(2,\)"),
        ("target", [1, 2], "must be a torch.Tensor"),
    ],
)
def test_invalid_batches(field, value, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make(**{field: value})


def test_collate_and_pin_and_to():
    a, b = make(b=2), make(b=3)
    c = collate([a, b])
    assert c.batch_size == 5 and c.target.shape == (5, 3, 1, 4, 5)
    assert collate(a) is a
    assert c.to("cpu").target.device.type == "cpu"
    with pytest.raises(ValueError, match="None in some items"):
        collate([make(inputs=torch.zeros(2, 3, 1, 4, 5)), make()])


def test_check_finite():
    make().check_finite()
    bad = torch.zeros(2, 3, 1, 4, 5)
    bad[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="target holds NaN"):
        make(target=bad).check_finite()
