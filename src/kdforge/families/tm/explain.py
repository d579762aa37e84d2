"""``kdforge explain RUN_DIR``: what a TM student looked at and which clauses fired.

For the first ``samples`` test images it writes ``explain/sample_NN.png``: the input, the
attention heat-map (ViT-TM: the class token's attention in the last block, or the mean
attention each patch receives with mean pooling; Swin-TM: the attention each pixel
receives in the first window block), the clause-activation map (token models: the summed
clause scores per token of the finest TM block; ``tm_flat``: the literals of the clause that
voted most for the prediction, red where a pixel must be on, blue where it must be off),
and the top-k predictions. ``explain/clauses.md`` lists each clause layer's most used
clauses (how often they fire in hard mode on the test split) with their literals.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdforge.errors import KdforgeError
from kdforge.families.tm.blocks import TMAttention
from kdforge.families.tm.clause import ClauseLayer, hard_mode
from kdforge.families.tm.flat import TMFlat
from kdforge.families.tm.transformer import SwinTM, ViTTM
from kdforge.files import save_figure, write_text


def explain_run(run_dir: str | Path, samples: int = 8, top_k: int = 3, out: str | Path | None = None) -> Path:
    """Write the overlays and the clause report of a run's student; returns the folder."""
    from kdforge.data import recipe_data
    from kdforge.export import load_student
    from kdforge.runner import load_run_recipe

    recipe = load_run_recipe(run_dir)
    model = load_student(run_dir)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, ClauseLayer)}
    if not layers:
        raise KdforgeError(f"{type(model).__name__} has no clause layers: kdforge explain reads TM students")
    data = recipe_data(recipe.data, recipe.seed)
    if len(data.input_shape) != 3:
        raise KdforgeError(
            f"kdforge explain draws image overlays; {data.name} inputs have shape {list(data.input_shape)}, not [C, "
            "H, W]"
        )
    folder = Path(out) if out is not None else Path(run_dir) / "explain"
    folder.mkdir(parents=True, exist_ok=True)
    x, y = data.test.first(samples)
    maps = overlay_maps(model, x)
    for i in range(len(x)):
        _draw(folder / f"sample_{i:02d}.png", x[i], int(y[i]), maps, i, top_k)
    write_text(folder / "clauses.md", clause_report(model, layers, data.test.first(512)[0]))
    return folder


# ----------------------------------------------------------------------------- maps


