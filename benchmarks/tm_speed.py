"""Tsetlin-machine benchmarks, inference speed: ``packed``, ``blocks`` and ``paths`` (see ``tm.py``)."""

from __future__ import annotations

import argparse
import copy
import platform
import time

import numpy as np
import torch

from common import paired
from kdforge.families.tm.clause import set_hard
from kdforge.families.tm.rules import PackedTM, fast_int8, has_int8_kernel, model_rules
from kdforge.models import build_model


def cpu_class() -> str:
    """The packed results are named by it: "vnni" where ``PackedTM`` multiplies in int8 (CPUs with int8 dot products),
    else "no_vnni" (oneDNN's int8 layers on many rows, float32 on few)."""
    return "vnni" if fast_int8() else "no_vnni"


def machine() -> dict:
    """The CPU the speeds were measured on: its name, and how ``PackedTM`` multiplies on it."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            name = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):  # not Linux: the platform's name
        pass
    return {"cpu": name, "capability": torch.backends.cpu.get_cpu_capability(), "products": PackedTM.products()}


def int8_against_float32(rounds: int) -> dict[str, float]:
    """Speed of PyTorch's int8 matrix product (int32 sums) over a float32 one on the same 64 x 64 layer, at 16 and 256
    rows, with the spread of each ratio over the rounds (``rows N_std``): what :func:`fast_int8` decides on (without
    VNNI the int8 kernel is a slow fallback). Empty where PyTorch has no int8 CPU kernel."""
    if not has_int8_kernel():
        return {}
    ratios = {}
    for rows in (16, 256):
        bits, signs = (
            torch.randint(0, 2, (rows, 64), dtype=torch.int8),
            torch.randint(-1, 2, (64, 64), dtype=torch.int8),
        )
        variants = {
            "float32": lambda a=bits.float(), b=signs.float(): a @ b,
            "int8": lambda a=bits, b=signs: torch._int_mm(a, b),
        }
        speeds = paired(variants, rows, rounds, 0.1)
        ratios[f"rows {rows}"] = speeds["int8_over_float32"]
        ratios[f"rows {rows}_std"] = speeds["int8_over_float32_std"]
    return ratios


def packed(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    model = build_model("tm_flat", input_shape=(1, 32, 32), num_classes=10, clauses=args.clauses, lf=8)
    with torch.no_grad():
        model.threshold.normal_(0, 0.3)
        model.tm.votes.normal_(0, 2)
        model.tm.bias.normal_()
    set_hard(model.eval())
    layer = PackedTM(model_rules(model)["layers"]["tm"])
    rows = []
    print(", ".join(f"{k}: {v}" for k, v in machine().items()))
    for batch in args.batch_sizes:
        x = torch.randn(batch, 1, 32, 32)
        x_np = x.numpy()
        with torch.inference_mode():
            identical = bool(np.array_equal(layer(x_np), model(x).numpy()))
            speeds = paired(
                {"float": lambda x=x: model(x), "packed": lambda x_np=x_np: layer(x_np)}, batch, args.rounds
            )
        row = {
            "batch": batch,
            "identical": identical,
            "float_samples_per_s": speeds["float_samples_per_s"],
            "packed_samples_per_s": speeds["packed_samples_per_s"],
            "ratio": speeds["packed_over_float"],
            "ratio_std": speeds["packed_over_float_std"],
        }
        rows.append(row)
        print(
            f"batch {batch:5d}: float {row['float_samples_per_s']:>10,.0f}/s  packed "
            f"{row['packed_samples_per_s']:>10,.0f}/s  ratio {row['ratio']:.1f}x  identical {identical}"
        )
    return {
        "int8_over_float32_products": int8_against_float32(args.rounds),
        "layer": {
            "inputs": 1024,
            "literals": 2048,
            "clauses": args.clauses,
            "outputs": 10,
            "mean_included_literals": float(layer.sizes.mean()),
        },
        "threads": torch.get_num_threads(),
        **machine(),
        "rows": rows,
    }


PACKED_STUDENTS = {  # the shipped presets and recipes' students, on the inputs they are made for
    "vit_tm_tiny (patch 8)": ("vit_tm_tiny", {"patch_size": 8, "lf": 4}, (1, 32, 32)),
    "vit_tm_tiny (patch 4)": ("vit_tm_tiny", {"patch_size": 4, "lf": 4}, (1, 32, 32)),
    "vit_tm_small (patch 4)": ("vit_tm_small", {"patch_size": 4, "lf": 4}, (1, 32, 32)),
    "swin_tm_tiny (patch 2)": ("swin_tm_tiny", {"lf": 4}, (1, 32, 32)),
    "swin_tm_tiny (patch 4)": ("swin_tm_tiny", {"patch_size": 4, "lf": 4}, (1, 32, 32)),
    "tm_flat (digits 8x8, 3 levels)": ("tm_flat", {"clauses": 256, "lf": 4}, (3, 8, 8)),
}


def trained_looking(name: str, options: dict, shape: tuple[int, ...]) -> torch.nn.Module:
    """A student whose include logits and votes are spread as training spreads them."""
    from kdforge.families.tm.clause import clause_layers

    torch.manual_seed(0)
    model = build_model(name, input_shape=shape, num_classes=10, **options).eval()
    with torch.no_grad():
        for layer in clause_layers(model):
            layer.votes.normal_(0, 2)
    return model


class ClauseTime:
    """Seconds a model spends inside its clause layers (a hook before and after each) while it runs."""

    def __init__(self, layers: list[torch.nn.Module]):
        self.seconds = self.started = 0.0
        for layer in layers:
            layer.register_forward_pre_hook(self.start)
            layer.register_forward_hook(self.stop)

    def start(self, *_: object) -> None:
        self.started = time.perf_counter()

    def stop(self, *_: object) -> None:
        self.seconds += time.perf_counter() - self.started


def blocks(args: argparse.Namespace) -> dict:
    rows = {}
    for label, (name, options, shape) in PACKED_STUDENTS.items():
        if args.levels > 1 and name == "tm_flat":  # its inputs are booleans already: one level only
            continue
        model = trained_looking(name, {**options, "levels": args.levels}, shape)
        row: dict = {"params": sum(p.numel() for p in model.parameters())}
        for batch in (1, 256):
            row[f"batch {batch}"] = packed_against_float(model, digits_like(shape, batch), batch, args.rounds)
            row["identical"] = row.get("identical", True) and row[f"batch {batch}"].pop("identical")
            row["clause_layers"] = row[f"batch {batch}"].pop("clause_layers")
            b = row[f"batch {batch}"]
            print(
                f"{label:32s} b{batch:<4d} blocks packed/float {b['clause_blocks']['packed_over_float_hard']:.1f}x  "
                f"student packed/float-hard {b['student']['packed_over_float_hard']:.2f}x"
                f"  identical {row['identical']}",
                flush=True,
            )
        rows[label] = row
    return {
        "threads": torch.get_num_threads(),
        **machine(),
        "rounds": args.rounds,
        "levels": args.levels,
        "students": rows,
    }


@torch.inference_mode()
def packed_against_float(model: torch.nn.Module, x: torch.Tensor, batch: int, rounds: int) -> dict:
    """The clause blocks on their captured inputs and inside the student's forward passes, and the whole student,
    packed against float (hard and soft)."""
    from kdforge.families.tm.clause import clause_layers
    from kdforge.families.tm.packed import PackedClauseLayer, packed_model

    packed = packed_model(model)
    hard, soft = set_hard(copy.deepcopy(model), True), set_hard(copy.deepcopy(model), False)
    floats = clause_layers(hard)
    packs = [m for m in packed.modules() if isinstance(m, PackedClauseLayer)]
    captured, expected = clause_inputs(hard, x)
    pairs = list(zip(captured, floats, packs))

    def run_blocks(which: int) -> None:
        # each output is dropped before the next block runs, as in the model: kept all alive, their memory is given
        # back to the system and faulted in again on every call, which costs the light packed blocks far more
        for u, *layers in pairs:
            layers[which](u)

    blocks = paired({"float_hard": lambda: run_blocks(0), "packed": lambda: run_blocks(1)}, batch, rounds)
    # the same blocks timed where they run, inside each student's forward passes, between the ops around them; the
    # soft student is timed too, so that all three pay the hooks
    timers = {"float_hard": ClauseTime(floats), "packed": ClauseTime(packs)}
    timers["float_soft"] = ClauseTime(clause_layers(soft))
    student = paired(
        {"float_hard": lambda: hard(x), "packed": lambda: packed(x), "float_soft": lambda: soft(x)},
        batch,
        rounds,
        timers=timers,
    )
    in_model = {
        "float_hard_ms": student.pop("float_hard_clause_ms"),
        "packed_ms": student.pop("packed_clause_ms"),
        "packed_over_float_hard": student.pop("packed_clause_over_float_hard"),
        "packed_over_float_hard_std": student.pop("packed_clause_over_float_hard_std"),
    }
    for key in [key for key in student if "_clause_" in key]:  # the soft student's: not reported
        del student[key]
    tokens = captured[0].numel() // captured[0].shape[-1] // batch
    return {
        "identical": bool(torch.equal(packed(x), expected)),
        "clause_layers": len(floats),
        "tokens_per_sample": tokens,
        "clause_blocks": blocks,
        "clause_blocks_in_model": in_model,
        "student": student,
    }


def clause_inputs(model: torch.nn.Module, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The inputs each clause layer of ``model`` receives while it runs on ``x`` (in order), and its outputs."""
    from kdforge.families.tm.clause import clause_layers

    captured: list[torch.Tensor] = []
    hooks = [layer.register_forward_pre_hook(lambda m, a: captured.append(a[0])) for layer in clause_layers(model)]
    try:
        return captured, model(x)
    finally:
        for hook in hooks:
            hook.remove()


