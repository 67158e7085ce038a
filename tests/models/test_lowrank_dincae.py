"""DINCAE with a low-rank covariance head (the loss-families issue, item 2)."""

from __future__ import annotations

import pytest
import torch

from geodl.models import build_model
from geodl.models.outputs import MappingOutput


def test_rank_zero_is_the_diagonal_model_and_rank_adds_one_head():
    base = build_model("dincae", in_channels=1, n_times=3, depth=1, width=4)
    low = build_model("dincae", in_channels=1, n_times=3, depth=1, width=4, rank=2)
    extra = set(low.state_dict()) - set(base.state_dict())
    assert extra and all(k.startswith("factor_head.") for k in extra)
    assert set(base.state_dict()) <= set(low.state_dict())
    out = low(torch.randn(2, 3, 1, 8, 8))
    assert out.factor.shape == (2, 3, 1, 8, 8, 2)
    assert base(torch.randn(2, 3, 1, 8, 8)).factor is None


def test_std_adds_the_low_rank_variance():
    mean = torch.zeros(1, 1, 1, 2, 2)
    log_var = torch.full_like(mean, torch.log(torch.tensor(0.25)).item())
    factor = torch.zeros(1, 1, 1, 2, 2, 2)
    factor[..., 0] = 0.3
    factor[..., 1] = 0.4
    out = MappingOutput(mean, log_var, factor)
    torch.testing.assert_close(out.std, torch.full_like(mean, (0.25 + 0.09 + 0.16) ** 0.5))


def test_samples_have_the_predicted_covariance():
    """Empirical covariance of draws over a 2 x 2 patch = diag(exp(log_var)) + F F^T."""
    gen = torch.Generator().manual_seed(0)
    mean = torch.randn(1, 1, 1, 2, 2, generator=gen, dtype=torch.float64)
    log_var = torch.randn(1, 1, 1, 2, 2, generator=gen, dtype=torch.float64) - 1
    factor = torch.randn(1, 1, 1, 2, 2, 3, generator=gen, dtype=torch.float64)
    out = MappingOutput(mean, log_var, factor)
    draws = out.sample(40000, generator=gen).reshape(40000, 4)
    cov = torch.cov(draws.T)
    f = factor.reshape(4, 3)
    expected = torch.diag(torch.exp(log_var).flatten()) + f @ f.T
    torch.testing.assert_close(cov, expected, atol=0.06, rtol=0.05)
    torch.testing.assert_close(draws.mean(0), mean.flatten(), atol=0.03, rtol=0)
    with pytest.raises(Exception, match="no variance"):
        MappingOutput(mean).sample(2)


def test_config_needs_rank_and_term_together():
    from geodl.errors import ConfigError
    from geodl.tasks import load_config

    quick = "configs/ssh_mapping_quick.yaml"
    with pytest.raises(ConfigError, match="needs a covariance factor: set dincae.model.rank"):
        load_config(quick, ["dincae.loss={lowrank_nll: 1.0}"])
    with pytest.raises(ConfigError, match="no loss term trains the factor"):
        load_config(quick, ["dincae.model={depth: 2, width: 16, rank: 4}"])
    with pytest.raises(ConfigError, match="lowrank_nll"):
        load_config(quick, ["unet.loss={lowrank_nll: 1.0}"])
    with pytest.raises(ConfigError, match="add mse"):
        load_config(
            quick,
            ["dincae.model={depth: 2, width: 16, rank: 4}", "dincae.loss={nll: 1, lowrank_nll: 1}"],
        )
    cfg, _ = load_config(
        quick,
        ["dincae.model={depth: 2, width: 16, rank: 4}", "dincae.loss={mse: 1.0, lowrank_nll: 1.0}"],
    )
    assert cfg.dincae.model["rank"] == 4


def test_lowrank_term_trains_the_factor():
    from geodl.data.batch import Batch
    from geodl.methods.mapping import mapping_loss

    torch.manual_seed(0)
    model = build_model("dincae", in_channels=1, n_times=3, depth=1, width=8, rank=2)
    target = torch.randn(4, 3, 1, 8, 8)
    obs_mask = torch.rand(4, 3, 1, 8, 8) < 0.3
    batch = Batch(
        target=target,
        obs=target * obs_mask,
        obs_mask=obs_mask,
        target_mask=torch.ones_like(obs_mask),
        land_mask=torch.zeros(4, 1, 1, 8, 8, dtype=torch.bool),
        time_index=torch.arange(4),
        y0=torch.zeros(4, dtype=torch.long),
        x0=torch.zeros(4, dtype=torch.long),
    )
    loss_fn = mapping_loss({"mse": 1.0, "lowrank_nll": 1.0})
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        terms = loss_fn(model, batch)
        first = float(terms["loss"].detach()) if first is None else first
        opt.zero_grad()
        terms["loss"].backward()
        assert model.factor_head.conv.weight.grad.abs().sum() > 0
        opt.step()
    assert float(terms["loss"].detach()) < first - 0.1


def test_lowrank_term_leaves_the_mean_to_the_point_wise_term():
    from geodl.data.batch import Batch
    from geodl.methods.mapping import mapping_loss

    model = build_model("dincae", in_channels=1, n_times=3, depth=1, width=4, rank=2)
    z = torch.randn(2, 3, 1, 8, 8)
    m = torch.ones_like(z, dtype=torch.bool)
    batch = Batch(
        target=z, obs=z, obs_mask=m, target_mask=m,
        land_mask=torch.zeros(2, 1, 1, 8, 8, dtype=torch.bool), time_index=torch.arange(2),
        y0=torch.zeros(2, dtype=torch.long), x0=torch.zeros(2, dtype=torch.long),
    )  # fmt: skip
    mapping_loss({"lowrank_nll": 1.0})(model, batch)["loss"].backward()
    assert model.mean_head.conv.weight.grad is None or not model.mean_head.conv.weight.grad.any()
    assert model.factor_head.conv.weight.grad.abs().sum() > 0


def test_factor_starts_small_beside_the_diagonal_variance():
    """A fresh factor head adds well under 1% of the diagonal variance: the joint likelihood
    barely shrinks a factor that starts too wide, so it must start small and grow."""
    torch.manual_seed(0)
    model = build_model("dincae", in_channels=1, n_times=5, depth=2, width=16, rank=4)
    with torch.no_grad():
        out = model(torch.randn(2, 5, 1, 32, 32), torch.rand(2, 5, 1, 32, 32) < 0.1)
    ratio = float((out.factor**2).sum(-1).mean() / torch.exp(out.log_var).mean())
    assert 0 < ratio < 1e-2
