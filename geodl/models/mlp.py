"""Multi-layer perceptron on the last axis; also the default vector field of the neural ODE."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from geodl.models.blocks import activation
from geodl.models.checks import check_positive, check_state

__all__ = ["MLP"]


class MLP(nn.Module):
    """Fully connected network applied to the last axis: ``(..., in_features) -> (..., out_features)``.

    Parameters
    ----------
    in_features, out_features : int
        Sizes of the input and output last axis.
    hidden : sequence of int
        Widths of the hidden layers.
    act : str
        Activation between layers (``relu``, ``gelu``, ``silu``, ``tanh``, ``elu``).

    Examples
    --------
    >>> import torch
    >>> MLP(3, 3, hidden=(16, 16))(torch.zeros(4, 3)).shape
    torch.Size([4, 3])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        hidden: Sequence[int] = (64, 64),
        act: str = "relu",
    ) -> None:
        super().__init__()
        check_positive("MLP", in_features=in_features, out_features=out_features)
        self.in_features = in_features
        sizes = [in_features, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(a, b), activation(act)]
        layers.append(nn.Linear(sizes[-1], out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        check_state(x, "x", "MLP.forward", features=self.in_features)
        return self.net(x)
