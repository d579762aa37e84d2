"""Terms on a spiking student's own activity (no teacher)."""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from torch import nn

from kdforge.errors import KdforgeError
from kdforge.families.lm.rwkv import TernarySpike, spiking_layers
from kdforge.losses.terms import LOSSES, LossTerm, StepContext
from kdforge.taps import unwrap


@LOSSES.register("spike_rate")
class SpikeRate(LossTerm):
    """Holds every spiking channel near a ``target`` firing rate: the mean over spiking layers
    and channels of (rate − target)², the rate being the share of the batch's tokens on which
    the channel spikes (differentiable through the straight-through path). Too sparse and
    channels die, too dense and spikes lose their economy and their information. Logs the
    batch's firing density."""

    uses_teacher = False

    def __init__(self, target: Annotated[float, Field(gt=0, lt=1)] = 0.3):
        super().__init__()
        self.target = target
        self.layers: list[TernarySpike] = []

    def resolve(self, student: nn.Module, teacher: nn.Module | None) -> None:
        self.layers = list(
            spiking_layers(unwrap(student)).values()
        )  # a plain list: the student's modules are not this term's
        if not self.layers:
            raise KdforgeError("spike_rate needs a spiking student (rwkv_spiking with spiking: true)")

    def forward(self, ctx: StepContext) -> torch.Tensor:
        rates = torch.cat([layer.rate for layer in self.layers])
        ctx.logs["spike_density"] = rates.detach().mean()
        return (rates - self.target).square().mean()