def overlay_maps(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
    """``probs`` [B, K], and ``attention`` / ``clauses`` [B, h, w] maps (None when the model has none)."""
    attention = _attention_source(model)
    seen: dict[str, Any] = {}
    scores: list[torch.Tensor] = []  # every clause layer's scores, in call order
    hooks = [
        m.activations.register_forward_hook(lambda mod, args, out: scores.append(out))
        for m in model.modules()
        if isinstance(m, ClauseLayer)
    ]
    if attention is not None:
        hooks.append(
            attention[0].register_forward_pre_hook(lambda m, args: seen.__setitem__("map_shape", args[0].shape))
        )
    maps: dict[str, torch.Tensor | None] = {"attention": None, "clauses": None}
    with torch.no_grad(), _keeping_weights(model):
        maps["probs"] = probs = model.eval()(x).softmax(-1)
        if attention is not None:
            maps["attention"] = attention[1](seen, x)
    for hook in hooks:
        hook.remove()
    finest = _finest(scores)
    if finest is not None and not isinstance(model, TMFlat):
        maps["clauses"] = _grid(finest.sum(-1))
    if isinstance(model, TMFlat):
        maps["clauses"] = _literal_map(model, x, probs.argmax(-1))
    return maps


def _attention_source(model: nn.Module) -> tuple[nn.Module, Any] | None:
    """(the block to hook, a function of what it saw -> [B, h, w]) for ViT-TM and Swin-TM."""
    if isinstance(model, ViTTM):
        attn = model.blocks[-1].attn

        def vit(seen: dict[str, Any], x: torch.Tensor) -> torch.Tensor:
            weights = attn.weights.mean(1)  # [B, N, N], heads averaged
            received = weights[:, 0, 1:] if model.cls_token is not None else weights.mean(1)
            return received.reshape(len(x), *(s // model.patch_embed.stride[0] for s in x.shape[2:]))

        return model.blocks[-1], vit
    if isinstance(model, SwinTM):
        block = model.stages[0].blocks[0]  # never shifted

        def swin(seen: dict[str, Any], x: torch.Tensor) -> torch.Tensor:
            b, h, w, _ = seen["map_shape"]
            win = block.window
            hp, wp = -(-h // win) * win, -(-w // win) * win
            received = block.attn.weights.mean((1, 2))  # [B · windows, N]: heads and queries averaged
            return received.view(b, hp // win, wp // win, win, win).transpose(2, 3).reshape(b, hp, wp)[:, :h, :w]

        return block, swin
    return None


@contextlib.contextmanager
def _keeping_weights(model: nn.Module) -> Iterator[None]:
    modules = [m for m in model.modules() if isinstance(m, TMAttention)]
    for m in modules:
        m.keep_weights = True
    try:
        yield
    finally:
        for m in modules:
            m.keep_weights, m.weights = False, None


def _finest(scores: list[torch.Tensor]) -> torch.Tensor | None:
    """Of the clause scores [B, N, C] a forward pass produced, those over the most tokens (the
    last such): the finest spatial map. None when no layer reads tokens."""
    tokens = [s.shape[1] if s.dim() == 3 else 0 for s in scores]
    best = max(tokens, default=0)
    return [s for s, n in zip(scores, tokens) if n == best][-1] if best > 1 else None


def _grid(values: torch.Tensor) -> torch.Tensor:
    """[B, N] per-token values -> [B, s, s]; a leading class token (N = s² + 1) is dropped."""
    n = values.shape[1]
    side = math.isqrt(n)
    if side * side != n:
        values, side = values[:, 1:], math.isqrt(n - 1)
    return values.reshape(len(values), side, side)


def _literal_map(model: TMFlat, x: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor | None:
    """Per sample, the included literals of the clause whose vote for the predicted class was
    largest: +1 where an input must be above its threshold, −1 where it must be below."""
    layer = model.tm if isinstance(model.tm, ClauseLayer) else model.tm.layers[-1]
    if layer.in_features != x[0].numel():
        return None
    with torch.no_grad(), hard_mode(model):
        u = (x.flatten(1) > model.threshold).float()
        scores = layer.clause_scores(u) * layer.clause_mask.to(u.dtype)
        contribution = scores * layer.vote_matrix()[:, predicted].T  # [B, C]
        best = contribution.argmax(1)
        include = layer.included()[best].float()  # [B, 2F]
    f = layer.in_features
    pattern = include[:, :f] - include[:, f:]
    return pattern.reshape(len(x), *x.shape[1:]).sum(1)


def _draw(path: Path, image: torch.Tensor, label: int, maps: dict[str, Any], i: int, top_k: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picture = image.mean(0) if image.shape[0] != 3 else (image - image.min()) / (image.max() - image.min() + 1e-12)
    picture = (picture.permute(1, 2, 0) if picture.dim() == 3 else picture).numpy()
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.4))
    axes[0].imshow(picture, cmap="gray")
    axes[0].set_title(f"input (label {label})")
    for ax, key, title, cmap in (
        (axes[1], "attention", "attention", "inferno"),
        (axes[2], "clauses", "clause activation", "viridis"),
    ):
        ax.imshow(picture, cmap="gray")
        values = maps[key]
        if values is None:
            ax.text(0.5, 0.5, "not available\nfor this model", ha="center", va="center", transform=ax.transAxes)
        else:
            heat = F.interpolate(values[i][None, None].float(), size=image.shape[1:], mode="nearest")[0, 0]
            diverging = key == "clauses" and bool((values < 0).any())
            limit = float(heat.abs().max()) or 1.0
            heat = heat.numpy()
            ax.imshow(
                heat,
                cmap="bwr" if diverging else cmap,
                alpha=0.55,
                vmin=-limit if diverging else None,
                vmax=limit if diverging else None,
            )
        ax.set_title(title)
    for ax in axes[:3]:
        ax.axis("off")
    probs = maps["probs"][i]
    top = probs.topk(min(top_k, len(probs)))
    names = [f"class {int(c)}" for c in top.indices]
    axes[3].barh(
        names[::-1],
        top.values.flip(0).numpy(),
        color=["tab:green" if int(c) == label else "tab:gray" for c in top.indices.flip(0)],
    )
    axes[3].set_xlim(0, 1)
    axes[3].set_title(f"top-{len(names)} predictions")
    fig.tight_layout()
    save_figure(fig, path, dpi=90)
    plt.close(fig)


# ----------------------------------------------------------------------------- clause report


def clause_report(model: nn.Module, layers: dict[str, ClauseLayer], x: torch.Tensor, top: int = 10) -> str:
    """Markdown: per clause layer, its most used clauses (fired = score > 0 in hard mode)."""
    scores: dict[str, torch.Tensor] = {}
    hooks = [
        layer.activations.register_forward_hook(
            lambda m, args, out, name=name: scores.__setitem__(name, out.flatten(0, -2))
        )
        for name, layer in layers.items()
    ]
    with torch.no_grad(), hard_mode(model):
        model.eval()(x)
    for hook in hooks:
        hook.remove()
    lines = [
        "# Clause report",
        "",
        f"Most used clauses on {len(x)} test samples, in hard mode (the exported rules). "
        "A literal `uI` is input I of the clause layer being true, `¬uI` its being false. "
        "Each rule is written as what it computes: `a ∧ b` fires when all its literals hold, `a ∨ b` when any "
        "does, `≥ k of n: …` when at least k of its n literals hold.",
        "",
    ]
    for name, layer in layers.items():
        fired = (scores[name] > 0).float().mean(0)
        active = layer.clause_mask.cpu()
        min_true, contradictory = layer.min_true().cpu(), layer.contradictory().cpu()
        lines += [
            f"## `{name}`: {int(active.sum())} of {layer.clauses} clauses active, {layer.in_features} inputs",
            "",
            form_note(layer),
            f"{int((contradictory & active).sum())} of the active clauses include a literal and its negation "
            "(marked ⚠: one of the two always holds).",
            "",
            "| clause | votes | strongest on output | fires | rule |",
            "|---:|---|---:|---:|---|",
        ]
        votes = layer.vote_matrix().detach()
        for j in [j for j in fired.argsort(descending=True).tolist() if active[j]][:top]:
            rule = rule_text(literal_names(layer, j, model), int(min_true[j]), layer.form, layer.levels)
            side = "for" if layer.polarity[j] > 0 else "against"
            warn = "⚠ " if contradictory[j] else ""
            lines.append(
                f"| {j} | {side} | {int(votes[j].abs().argmax())} | {100 * float(fired[j]):.1f}% | {warn}{rule} |"
            )
        lines.append("")
    return "\n".join(lines)


def form_note(layer: ClauseLayer) -> str:
    """How a layer's clauses score, in one sentence."""
    if layer.form == "product":
        return (
            "Product form: trained as the soft score exp(−κ·m/(τ·F)) of its m failing literals; in hard mode (the "
            "rules) a clause is the AND of its literals and scores 1 when it fires."
        )
    if layer.levels > 1:
        thresholds = ", ".join(f"{t:.3g}" for t in layer.level_thresholds.tolist())
        return (
            f"Capacity form, LF = {layer.lf}, {layer.levels} levels: each literal is read as {layer.levels} tests "
            f"(`uI` above {thresholds}; `¬uI` below them), each holding test worth 1/{layer.levels} of the literal. "
            f"A clause of n literals scores min(n, LF) minus what its literals fail (at least 0), so it fires when "
            f"at least {layer.levels}·(n − min(n, LF)) + 1 of its {layer.levels}·n tests hold."
        )
    return (
        f"Capacity form, LF = {layer.lf}: a clause of n literals scores min(n, LF) minus its failing literals (at "
        "least 0), so it fires when at least n − min(n, LF) + 1 of them hold."
    )


def rule_text(literals: list[str], min_true: int, form: str, levels: int = 1, shown: int = 12) -> str:
    """A clause's rule: ``a ∧ b`` (all must hold), ``a ∨ b`` (any), or ``≥ k of n: a, b, …``; with ``levels`` L,
    ``≥ k of L·n level tests: a, b, …``."""
    n = len(literals)
    if n == 0:
        return "(no literals: always fires)" if form == "product" else "(no literals: never fires)"
    more = f" … (+{n - shown})" if n > shown else ""
    if levels > 1:
        return f"≥ {min_true} of {levels}·{n} level tests: " + ", ".join(literals[:shown]) + more
    if min_true >= n:
        return " ∧ ".join(literals[:shown]) + more
    if min_true <= 1:
        return " ∨ ".join(literals[:shown]) + more
    return f"≥ {min_true} of {n}: " + ", ".join(literals[:shown]) + more


def literal_names(layer: ClauseLayer, clause: int, model: nn.Module) -> list[str]:
    """The clause's included literals; a ``tm_flat`` layer names input positions and thresholds."""
    f = layer.in_features
    included = torch.nonzero(layer.included()[clause]).flatten().tolist()
    flat = isinstance(model, TMFlat) and layer is model.tm
    shape = model.kdforge_spec["input_shape"] if flat else None

    def name(i: int) -> str:
        if not flat:
            return f"u{i}"
        where = ",".join(map(str, _unravel(i, shape)))
        return f"x[{where}]>{float(model.threshold[i].detach()):.2f}"

    return [name(i) if i < f else "¬" + name(i - f) for i in included]


def _unravel(index: int, shape: list[int]) -> list[int]:
    out = []
    for size in reversed(shape):
        out.append(index % size)
        index //= size
    return out[::-1]
