"""Tsetlin-machine clause layers as boolean rules, and an integer evaluator for them.

``export_rules(model, path)`` writes every clause layer of a trained model as JSON: per
clause the indices of its included literals (literal i < F is "input i is true", F + i is
"input i is false") and how many of them must hold for it to fire (``min_true``: all of them
for an AND, fewer for a capacity clause's threshold), which clauses include a literal and its
negation (``contradictory``), the literal budget LF, the integer votes with their per-output
step, the output scale and bias, and the thresholds that turn the layer's inputs into bits.

:class:`PackedTM` evaluates one exported layer with integer arithmetic only. The inputs become
bits (one byte each), and a clause's score before its relu, limit − violations, is linear in
them: a true literal is violated where its bit is 0, a negated one where it is 1. So one int8
matrix product (int32 sums) of the bits with each clause's literal signs gives every score,
and a second one of the int8 scores with the integer votes gives every output, scaled as the
hard-mode layer scales it: the outputs equal its outputs to the bit. On the CPU's int8 dot
products this beat the bit-packed forms kdforge used before on every layer measured (byte
tables summed by an embedding bag; bit-sliced popcounts over 64 samples a word): see
``benchmarks/tm.py blocks`` and docs/tm.md. On a few rows (``INT8_ROWS``), or without
PyTorch's int8 CPU kernel, the same products run in float32, still exactly.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdforge.errors import KdforgeError
from kdforge.export import EXPORT_FORMATS, load_student
from kdforge.families.tm.clause import ClauseLayer, TMFlat, integer_vote, vote_factor
from kdforge.files import read_json, write_json

RULES_FORMAT = 2  # 2: min_true and contradictory per clause


def layer_rules(layer: ClauseLayer, thresholds: list[float] | None = None) -> dict[str, Any]:
    """One clause layer as plain data. ``thresholds``: per input, the value above which the
    input is true (default 0.5: the layer's own inputs in [0, 1])."""
    with torch.no_grad():
        votes, step = layer.quantised_votes()
        active = layer.clause_mask.cpu()  # clauses switched off by a budget are left out
        includes = layer.included().cpu()[active]
    return {
        "in_features": layer.in_features,
        "out_features": layer.out_features,
        "clauses": [torch.nonzero(row).flatten().tolist() for row in includes],
        "min_true": layer.min_true().cpu()[active].tolist(),
        "contradictory": layer.contradictory().cpu()[active].tolist(),
        "lf": layer.lf,
        "form": layer.form,
        "votes": votes.to(torch.int64).cpu()[active].tolist(),
        "vote_step": [float(v) for v in step.cpu()],
        "scale": layer.scale,
        "bias": [float(v) for v in layer.bias.detach().cpu()],
        "thresholds": thresholds if thresholds is not None else [0.5] * layer.in_features,
    }


def model_rules(model: nn.Module, input_bits: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every clause layer of ``model`` by module name. A ``tm_flat`` student's layer gets its
    learned input thresholds, so its rules read the model's inputs directly; ``input_bits``
    (the recipe's ``data.booleanize`` thresholds) says how raw data became those inputs."""
    layers = {}
    for name, module in model.named_modules():
        if isinstance(module, ClauseLayer):
            thresholds = (
                model.threshold.detach().cpu().tolist() if isinstance(model, TMFlat) and module is model.tm else None
            )
            layers[name] = layer_rules(module, thresholds)
    if not layers:
        raise KdforgeError(
            f"{type(model).__name__} has no clause layers to export as rules; tm-rules export needs a TM student"
        )
    rules = {"format": "kdforge-tm-rules", "version": RULES_FORMAT, "layers": layers}
    return rules if input_bits is None else {**rules, "input_bits": input_bits}


def export_rules(model: nn.Module, path: str | Path, input_bits: dict[str, Any] | None = None) -> Path:
    path = Path(path)
    write_json(path, model_rules(model, input_bits), indent=None)
    return path


def load_rules(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    rules = read_json(path, "rules file")
    if not isinstance(rules, dict) or rules.get("format") != "kdforge-tm-rules":
        raise KdforgeError(f"'{path}' is not a kdforge tm-rules file")
    if rules.get("version") != RULES_FORMAT:
        raise KdforgeError(
            f"'{path}' has tm-rules version {rules.get('version')}; this kdforge reads version {RULES_FORMAT}"
        )
    return rules


@functools.cache
def has_int8_kernel() -> bool:
    """Whether this PyTorch multiplies int8 matrices on the CPU (``torch._int_mm``, int32 sums; not every build
    has the kernel)."""
    try:
        torch._int_mm(torch.zeros(1, 8, dtype=torch.int8), torch.zeros(8, 8, dtype=torch.int8))
    except (RuntimeError, AttributeError):
        return False
    return True


class PackedTM:
    """A clause layer exported by :func:`layer_rules`, evaluated with integer arithmetic.

    ``PackedTM(rules)(x)``: ``x`` [B, F] (numpy or torch, the layer's inputs) -> [B, K]
    float32 outputs.
    """

    BLOCK_ROWS = 16384  # big batches go in blocks of at most this many rows, so that the scores stay in cache
    # int8 products from this many rows on; on fewer, a few float32 calls in PyTorch alone are faster, most of all
    # inside a model, where each call right after the attention's multi-threaded work costs more
    INT8_ROWS = 32

    def __init__(self, rules: dict[str, Any]):
        self.features, self.outputs = rules["in_features"], rules["out_features"]
        self.form, self.lf = rules["form"], rules["lf"]
        thresholds = np.asarray(rules["thresholds"], dtype=np.float32)
        # one threshold for every input (the TM blocks' 0.5) is compared as a scalar, ~4x faster
        self.threshold = float(thresholds[0]) if len(set(thresholds.tolist())) == 1 else thresholds
        self.threshold_t = torch.as_tensor(self.threshold)
        clauses = rules["clauses"]
        self.sizes = np.array([len(c) for c in clauses], dtype=np.int64)
        true, negated = (np.zeros((self.features, len(clauses)), dtype=np.int64) for _ in range(2))
        for j, literals in enumerate(clauses):
            literals = np.asarray(literals, dtype=np.int64)
            true[literals[literals < self.features], j] = 1
            negated[literals[literals >= self.features] - self.features, j] = 1
        # limit − violations = limit − Σ t_i (1 − b_i) − Σ n_i b_i = (limit − Σ t_i) + b · (t − n): linear in the
        # bits b, so one matrix product of the bits with the signs t − n (a literal and its negation cancel) plus
        # an offset per clause gives every clause's score before the relu
        self.int8 = has_int8_kernel()
        self.signs = torch.from_numpy((true - negated).astype(np.float32))
        self.offsets = torch.from_numpy((self.limits() - true.sum(0)).astype(np.float32))
        if self.int8:
            self.signs_int8, self.offsets_int32 = self.signs.to(torch.int8), self.offsets.to(torch.int32)
        votes = np.asarray(rules["votes"], dtype=np.float64).reshape(len(clauses), self.outputs)  # integers
        top_score = int(self.limits().max(initial=0))
        # integer vote sums are exact in float32 while they stay below 2^24; float64 beyond
        largest = float(np.abs(votes).sum(0).max(initial=0.0)) * top_score
        self.sum_dtype = torch.float32 if largest < 2**24 else torch.float64
        self.votes = torch.from_numpy(votes).to(self.sum_dtype)
        fits = self.int8 and top_score <= 127 and np.abs(votes).max(initial=0) <= 127 and len(votes) > 0
        self.int8_votes = torch.from_numpy(votes.astype(np.int8)) if fits else None
        self.factor = vote_factor(rules["scale"], torch.tensor(rules["vote_step"], dtype=torch.float64))
        self.bias = torch.tensor(rules["bias"], dtype=torch.float32)

    def limits(self) -> np.ndarray:
        """[C]: the score of a clause that no included literal violates (capacity: min(|clause|, LF); product: 1)."""
        return np.minimum(self.sizes, self.lf) if self.form == "capacity" else np.ones_like(self.sizes)

    def __call__(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """[B, F] inputs -> [B, K] float32 outputs."""
        return self.evaluate(torch.as_tensor(x)).numpy()

    def evaluate(self, x: torch.Tensor) -> torch.Tensor:
        """[B, F] inputs -> [B, K] float32 outputs, in blocks of at most ``BLOCK_ROWS`` rows (faster on the 65,536
        rows of a Swin-TM's first stage at batch 256, where the int32 scores would be 16 MiB)."""
        blocks = -(-len(x) // self.BLOCK_ROWS)
        if blocks <= 1:
            return self.vote(self.scores(x))
        out = torch.empty(len(x), self.outputs)
        for part, rows in zip(x.chunk(blocks), out.chunk(blocks)):
            self.vote(self.scores(part), out=rows)
        return out

    def vote(self, scores: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """[B, C] integer clause scores -> [B, K] float32 outputs (in ``out`` if given), as the hard-mode layer votes
        them."""
        if self.int8_votes is None or scores.dtype != torch.int32:  # float32 scores: a few rows, voted in float
            outputs = integer_vote(scores, self.votes, self.factor, self.bias, self.sum_dtype)
            return outputs if out is None else out.copy_(outputs)
        # int8 scores times int8 votes, summed in int32: the same exact sums, 2-4x faster than a float32 product
        total = torch._int_mm(scores.to(torch.int8), self.int8_votes)
        return torch.addcmul(self.bias, total, self.factor, out=out)  # total read as float32, exactly

    def clause_scores(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """[B, F] inputs -> [B, C] integer clause scores (a clause fires where its score is > 0)."""
        return self.scores(torch.as_tensor(x)).numpy()

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """[B, F] inputs -> [B, C] clause scores: int32 from ``INT8_ROWS`` rows on, else (or where PyTorch has no int8
        CPU product) float32, integers either way."""
        x = x.detach().reshape(len(x), -1)
        if x.shape[1] != self.features:
            raise KdforgeError(f"PackedTM expects {self.features} input features, got {x.shape[1]}")
        if self.int8 and len(x) >= self.INT8_ROWS:
            inputs = x.float().numpy(force=True)  # NumPy compares big arrays several times faster than PyTorch
            bits = torch.from_numpy((inputs > self.threshold).view(np.int8))  # one byte per input
            return torch._int_mm(bits, self.signs_int8).add_(self.offsets_int32).clamp_min_(0)
        bits = torch.gt(x.to("cpu", torch.float32), self.threshold_t).float()
        return torch.addmm(self.offsets, bits, self.signs).clamp_min_(0)  # small integers: exact in float32


@EXPORT_FORMATS.register("tm-rules")
def export_run_rules(run_dir: Path, out: Path | None = None) -> str:
    """Every clause layer of a run's TM student as boolean rules (JSON, default
    ``RUN_DIR/student.tm-rules.json``); with ``data.booleanize``, the data thresholds (refitted
    from the run's seed) go with them, so the rules read raw inputs."""
    from kdforge.data import build_dataset, data_seed
    from kdforge.data.booleanize import derived_channels, input_thresholds
    from kdforge.data.bundle import in_memory
    from kdforge.runner import load_run_recipe

    recipe = load_run_recipe(run_dir)
    input_bits = None
    if (b := recipe.data.booleanize) is not None:
        data = build_dataset(
            recipe.data.name,
            seed=data_seed(recipe.data, recipe.seed),
            val_fraction=recipe.data.val_fraction,
            test_fraction=recipe.data.test_fraction,
            **recipe.data.options,
        )
        input_bits = {
            "method": b.method,
            "levels": b.levels,
            "features": b.features,
            "channels": derived_channels(b.features, len(data.input_shape) - 1),
            "thresholds": input_thresholds(in_memory(data.train, "data.booleanize").x, b).tolist(),
            "bits": "feature_maps(x) > threshold (kdforge.data.booleanize), levels stacked as channels, ±1",
        }
    rules = export_rules(load_student(run_dir), out or Path(run_dir) / "student.tm-rules.json", input_bits)
    evaluate = "kdforge.families.tm.PackedTM(kdforge.families.tm.load_rules(path)['layers'][NAME])"
    return f"wrote {rules}: {rules.stat().st_size:,} bytes. Evaluate with {evaluate}"
