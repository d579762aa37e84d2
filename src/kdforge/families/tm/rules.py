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
either way (held exactly in float32 where a float kernel is fastest); the outputs equal the
hard-mode float layer's exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from kdforge.errors import KdforgeError
from kdforge.export import EXPORT_FORMATS, load_student
from kdforge.families.tm.clause import ClauseLayer, TMFlat
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


class PackedTM:
    """A clause layer exported by :func:`layer_rules`, evaluated with bit operations.

    ``PackedTM(rules)(x)``: ``x`` [B, F] (numpy or torch, the layer's inputs) -> [B, K]
    float32 outputs.
    """

    TABLE_ENTRIES = 1 << 22  # the byte tables' size limit: above it (wide layers) the sliced layout is used

    def __init__(self, rules: dict[str, Any], layout: Literal["bytes", "slices"] | None = None):
        """``layout``: ``bytes`` or ``slices`` (see the module docstring); by default ``bytes`` while its tables stay
        small (narrow layers), else ``slices``."""
        self.features, self.outputs = rules["in_features"], rules["out_features"]
        self.form, self.lf = rules["form"], rules["lf"]
        self.thresholds = np.asarray(rules["thresholds"], dtype=np.float32)
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
        largest = float(np.abs(votes).sum(0).max(initial=0.0)) * (self.lf if self.form == "capacity" else 1)
        # integer vote sums are exact in float32 while they stay below 2^24; float64 beyond
        votes_t = torch.from_numpy(np.ascontiguousarray(votes.T))  # [K, C]
        self.votes_t = votes_t.float() if largest < 2**24 else votes_t
        self.factor = torch.from_numpy(rules["scale"] * np.asarray(rules["vote_step"], dtype=np.float64))
        self.bias = torch.tensor(rules["bias"], dtype=torch.float32).double()
        chunks = -(-self.features // 8)
        self.layout = layout or ("bytes" if chunks * 256 * len(clauses) <= self.TABLE_ENTRIES else "slices")
        if self.layout == "bytes":
            # one row per (input byte k, its value v), at 256 k + v; counts are small integers, exact in float32,
            # where an embedding bag sums them fastest
            self.table = torch.from_numpy(self.byte_tables(chunks).reshape(chunks * 256, -1).astype(np.float32))
            # packing an input row into its table rows is one product: input i adds 2^(i mod 8) to byte i // 8,
            # whose rows start at 256 (i // 8)
            inputs = torch.arange(self.features)
            self.packer = torch.zeros(self.features, chunks)
            self.packer[inputs, inputs // 8] = 2.0 ** (inputs % 8).float()
            self.offsets = torch.arange(chunks) * 256.0
            self.thresholds_t = torch.from_numpy(self.thresholds)
        self.limits_t = torch.from_numpy(self.limits()).float()

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
        total = scores.to(self.votes_t.dtype) @ self.votes_t.T  # [B, K] integer sums, exact
        return torch.addcmul(self.bias, total.double(), self.factor).float()

    def clause_scores(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """[B, F] inputs -> [B, C] integer clause scores (a clause fires where its score is > 0)."""
        return self.scores(torch.as_tensor(x)).numpy()

    @torch.inference_mode()
    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """[B, F] inputs -> [B, C] clause scores, integers in float32."""
        x = x.detach().cpu().reshape(len(x), -1)
        if x.shape[1] != self.features:
            raise KdforgeError(f"PackedTM expects {self.features} input features, got {x.shape[1]}")
        if self.layout == "bytes":
            rows = torch.addmm(self.offsets, (x > self.thresholds_t).float(), self.packer).long()  # [B, chunks]
            violations = torch.nn.functional.embedding_bag(rows, self.table, mode="sum")
        else:
            violations = torch.from_numpy(self.violations(self.literal_words(x.numpy()))[:, : len(x)].T).float()
        if self.form == "capacity":  # max(0, min(|clause|, LF) − violations)
            return self.limits_t - torch.minimum(violations, self.limits_t)
        return (violations == 0).float()

    def literal_words(self, x: np.ndarray) -> np.ndarray:
        """[B, F] inputs -> [2F + 1, ceil(B / 64)] uint64: bit b of word w is literal's value
        on sample 64·w + b; the last row is the always-true padding literal."""
        # compare in the inputs' own layout and pack along the samples, 8 rows into a byte by
        # shifts and a sum over a middle axis (np.packbits along axis 0 is ~7x slower); only
        # the packed bytes (B·F/8) are transposed, never the float inputs
        bits = x > self.thresholds
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
