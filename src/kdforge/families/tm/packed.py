"""TM models whose clause layers run on integers: :func:`packed_model`.

Every :class:`ClauseLayer` of a trained model is replaced by a :class:`PackedClauseLayer`,
which evaluates the layer's exported rules with :class:`PackedTM` (integer arithmetic)
and leaves everything else (attention, norms, embeddings) in PyTorch. The result computes
exactly what the model computes in hard mode (the same logits, so the same predictions); it is
for inference on the CPU: no gradients, no clause-score taps.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from kdforge.families.tm.clause import ClauseLayer, integer_vote, vote_factor
from kdforge.families.tm.rules import PackedTM, layer_rules


class PackedClauseLayer(nn.Module):
    """A hard-mode clause layer evaluated by :class:`PackedTM`: ``[*, F] -> [*, K]``."""

    hard = True  # what it computes, for the models that ask their clause layers

    def __init__(self, layer: ClauseLayer):
        super().__init__()
        self.packed = PackedTM(layer_rules(layer))
        self.clauses, self.in_features, self.out_features = layer.clauses, layer.in_features, layer.out_features
        self.levels = layer.levels
        self.register_buffer("active", layer.clause_mask.detach().cpu().clone())
        self.sum_dtype = layer.sum_dtype
        with torch.no_grad():  # for modulated (routed) scores, voted as the hard-mode layer votes them
            votes, step = layer.quantised_votes()
            self.register_buffer("votes", votes.cpu())
            self.register_buffer("factor", vote_factor(layer.scale / layer.levels, step).cpu())
            self.register_buffer("bias", layer.bias.detach().float().cpu())

    def forward(self, u: torch.Tensor, modulate=None) -> torch.Tensor:
        if modulate is None:  # integer scores voted by integer arithmetic
            packed = self.packed
            if packed.way(u.numel()) == "float32":  # on the tokens as they come: no reshapes
                out = packed.few_outputs(u)
            else:
                out = packed.evaluate(u.reshape(-1, self.in_features)).view(*u.shape[:-1], self.out_features)
            return out if u.is_cpu else out.to(u.device)
        lead = u.shape[:-1]
        scores = self.packed.scores(u.reshape(-1, self.in_features)) / self.levels  # [N, active clauses]
        full = scores.new_zeros(len(scores), self.clauses)  # the routing gate reads every clause
        full[:, self.active] = scores
        modulated = modulate(full.view(*lead, self.clauses).to(u.device, u.dtype))
        if self.levels > 1:  # voted as whole multiples of 1/L, as the hard-mode layer votes them
            modulated = torch.round(modulated * self.levels)
        return integer_vote(modulated, self.votes, self.factor, self.bias, self.sum_dtype).to(u.dtype)


def packed_model(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (in eval mode) with every clause layer evaluated by :class:`PackedTM`; its outputs equal
    ``model``'s in hard mode. A model without clause layers is returned as a copy, unchanged."""
    packed = copy.deepcopy(model).eval().requires_grad_(False)
    for name, module in list(packed.named_modules()):
        if isinstance(module, ClauseLayer):
            parent, _, attr = name.rpartition(".")
            setattr(packed.get_submodule(parent) if parent else packed, attr, PackedClauseLayer(module))
    return packed
