"""Tsetlin-machine clause layers as boolean rules, and an integer evaluator for them.

``export_rules(model, path)`` writes every clause layer of a trained model as JSON: per
clause the indices of its included literals (literal i < F is "input i is true", F + i is
"input i is false") and how many of them must hold for it to fire (``min_true``: all of them
for an AND, fewer for a capacity clause's threshold), which clauses include a literal and its
negation (``contradictory``), the literal budget LF, the integer votes with their per-output
step, the output scale and bias, and the thresholds that turn the layer's inputs into bits (with ``levels`` L, L
thresholds per input: the clause then counts the level tests its literals pass, and ``min_true`` is in those).

:class:`PackedTM` evaluates one exported layer with integer arithmetic only. The inputs become
bits (one byte each), and a clause's score before its relu, limit − violations, is linear in
them: a true literal is violated where its bit is 0, a negated one where it is 1. So one int8
matrix product (int32 sums) of the bits with each clause's literal signs gives every score,
and a second one of the int8 scores with the integer votes gives every output, scaled as the
hard-mode layer scales it: the outputs equal its outputs to the bit. On a CPU with int8 dot
products (VNNI) this beat the bit-packed forms kdforge used before on every layer measured (byte
tables summed by an embedding bag; bit-sliced popcounts over 64 samples a word): see
``benchmarks/tm.py blocks`` and docs/tm.md. On many values oneDNN's int8 linear layers
(:class:`IntLinear`) beat both: without VNNI (:func:`fast_int8`) PyTorch's int8 product is a slow
fallback and oneDNN runs on AVX2's int8 multiply-adds. On a few values, or where no int8 way pays,
the same products run in float32. :meth:`PackedTM.way` says which; ``benchmarks/tm.py paths`` times
each. Every path is exact.
"""

from __future__ import annotations

import functools
import threading
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdforge.errors import KdforgeError
from kdforge.export import EXPORT_FORMATS, load_student
from kdforge.families.tm.clause import ClauseLayer, integer_vote, level_thresholds, vote_factor
from kdforge.families.tm.flat import TMFlat
from kdforge.files import read_json, write_json

RULES_FORMAT = 3  # 2: min_true and contradictory per clause; 3: levels, and a list of thresholds per input
# float32 arrays that the float32 way of :class:`PackedTM` fills in place, per thread (calls in one thread run one
# after the other, so layers of the same shapes can share them), by (input shape, clauses, outputs)
_SCRATCH = threading.local()
SCRATCH_SHAPES = 64  # kept at most, per thread
SCRATCH_VALUES = 65536  # kept only for inputs of at most this many values: on more a fresh array costs little
PLANS = 256  # float32 plans (a layer and an input shape each) kept at most, per thread
# levels that are no power of two: a search per value below this many values per level, L comparisons in NumPy from
# there on (3 levels, 2 threads: level at 4,096 values, the comparisons ~1.4x faster at 6,144 and ~5x at 16,384)
PACKED_SEARCHED_PER_LEVEL = 1024


def layer_rules(layer: ClauseLayer, thresholds: list[float] | None = None) -> dict[str, Any]:
    """One clause layer as plain data. ``thresholds``: per input, the value above which the
    input is true (default 0.5: the layer's own inputs in [0, 1]); with ``levels`` L, each input has the L
    thresholds of its levels (2j − 1) / 2L."""
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
        "levels": layer.levels,
        "thresholds": [[t] for t in thresholds]
        if thresholds is not None
        else [layer.level_thresholds.tolist()] * layer.in_features,
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
    if rules.get("version") == 2:  # one boolean per input: version 3 with levels 1
        for layer in rules.get("layers", {}).values():
            layer["levels"], layer["thresholds"] = 1, [[t] for t in layer["thresholds"]]
        rules["version"] = RULES_FORMAT
    if rules.get("version") != RULES_FORMAT:
        raise KdforgeError(
            f"'{path}' has tm-rules version {rules.get('version')}; this kdforge reads versions 2 and {RULES_FORMAT}"
        )
    return rules