def digits_like(shape: tuple[int, ...], batch: int) -> torch.Tensor:
    """``batch`` standardised digits at ``shape`` (32x32 resized; 3x8x8: thermometer bits as ±1)."""
    from kdforge.data import build_dataset

    if shape == (1, 32, 32):
        data = build_dataset("digits", seed=0, val_fraction=0.15, test_fraction=0.2, image_size=32)
        x = data.test.first(512)[0]
    else:
        data = build_dataset("digits", seed=0, val_fraction=0.15, test_fraction=0.2)
        x8 = data.test.first(512)[0]
        x = torch.cat([(x8 > t).float() * 2 - 1 for t in (-0.5, 0.0, 0.5)], dim=1)
    return x[torch.arange(batch) % len(x)].contiguous()


def blocks_table(result: dict) -> str:
    lines = [
        "# Packed clause blocks: shipped TM students, clause layers in integers against hard mode in PyTorch"
        + (f", literals read at {result['levels']} levels" if result.get("levels", 1) > 1 else ""),
        "",
        f"CPU: {result['cpu']} ({result['capability']}; PackedTM multiplies with {result['products']}), "
        f"{result['threads']} threads, {result['rounds']} paired rounds (median). Blocks: every clause layer of "
        "the student on its own captured inputs, one after the other. In model: the time spent inside the clause "
        "layers during the student's own forward passes. Student: the whole forward pass, samples per second in "
        "float soft mode / float hard mode / packed. Ratios: packed over float hard mode (higher is faster).",
        "",
        "| student | clause layers | tokens | identical logits | blocks b1 | blocks b256 | in model b1 | in model b256 "
        "| student b1 | student b256 |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, row in result["students"].items():
        b1, b256 = row["batch 1"], row["batch 256"]

        def whole(b: dict) -> str:
            s = b["student"]
            return (
                f"{s['float_soft_samples_per_s']:,.0f} / {s['float_hard_samples_per_s']:,.0f} / "
                f"{s['packed_samples_per_s']:,.0f} ({s['packed_over_float_hard']:.2f}x)"
            )

        lines.append(
            f"| {label} | {row['clause_layers']} | {b1['tokens_per_sample']} | {row['identical']} | "
            f"{b1['clause_blocks']['packed_over_float_hard']:.1f}x | "
            f"{b256['clause_blocks']['packed_over_float_hard']:.1f}x | "
            f"{b1['clause_blocks_in_model']['packed_over_float_hard']:.1f}x | "
            f"{b256['clause_blocks_in_model']['packed_over_float_hard']:.1f}x | "
            f"{whole(b1)} | {whole(b256)} |"
        )
    return "\n".join(lines) + "\n"


def paths(args: argparse.Namespace) -> dict:
    """Every way PackedTM can multiply on this CPU, per clause-layer shape of the shipped students, against the layer
    in hard mode: what its thresholds (``INT8_VALUES``, ``INT_LINEAR_VALUES``, ``INT_LINEAR_VALUES_VNNI``) are chosen
    from."""
    from kdforge.families.tm.clause import clause_layers
    from kdforge.families.tm.rules import layer_rules

    rows = []
    for label, (name, options, shape) in PACKED_STUDENTS.items():
        hard = set_hard(trained_looking(name, options, shape), True)
        for batch in (1, 256):
            with torch.inference_mode():
                captured, _ = clause_inputs(hard, digits_like(shape, batch))
            seen = set()
            for u, layer in zip(captured, clause_layers(hard)):
                x = u.reshape(-1, u.shape[-1])
                if x.shape in seen:  # layers of one shape run alike: the first stands for them
                    continue
                seen.add(x.shape)
                packed = PackedTM(layer_rules(layer))
                row = {"student": label, "batch": batch, "rows": len(x), "features": x.shape[1]}
                row |= {"clauses": len(packed.sizes), "chosen": packed.way(x.numel())}
                row |= path_speeds(layer, packed, u, x, args.rounds)
                rows.append(row)
                print(f"{label:32s} b{batch:<4d} {len(x):6d} x {x.shape[1]:3d}  {row}", flush=True)
    speeds = ["hard_us", *(f"{path}{std}" for path in ("float32", "int8", "oneDNN") for std in ("", "_std"))]
    return {"threads": torch.get_num_threads(), **machine(), "rounds": args.rounds, "layers": rows, "timings": speeds}


def forced(packed: PackedTM, path: str) -> PackedTM:
    """A copy of ``packed`` that multiplies only one way: "float32", "int8" (PyTorch's int8 products) or "oneDNN"."""
    copy_ = copy.copy(packed)
    copy_.int8 = path == "int8"
    copy_.INT8_VALUES = copy_.INT_LINEAR_VALUES = copy_.INT_LINEAR_VALUES_VNNI = 0
    copy_.int_linear = packed.int_linear if path == "oneDNN" else None
    return copy_


@torch.inference_mode()
def path_speeds(layer: torch.nn.Module, packed: PackedTM, u: torch.Tensor, x: torch.Tensor, rounds: int) -> dict:
    """µs per call of the hard-mode layer, and each path's speed over it, paired; every path's outputs checked equal."""
    expected = layer(u).reshape(len(x), -1)
    variants = {"hard": lambda: layer(u)}
    available = ["float32"] + ["int8"] * packed.int8 + ["oneDNN"] * (packed.int_linear is not None)
    for path in available:
        one_way = forced(packed, path)
        if not torch.equal(one_way.evaluate(x), expected):
            raise AssertionError(f"PackedTM's {path} path differs from hard mode")
        variants[path] = lambda one_way=one_way: one_way.evaluate(x)
    speeds = paired(variants, 1, rounds, seconds=0.1)
    ratios = {f"{path}{std}": speeds[f"{path}_over_hard{std}"] for path in available for std in ("", "_std")}
    return {"hard_us": 1e6 / speeds["hard_samples_per_s"]} | ratios


def paths_table(result: dict) -> str:
    lines = [
        "# PackedTM's ways of multiplying, per clause layer of the shipped TM students",
        "",
        f"CPU: {result['cpu']} ({result['capability']}; by default PackedTM multiplies with {result['products']}), "
        f"{result['threads']} threads, {result['rounds']} paired rounds (median). One row per clause-layer shape "
        "(rows = tokens × batch); each way's speed over the same layer in hard mode in PyTorch (higher is faster), "
        "outputs equal; — where this CPU lacks the way; chosen: the way PackedTM takes by default.",
        "",
        "| student | batch | rows × features → clauses | hard mode µs | float32 | int8 products | oneDNN int8 layers "
        "| chosen |",
        "|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in result["layers"]:
        cells = " | ".join(f"{r[path]:.1f}x" if path in r else "—" for path in ("float32", "int8", "oneDNN"))
        lines.append(
            f"| {r['student']} | {r['batch']} | {r['rows']:,} × {r['features']} → {r['clauses']} | "
            f"{r['hard_us']:,.0f} | {cells} | {r['chosen']} |"
        )
    return "\n".join(lines) + "\n"
