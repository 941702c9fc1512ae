"""Weight initialization shared by the generators and critics: the schemes of the pix2pix reference."""

from typing import Literal, get_args

from torch import nn

Init = Literal["normal", "xavier", "kaiming", "orthogonal"]

_WEIGHTED = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
_NORMS = (nn.BatchNorm2d, nn.SyncBatchNorm, nn.InstanceNorm2d, nn.GroupNorm)


def initialize(module: nn.Module, scheme: Init, gain: float) -> nn.Module:
    """Initialize, in place, every convolution, linear layer and affine norm in ``module``; return it.

    Weights follow ``scheme``: "normal" is N(0, gain), as in the paper; "xavier" and "orthogonal"
    scale by ``gain``; "kaiming" (fan-in) ignores it. Biases start at 0, norm scales at N(1, gain).
    Call it before a norm wraps the weights (spectral norm estimates its singular vectors on wrapping).
    """
    for layer in module.modules():
        if isinstance(layer, _WEIGHTED):
            if scheme == "normal":
                nn.init.normal_(layer.weight, 0.0, gain)
            elif scheme == "xavier":
                nn.init.xavier_normal_(layer.weight, gain=gain)
            elif scheme == "kaiming":
                nn.init.kaiming_normal_(layer.weight, a=0, mode="fan_in")
            elif scheme == "orthogonal":
                nn.init.orthogonal_(layer.weight, gain=gain)
            else:
                raise ValueError(f'unknown init "{scheme}"; choose one of {", ".join(get_args(Init))}')
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, _NORMS) and layer.weight is not None:
            nn.init.normal_(layer.weight, 1.0, gain)
            nn.init.zeros_(layer.bias)
    return module