@functools.cache
def fast_int8() -> bool:
    """Whether int8 matrix products pay on this CPU: PyTorch has the kernel and the CPU has int8 dot-product
    instructions (VNNI). Without them the kernel is a slow fallback, many times slower than a float32 product
    (``benchmarks/tm.py packed`` measures both on the CPU it runs on)."""
    has_vnni = getattr(torch.cpu, "_is_vnni_supported", lambda: False)
    return has_vnni() and has_int8_kernel()


@functools.cache
def has_int8_kernel() -> bool:
    """Whether this PyTorch multiplies int8 matrices on the CPU (``torch._int_mm``, int32 sums; not every build
    has the kernel)."""
    try:
        torch._int_mm(torch.zeros(1, 8, dtype=torch.int8), torch.zeros(8, 8, dtype=torch.int8))
    except (RuntimeError, AttributeError):
        return False
    return True


class IntLinear:
    """oneDNN's int8 linear layer (``torch.ops.onednn.qlinear_pointwise``, in x86 builds of PyTorch): uint8 inputs
    [N, in] times int8 ``weight`` [in, out], int32 sums, every scale 1 and zero point 0, so that the outputs are the
    exact integer sums (in float32 below 2^24). On a CPU without VNNI it runs on AVX2's int8 multiply-adds."""

    def __init__(self, weight: torch.Tensor):
        self.packed = torch.ops.onednn.qlinear_prepack(weight.t().contiguous().to(torch.int8), None)
        self.scale, self.zero = torch.ones(weight.size(1)), torch.zeros(weight.size(1), dtype=torch.long)

    def __call__(self, x: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype, relu: bool) -> torch.Tensor:
        """``x @ weight + bias`` (relu'd if asked) as ``dtype``; uint8 saturates at 255."""
        post = "relu" if relu else "none"
        return torch.ops.onednn.qlinear_pointwise(
            x, 1.0, 0, self.packed, self.scale, self.zero, bias, 1.0, 0, dtype, post, [], ""
        )


@functools.cache
def has_int_linear() -> bool:
    """Whether :class:`IntLinear` runs in this PyTorch, and sums exactly."""
    try:
        sums = IntLinear(torch.tensor([[127], [-127]]))(
            torch.tensor([[127, 126]], dtype=torch.uint8), None, torch.float32, False
        )
    except (RuntimeError, AttributeError, NotImplementedError):
        return False
    return sums.tolist() == [[127.0]]


