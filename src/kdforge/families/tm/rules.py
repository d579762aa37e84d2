"""Tsetlin-machine clause layers as boolean rules, and a bit-packed evaluator for them.

``export_rules(model, path)`` writes every clause layer of a trained model as JSON: per
clause the indices of its included literals (literal i < F is "input i is true", F + i is
"input i is false") and how many of them must hold for it to fire (``min_true``: all of them
for an AND, fewer for a capacity clause's threshold), which clauses include a literal and its
negation (``contradictory``), the literal budget LF, the integer votes with their per-output
step, the output scale and bias, and the thresholds that turn the layer's inputs into bits.

:class:`PackedTM` evaluates one exported layer with integer and bit operations only, in one
of two layouts. For a narrow layer (the clause blocks of the TM transformers: tens of
inputs), each input row is packed into bytes and every byte looks up, in a table made once,
how many of each clause's literals it violates (``bytes``: one table row per 8 inputs for all
clauses at once, the rows summed by an embedding bag). For a wide one (``tm_flat``: a thousand
inputs), inputs are packed 64 samples to a uint64 word per literal and a clause's violation
count is a bit-sliced popcount over its included literals (``slices``: a carry-save counter,
so the cost follows the clause's few literals, not all 2F). Scores and votes are integers
either way, summed exactly (in float32 below 2^24, or as int8 products in int32 on big
batches) and scaled as the hard-mode layer scales them, so the outputs equal its outputs to
the bit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from kdforge.errors import KdforgeError
from kdforge.export import EXPORT_FORMATS, load_student
from kdforge.families.tm.clause import ClauseLayer, TMFlat, integer_vote, vote_factor
from kdforge.files import read_json, write_json

RULES_FORMAT = 2  # 2: min_true and contradictory per clause
_BIT_SHIFTS = np.arange(8, dtype=np.uint8)[:, None]


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


def int8_votes(votes: np.ndarray, top_score: int) -> torch.Tensor | None:
    """[C, K] int8 votes for ``torch._int_mm`` (int8 products, int32 sums), or None where scores or votes do not fit
    in int8 or this PyTorch has no such CPU kernel."""
    if top_score > 127 or np.abs(votes).max(initial=0) > 127 or len(votes) == 0:
        return None
    as_int8 = torch.from_numpy(votes.astype(np.int8))
    try:
        torch._int_mm(torch.zeros(1, len(votes), dtype=torch.int8), as_int8)
    except (RuntimeError, AttributeError):  # not every build has the CPU kernel
        return None
    return as_int8


class PackedTM:
    """A clause layer exported by :func:`layer_rules`, evaluated with bit operations.

    ``PackedTM(rules)(x)``: ``x`` [B, F] (numpy or torch, the layer's inputs) -> [B, K]
    float32 outputs.
    """

    TABLE_ENTRIES = 1 << 22  # the byte tables' size limit: above it (wide layers) the sliced layout is used
    INT8_ROWS = 512  # int8 votes from this many rows on; on fewer, casting the scores costs more than it saves

    def __init__(self, rules: dict[str, Any], layout: Literal["bytes", "slices"] | None = None):
        """``layout``: ``bytes`` or ``slices`` (see the module docstring); by default ``bytes`` while its tables stay
        small (narrow layers), else ``slices``."""
        self.features, self.outputs = rules["in_features"], rules["out_features"]
        self.form, self.lf = rules["form"], rules["lf"]
        thresholds = np.asarray(rules["thresholds"], dtype=np.float32)
        # one threshold for every input (the TM blocks' 0.5) is compared as a scalar, ~4x faster
        self.threshold = float(thresholds[0]) if len(set(thresholds.tolist())) == 1 else thresholds
        clauses = rules["clauses"]
        width = max(1, max(len(c) for c in clauses))
        # pad every clause to the same length with the literal 2F, which is always true
        self.included = np.full((len(clauses), width), 2 * self.features, dtype=np.int64)
        for j, literals in enumerate(clauses):
            self.included[j, : len(literals)] = literals
        self.sizes = np.array([len(c) for c in clauses], dtype=np.int64)
        # violations are counted exactly up to what a score can tell apart (capacity: up to
        # min(|clause|, LF); product: only whether there is one), beyond that they saturate
        limit = min(width, self.lf) if self.form == "capacity" else 0
        if limit > 255:
            raise KdforgeError(
                "PackedTM scores in 8 bits: clauses with more than 255 literals need lf <= 255 (this layer has lf "
                f"{self.lf})"
            )
        self.planes = limit.bit_length()
        votes = np.asarray(rules["votes"], dtype=np.float64).reshape(len(clauses), self.outputs)  # integers
        top_score = int(self.limits().max(initial=0))
        # integer vote sums are exact in float32 while they stay below 2^24; float64 beyond
        largest = float(np.abs(votes).sum(0).max(initial=0.0)) * top_score
        self.sum_dtype = torch.float32 if largest < 2**24 else torch.float64
        self.votes = torch.from_numpy(votes).to(self.sum_dtype)
        self.int8_votes = int8_votes(votes, top_score)
        self.factor = vote_factor(rules["scale"], torch.tensor(rules["vote_step"], dtype=torch.float64))
        self.bias = torch.tensor(rules["bias"], dtype=torch.float32)
        self.limits_t = torch.from_numpy(self.limits()).float()
        chunks = -(-self.features // 8)
        self.layout = layout or ("bytes" if chunks * 256 * len(clauses) <= self.TABLE_ENTRIES else "slices")
        if self.layout == "bytes":
            # row 256 k + v: minus how many of each clause's literals byte k violates when its value is v, and the
            # limits added to byte 0's rows, so that one embedding-bag sum over a sample's bytes is limit − violations
            # (small integers, exact in float32, where an embedding bag sums them fastest)
            table = -self.byte_tables(chunks)
            table[0] += self.limits()
            self.table = torch.from_numpy(table.reshape(chunks * 256, -1).astype(np.float32))
            self.offsets = np.arange(chunks, dtype=np.uint64) * np.uint64(256)

    def byte_tables(self, chunks: int) -> np.ndarray:
        """[chunks, 256, C]: how many of each clause's literals over inputs 8k..8k+7 a byte value of those inputs
        violates, counted no further than a score can tell apart (see ``limits``)."""
        include = np.zeros((len(self.sizes), 2, chunks * 8), dtype=np.int64)  # [C, (true, false), inputs]
        for j, row in enumerate(self.included):
            literals = row[row < 2 * self.features]
            include[j, literals // self.features, literals % self.features] = 1
        bits = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little").astype(np.int64)
        tables = np.stack(
            [
                (1 - bits) @ include[:, 0, 8 * k : 8 * k + 8].T + bits @ include[:, 1, 8 * k : 8 * k + 8].T
                for k in range(chunks)
            ]
        )  # [chunks, 256, C]: a true literal is violated where its input's bit is 0, a negated one where it is 1
        return np.minimum(tables, self.limits())  # clipped sums still reach the limit iff the true ones do

    def limits(self) -> np.ndarray:
        """[C]: the violation count beyond which a clause's score no longer changes (capacity: min(|clause|, LF);
        product: 1, whether there is one)."""
        return np.minimum(self.sizes, self.lf) if self.form == "capacity" else np.ones_like(self.sizes)

    def __call__(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """[B, F] inputs -> [B, K] float32 outputs."""
        return self.vote(self.scores(torch.as_tensor(x))).numpy()

    def vote(self, scores: torch.Tensor) -> torch.Tensor:
        """[B, C] integer clause scores -> [B, K] float32 outputs, as the hard-mode layer votes them."""
        if self.int8_votes is None or len(scores) < self.INT8_ROWS:
            return integer_vote(scores, self.votes, self.factor, self.bias, self.sum_dtype)
        # int8 scores times int8 votes, summed in int32: the same exact sums, 2-4x faster than a float32 product
        total = torch._int_mm(scores.to(torch.int8), self.int8_votes)
        return torch.addcmul(self.bias, total, self.factor)  # total read as float32, exactly

    def clause_scores(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """[B, F] inputs -> [B, C] integer clause scores (a clause fires where its score is > 0)."""
        return self.scores(torch.as_tensor(x)).numpy()

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """[B, F] inputs -> [B, C] clause scores, integers in float32."""
        inputs = x.detach().reshape(len(x), -1).cpu().float().numpy()
        if inputs.shape[1] != self.features:
            raise KdforgeError(f"PackedTM expects {self.features} input features, got {inputs.shape[1]}")
        if self.layout == "bytes":
            rows = self.byte_rows(inputs)  # [B, chunks]
            bags = np.arange(0, rows.size, rows.shape[1])
            # the embedding-bag kernel itself, without F.embedding_bag's argument handling (~10 µs less per call)
            sums = torch.embedding_bag(self.table, torch.from_numpy(rows.reshape(-1)), torch.from_numpy(bags), False, 0)
            return sums[0].relu_()
        violations = torch.from_numpy(self.violations(self.literal_words(inputs))[:, : len(x)].T)
        return (self.limits_t - violations.float()).relu_()  # max(0, limit − violations)

    def byte_rows(self, x: np.ndarray) -> np.ndarray:
        """[B, F] inputs -> [B, chunks] int64: row 256 k + v of the byte table, v the byte of inputs 8k..8k+7."""
        bits = x > self.threshold  # [B, F] bool, one byte per input
        if self.features % 8:
            bits = np.pad(bits, ((0, 0), (0, -self.features % 8)))
        # eight 0/1 bytes read as one little-endian word w = Σ b_i 2^(8i); times Σ_j 2^(7j + 7) each b_i lands on
        # bit 56 + i and every other product on distinct bits below 56 (no carries), so the top byte is the packed
        # byte, b_0 lowest: ~2x faster than np.packbits
        words = bits.view(np.uint64)
        words *= np.uint64(0x0102040810204080)
        words >>= np.uint64(56)
        words += self.offsets
        return words.view(np.int64)

    def literal_words(self, x: np.ndarray) -> np.ndarray:
        """[B, F] inputs -> [2F + 1, ceil(B / 64)] uint64: bit b of word w is literal's value
        on sample 64·w + b; the last row is the always-true padding literal."""
        # compare in the inputs' own layout and pack along the samples, 8 rows into a byte by
        # shifts and a sum over a middle axis (np.packbits along axis 0 is ~7x slower); only
        # the packed bytes (B·F/8) are transposed, never the float inputs
        bits = x > self.threshold
        bits = np.pad(bits, ((0, -len(bits) % 64), (0, 0))).view(np.uint8)  # whole 64-sample words
        packed = (bits.reshape(-1, 8, self.features) << _BIT_SHIFTS).sum(
            1, dtype=np.uint8
        )  # [B/8, F]: bit j of byte i is sample 8i + j
        true = np.ascontiguousarray(packed.reshape(-1, 8, self.features).transpose(2, 0, 1)).view(np.uint64)[
            ..., 0
        ]  # [F, words], little-endian
        return np.concatenate([true, ~true, np.full((1, true.shape[1]), np.iinfo(np.uint64).max, dtype=np.uint64)])

    def violations(self, words: np.ndarray) -> np.ndarray:
        """Per clause and sample, how many included literals are false, saturating at 255 once
        the count exceeds what the score can use: a bit-sliced carry-save counter over the
        clause's literals, 64 samples per word. -> [C, 64 · words] uint8."""
        planes = [np.zeros((len(self.included), words.shape[1]), dtype=np.uint64) for _ in range(self.planes)]
        saturated = (
            np.zeros_like(planes[0]) if planes else np.zeros((len(self.included), words.shape[1]), dtype=np.uint64)
        )
        for slot in range(self.included.shape[1]):
            carry = ~words[self.included[:, slot]]  # [C, W]: 1 where the literal is false
            for plane in planes[: (slot + 1).bit_length()]:  # slot + 1 literals can count no higher
                carry, plane[...] = carry & plane, plane ^ carry  # half adder: carry where both were 1
            saturated |= carry  # a carry out of the last plane: more violations than the planes hold
        counts = np.zeros((len(self.included), 64 * words.shape[1]), dtype=np.uint8)
        for power, plane in enumerate(planes):
            counts |= np.unpackbits(plane.view(np.uint8), axis=1, bitorder="little") << np.uint8(power)
        counts |= np.unpackbits(saturated.view(np.uint8), axis=1, bitorder="little") * np.uint8(255)
        return counts


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