class PackedTM:
    """A clause layer exported by :func:`layer_rules`, evaluated with integer arithmetic.

    ``PackedTM(rules)(x)``: ``x`` [B, F] (numpy or torch, the layer's inputs) -> [B, K]
    float32 outputs.
    """

    BLOCK_ROWS = 16384  # big batches go in blocks of at most this many rows, so that the scores stay in cache
    # with VNNI, int8 products from this many input values (rows × features) on; on fewer, a few float32 calls in
    # PyTorch are as fast or faster (``benchmarks/results/tm_paths_vnni.md``: 256 × 32, 65 × 128 and 64 × 64
    # 1.1-1.3x faster), most of all inside a model, where each call right after the attention's threads costs more
    INT8_VALUES = 16384
    # oneDNN's int8 layers from this many input values on: each call has a large fixed cost. Without VNNI they beat
    # float32 from here; with VNNI, where the relu and the uint8 scores come out of their first product, they beat
    # PyTorch's two int8 products from the second (``benchmarks/tm.py paths`` measures every way on the CPU it runs on)
    INT_LINEAR_VALUES = 32768
    INT_LINEAR_VALUES_VNNI = 131072

    def __init__(self, rules: dict[str, Any]):
        self.features, self.outputs = rules["in_features"], rules["out_features"]
        self.form, self.lf, self.levels = rules["form"], rules["lf"], rules["levels"]
        thresholds = np.asarray(rules["thresholds"], dtype=np.float32).reshape(self.features, self.levels)
        shared = bool((thresholds == thresholds[:1]).all())
        if self.levels > 1 and not shared:
            raise KdforgeError("PackedTM reads inputs at several levels only where every input has the same thresholds")
        # one threshold for every input (the TM blocks' 0.5) is compared as a scalar, ~4x faster
        self.threshold = float(thresholds[0, 0]) if shared else thresholds[:, 0]
        self.threshold_t = torch.as_tensor(self.threshold)
        self.level_thresholds = thresholds[0].tolist()
        self.level_thresholds_t = torch.from_numpy(thresholds[0].copy())  # sorted: (2j + 1) / 2L
        # with L a power of two, ceil(L·x − ½) clamped to [0, L] counts the thresholds (2j + 1) / 2L below x exactly
        # (L·x and the subtraction are exact in float32, and so are the thresholds): a few passes, not L comparisons
        # or a search per value
        power_of_two = self.levels > 1 and self.levels & (self.levels - 1) == 0
        self.levels_by_arithmetic = power_of_two and torch.equal(self.level_thresholds_t, level_thresholds(self.levels))
        clauses = rules["clauses"]
        self.sizes = np.array([len(c) for c in clauses], dtype=np.int64)
        true, negated = (np.zeros((self.features, len(clauses)), dtype=np.int64) for _ in range(2))
        for j, literals in enumerate(clauses):
            literals = np.asarray(literals, dtype=np.int64)
            true[literals[literals < self.features], j] = 1
            negated[literals[literals >= self.features] - self.features, j] = 1
        # limit − violations = limit − Σ t_i (1 − b_i) − Σ n_i b_i = (limit − Σ t_i) + b · (t − n): linear in the
        # bits b, so one matrix product of the bits with the signs t − n (a literal and its negation cancel) plus
        # an offset per clause gives every clause's score before the relu. With L levels the same holds in units of
        # 1/L, with b_i the number of input i's levels that hold (0..L) and the limits times L
        self.int8 = fast_int8()
        self.signs = torch.from_numpy((true - negated).astype(np.float32))
        self.offsets = torch.from_numpy((self.levels * (self.limits() - true.sum(0))).astype(np.float32))
        if self.int8:
            self.signs_int8, self.offsets_int32 = self.signs.to(torch.int8), self.offsets.to(torch.int32)
        votes = np.asarray(rules["votes"], dtype=np.float64).reshape(len(clauses), self.outputs)  # integers
        top_score = self.levels * int(self.limits().max(initial=0))
        # integer vote sums are exact in float32 while they stay below 2^24; float64 beyond
        largest = float(np.abs(votes).sum(0).max(initial=0.0)) * top_score
        self.sum_dtype = torch.float32 if largest < 2**24 else torch.float64
        self.votes = torch.from_numpy(votes).to(self.sum_dtype)
        fits = top_score <= 127 and np.abs(votes).max(initial=0) <= 127 and len(votes) > 0  # int8 scores and votes
        self.int8_votes = torch.from_numpy(votes.astype(np.int8)) if self.int8 and fits else None
        # on many rows oneDNN's int8 layers beat float32 (AVX2's int8 multiply-adds) and PyTorch's int8 product (VNNI)
        self.int_linear = None
        if fits and self.sum_dtype == torch.float32 and has_int_linear():
            self.int_linear = (IntLinear(self.signs), IntLinear(torch.from_numpy(votes)))
        # one unit of an integer score is worth 1/L of a clause's score
        self.factor = vote_factor(rules["scale"] / self.levels, torch.tensor(rules["vote_step"], dtype=torch.float64))
        self.bias = torch.tensor(rules["bias"], dtype=torch.float32)

    @classmethod
    def products(cls) -> str:
        """How PackedTM multiplies on this CPU, in words."""
        values = "input values (rows × features)"
        if fast_int8():
            products = f"int8 products from {cls.INT8_VALUES:,} {values} on"
            if has_int_linear():
                products += f", oneDNN's int8 layers from {cls.INT_LINEAR_VALUES_VNNI:,} on"
            return f"{products} (the CPU has VNNI), float32 below"
        if has_int_linear():
            return f"oneDNN's int8 layers from {cls.INT_LINEAR_VALUES:,} {values} on (no VNNI), float32 below"
        return "float32 products (no int8 kernel that pays here)"

    def way(self, values: int) -> str:
        """How inputs of this many values (rows × features) are multiplied: "oneDNN" (its int8 layers), "int8"
        (PyTorch's int8 products) or "float32"."""
        if self.int_linear is not None:
            if values >= (self.INT_LINEAR_VALUES_VNNI if self.int8 else self.INT_LINEAR_VALUES):
                return "oneDNN"
        return "int8" if self.int8 and values >= self.INT8_VALUES else "float32"

    def limits(self) -> np.ndarray:
        """[C]: the score of a clause that no included literal violates (capacity: min(|clause|, LF); product: 1)."""
        return np.minimum(self.sizes, self.lf) if self.form == "capacity" else np.ones_like(self.sizes)

    def __call__(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """[B, F] inputs -> [B, K] float32 outputs."""
        return self.evaluate(torch.as_tensor(x)).numpy()

    def evaluate(self, x: torch.Tensor) -> torch.Tensor:
        """[B, F] inputs -> [B, K] float32 outputs, in blocks of at most ``BLOCK_ROWS`` rows (faster on the 65,536
        rows of a Swin-TM's first stage at batch 256, where the int32 scores would be 16 MiB)."""
        x = self.inputs(x)
        blocks = -(-len(x) // self.BLOCK_ROWS)
        if blocks <= 1:
            return self.outputs_of(x)
        out = torch.empty(len(x), self.outputs)
        for part, rows in zip(x.chunk(blocks), out.chunk(blocks)):
            self.outputs_of(part, out=rows)
        return out

    def outputs_of(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """[B, F] inputs (at most ``BLOCK_ROWS``) -> [B, K] outputs (in ``out`` if given)."""
        way = self.way(x.numel())
        if way == "float32":
            return self.few_outputs(x, out)
        if way == "int8":
            return self.vote(self.scores_of(x), out)
        scores_of, votes_of = self.int_linear
        scores = scores_of(self.bits(x).view(torch.uint8), self.offsets, torch.uint8, relu=True)
        return torch.addcmul(self.bias, votes_of(scores, None, torch.float32, relu=False), self.factor, out=out)

    def few_outputs(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """[*, F] inputs, any leading dimensions -> [*, K] outputs (in ``out`` if given) by float32 calls alone: the
        fastest way on a few values (and the only one where no int8 way pays), through this layer's
        :class:`FloatPlan` for the inputs' shape."""
        x = _float32_cpu(x)
        plan = self.plan(x.shape)
        if self.sum_dtype != torch.float32:  # vote sums too wide for float32
            outputs = integer_vote(plan.scores_of(x), self.votes, self.factor, self.bias, self.sum_dtype)
            return outputs if out is None else out.copy_(outputs)
        return plan(x, out)

    def plan(self, shape: torch.Size) -> FloatPlan:
        """This thread's :class:`FloatPlan` of this layer for inputs of ``shape`` (a fresh one for more than
        ``SCRATCH_VALUES`` values)."""
        plans: dict | None = getattr(_SCRATCH, "plans", None)
        if plans is None:
            plans = _SCRATCH.plans = {}
        key = (id(self), shape)
        plan = plans.get(key)
        if plan is None or plan.owner() is not self:  # none yet, or a dead layer's whose id this one took
            plan = FloatPlan(self, shape)
            if shape.numel() <= SCRATCH_VALUES:
                if len(plans) >= PLANS:  # ever new layers or shapes: start afresh
                    plans.clear()
                plans[key] = plan
        return plan

    def few_scores(self, x: torch.Tensor) -> torch.Tensor:
        """[*, F] inputs -> [*, C] clause scores in float32 (small integers: exact), in this thread's scratch array
        (overwritten by its next call)."""
        x = _float32_cpu(x)
        return self.plan(x.shape).scores_of(x)

    def vote(self, scores: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """[B, C] integer clause scores -> [B, K] float32 outputs (in ``out`` if given), as the hard-mode layer votes
        them."""
        if self.int8_votes is None or scores.dtype != torch.int32:  # votes or scores too wide for int8
            outputs = integer_vote(scores, self.votes, self.factor, self.bias, self.sum_dtype)
            return outputs if out is None else out.copy_(outputs)
        # int8 scores times int8 votes, summed in int32: the same exact sums, 2-4x faster than a float32 product
        total = torch._int_mm(scores.to(torch.int8), self.int8_votes)
        return torch.addcmul(self.bias, total, self.factor, out=out)  # total read as float32, exactly

    def clause_scores(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """[B, F] inputs -> [B, C] integer clause scores (a clause fires where its score is > 0), in units of 1/L
        with ``levels`` L."""
        return self.scores(torch.as_tensor(x)).numpy()

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """[B, F] inputs -> [B, C] clause scores: int32 from ``INT8_VALUES`` input values on where int8 products
        pay (:func:`fast_int8`), else float32; integers either way."""
        return self.scores_of(self.inputs(x))

    def scores_of(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`scores` of inputs already [B, F]."""
        if self.int8 and x.numel() >= self.INT8_VALUES:
            return torch._int_mm(self.bits(x), self.signs_int8).add_(self.offsets_int32).clamp_min_(0)
        return self.few_scores(x).clone()  # the caller's own

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Any [B, ...] inputs as [B, F], refused with a clear message when F is not the layer's."""
        if x.dim() != 2:  # calls that would change nothing are skipped: each costs a few µs in a small layer
            x = x.reshape(len(x), -1)
        if x.requires_grad:
            x = x.detach()
        if x.shape[1] != self.features:
            raise KdforgeError(f"PackedTM expects {self.features} input features, got {x.shape[1]}")
        return x

    def bits(self, x: torch.Tensor) -> torch.Tensor:
        """[B, F] inputs -> [B, F] int8 bits, one byte each (NumPy compares big arrays several times faster than
        PyTorch); with ``levels`` L, how many of each input's levels hold, 0..L: by arithmetic in PyTorch where L is a
        power of two (``levels_by_arithmetic``: multithreaded, ~2.5x faster than L comparisons in NumPy), else L
        comparisons summed (~10x faster than one ``torch.bucketize`` on a Swin-TM's rows)."""
        if self.levels_by_arithmetic:
            levels = self.levels
            return torch.mul(x.to("cpu", torch.float32), levels).sub_(0.5).ceil_().clamp_(0, levels).to(torch.int8)
        x = x.float().numpy(force=True)
        if self.levels == 1:
            return torch.from_numpy((x > self.threshold).view(np.int8))
        first, *others = self.level_thresholds
        counts = (x > first).view(np.int8).copy()
        for threshold in others:
            counts += (x > threshold).view(np.int8)
        return torch.from_numpy(counts)


class FloatPlan:
    """:class:`PackedTM`'s float32 way for inputs of one shape: the layer's tensors and scratch arrays bound once (per
    layer, shape and thread), so that a call is five PyTorch calls (a few more with levels) and little else.
    On the few values of a batch-1 layer (a few dozen µs) the Python around the calls, a µs or two a step, was a third
    of the time. The scores come from one ``addmm`` (offsets + bits · signs: small integers, exact in float32). With
    ``levels`` L, the bits count the level thresholds below each input, as hard mode reads them: by arithmetic where L
    is a power of two, else by ``bucketize`` on a few values (a search per value, several times slower) and by L
    comparisons on many."""

    def __init__(self, packed: PackedTM, shape: torch.Size):
        self.owner = weakref.ref(packed)
        rows = shape[:-1].numel()
        self.level_thresholds = packed.level_thresholds_t if packed.levels > 1 else None
        self.level_count, self.by_arithmetic = packed.levels, packed.levels_by_arithmetic
        # the thread's scratch arrays for this shape, which layers of the same sizes share (they run one at a time)
        self.bits, self.shaped_scores, self.shaped_total = scratch(shape, len(packed.sizes), packed.outputs)
        with torch.inference_mode(False):  # so that calls in and out of inference mode may fill them
            searched = (
                self.level_thresholds is not None
                and not self.by_arithmetic
                and shape.numel() < PACKED_SEARCHED_PER_LEVEL * packed.levels
            )
            self.counts = torch.empty(shape, dtype=torch.int32) if searched else None
            self.flat_bits = self.bits.view(rows, shape[-1])
            self.scores = self.shaped_scores.view(rows, len(packed.sizes))
            self.total = self.shaped_total.view(rows, packed.outputs)
        self.threshold, self.signs, self.offsets = packed.threshold_t, packed.signs, packed.offsets
        self.votes, self.factor, self.bias = packed.votes, packed.factor, packed.bias

    def scores_of(self, x: torch.Tensor) -> torch.Tensor:
        """[*, F] float32 inputs of the plan's shape -> [*, C] clause scores, in the scratch array."""
        if self.level_thresholds is None:
            torch.gt(x, self.threshold, out=self.bits)
        elif self.by_arithmetic:
            torch.mul(x, self.level_count, out=self.bits).sub_(0.5).ceil_().clamp_(0, self.level_count)
        elif self.counts is not None:  # a search per value on a few values, as hard mode reads them
            self.bits.copy_(torch.bucketize(x, self.level_thresholds, out_int32=True, out=self.counts))
        else:  # L comparisons on many (``PackedTM.bits``)
            self.bits.copy_(self.owner().bits(x))
        torch.addmm(self.offsets, self.flat_bits, self.signs, out=self.scores).clamp_min_(0)
        return self.shaped_scores

    def __call__(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """[*, F] float32 inputs of the plan's shape -> [*, K] outputs: fresh, or written into ``out`` [B, K]
        (vote sums in float32)."""
        self.scores_of(x)
        torch.mm(self.scores, self.votes, out=self.total)
        if out is None:
            return torch.addcmul(self.bias, self.shaped_total, self.factor)
        return torch.addcmul(self.bias, self.total, self.factor, out=out)


def _float32_cpu(x: torch.Tensor) -> torch.Tensor:
    """``x`` as float32 on the CPU, outside autograd; itself where it is so already (on a few values each call
    costs)."""
    if x.dtype is not torch.float32 or not x.is_cpu or x.requires_grad:
        return x.detach().to("cpu", torch.float32)
    return x


def scratch(shape: torch.Size, clauses: int, outputs: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """This thread's float32 scratch arrays for inputs of ``shape``: bits [*, F], scores [*, C], vote sums [*, K]
    (fresh ones for inputs of more than ``SCRATCH_VALUES``). Made outside inference mode, so that calls in and out of
    it may fill them."""
    lead = shape[:-1]
    if shape.numel() > SCRATCH_VALUES:
        return torch.empty(shape), torch.empty(*lead, clauses), torch.empty(*lead, outputs)
    arrays: dict = getattr(_SCRATCH, "arrays", None) or {}
    key = (tuple(shape), clauses, outputs)
    if key not in arrays:
        if len(arrays) >= SCRATCH_SHAPES:  # inputs of ever new shapes (lengths): start afresh
            arrays.clear()
        with torch.inference_mode(False):
            arrays[key] = (torch.empty(shape), torch.empty(*lead, clauses), torch.empty(*lead, outputs))
        _SCRATCH.arrays = arrays
    return arrays[key]


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
    return (
        f"wrote {rules}: {rules.stat().st_size:,} bytes. Evaluate with {evaluate}; on this CPU it multiplies with "
        f"{PackedTM.products()}"
    )
