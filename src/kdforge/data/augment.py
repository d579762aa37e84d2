"""Batch augmentation on tensors, applied on the device to training batches only.

The augmented batch is what the Distiller receives, so teacher and student always see
the same view of each sample (consistent targets: the teacher is not asked about an
image the student never saw). That holds for mixup and CutMix too: the teacher's KD
targets are its outputs on the mixed batch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from kdforge.data.bundle import TokenIds
from kdforge.errors import KdforgeError
from kdforge.schedules import Clock, ScheduleConfig, schedule_value


def shift(x: torch.Tensor, offsets: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Translate each sample of [B, C, L] or [B, C, H, W] by ``offsets`` [B, spatial dims]
    (each in 0..2·max_shift, centred at max_shift), edges replicated."""
    spatial = x.shape[2:]
    padded = F.pad(x, [max_shift] * 2 * len(spatial), mode="replicate")
    batch = torch.arange(len(x), device=x.device)
    channels = torch.arange(x.shape[1], device=x.device)
    if len(spatial) == 1:
        cols = offsets[:, 0, None] + torch.arange(spatial[0], device=x.device)  # [B, L]
        return padded[batch[:, None, None], channels[None, :, None], cols[:, None, :]]
    rows = offsets[:, 0, None] + torch.arange(spatial[0], device=x.device)  # [B, H]
    cols = offsets[:, 1, None] + torch.arange(spatial[1], device=x.device)  # [B, W]
    return padded[
        batch[:, None, None, None], channels[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]
    ]


def random_shift(x: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Translate each sample by up to ``max_shift`` steps per spatial axis, independently."""
    if max_shift <= 0:
        return x
    return shift(x, torch.randint(0, 2 * max_shift + 1, (len(x), x.dim() - 2), device=x.device), max_shift)


class RandAugment:
    """torchvision's RandAugment (``n`` operations at magnitude ``m``), drawn per image, on
    standardised batches: undone with ``scaling`` (mean, std) to [0, 1] images and redone."""

    def __init__(self, n: int, m: int, scaling: tuple[float, float]):
        try:
            from torchvision.transforms import v2
        except ImportError:
            raise KdforgeError("data.augment.randaugment uses torchvision: pip install 'kdforge[vision]'") from None

        self.transform, self.scaling = v2.RandAugment(num_ops=n, magnitude=m), scaling

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise KdforgeError(
                f"data.augment.randaugment works on images [B, C, H, W], got a batch of shape {list(x.shape)}"
            )
        mean, std = self.scaling
        images = x * std + mean
        if images.min() < -1e-3 or images.max() > 1 + 1e-3:
            raise KdforgeError(
                "data.augment.randaugment needs images in [0, 1] before standardisation, found "
                f"[{float(images.min()):.3g}, {float(images.max()):.3g}]; scale your data to [0, 1]"
            )
        out = torch.stack([self.transform(image) for image in images.clamp(0, 1)])
        return (out - mean) / std


class TokenAugment:
    """Change a share ``p`` of each row's tokens (never padding or a special token): a share ``mask`` of them to
    the mask token, the others to a token drawn from the batch's own (so from the text's vocabulary and its
    frequencies, as word replacement does) or, with ``neighbours`` k > 0, to one of the k tokens closest to it in
    the teacher's token-embedding table (:attr:`close`, set once the teacher is ready: TinyBERT's replacement by
    close words). Rows are [B, L] ids, or [B, 2, L] ids and segments (a pair of texts: only the ids change). On a
    teacher's predictions the changed rows are new inputs to match it on (TinyBERT's augmented transfer set, drawn
    afresh each step)."""

    def __init__(self, p: float, mask: float, ids: TokenIds, neighbours: int = 0):
        if mask > 0 and ids.mask is None:
            raise KdforgeError("data.augment.tokens.mask: this tokenizer has no mask token; set mask: 0")
        self.p, self.mask, self.ids, self.neighbours = p, mask, ids, neighbours
        self.close: torch.Tensor | None = None  # [vocabulary, neighbours]: each token's closest (closest_tokens)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        ids = x[:, 0] if x.dim() == 3 else x
        free = ~torch.isin(ids, torch.tensor(self.ids.special, device=ids.device))
        change = free & (torch.rand(ids.shape, device=ids.device) < self.p)
        changed = self.close_to(ids) if self.neighbours else self.drawn_from(ids, free)
        if self.mask > 0:
            masked = torch.rand(ids.shape, device=ids.device) < self.mask
            changed = torch.where(masked, torch.full_like(ids, self.ids.mask or 0), changed)
        out = torch.where(change, changed, ids)
        return torch.stack([out, x[:, 1]], 1) if x.dim() == 3 else out

    @staticmethod
    def drawn_from(ids: torch.Tensor, free: torch.Tensor) -> torch.Tensor:
        """A token for each position, drawn among the batch's ``free`` ones (a batch with none changes nothing, so
        any draw will do there)."""
        weights = torch.where(free.any(), free.flatten().float(), 1.0)
        drawn = torch.multinomial(weights, ids.numel(), replacement=True)
        return ids.flatten()[drawn].view_as(ids)

    def close_to(self, ids: torch.Tensor) -> torch.Tensor:
        """For each position, one of its token's ``neighbours`` closest tokens, drawn uniformly."""
        if self.close is None:
            raise KdforgeError(
                "data.augment.tokens.neighbours: the close tokens come from the teacher once it is ready, so rows "
                "changed that way cannot be read before (by the teacher's own fit): give its fit rows as they are "
                "(teacher.finetune.data: {augment: {}}) or change the student's rows only (tokens.teacher: original)"
            )
        self.close = self.close.to(ids.device)
        return self.close[ids, torch.randint(self.neighbours, ids.shape, device=ids.device)]


def token_table(model: torch.nn.Module) -> torch.Tensor:
    """``model``'s token-embedding table: the weight of its largest ``nn.Embedding`` (positions and segments have
    fewer rows than a vocabulary)."""
    tables = [m.weight for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    if not tables:
        raise KdforgeError(
            "data.augment.tokens.neighbours finds close tokens in the teacher's token-embedding table, and this "
            f"teacher ({type(model).__name__}) has no nn.Embedding: set neighbours: 0"
        )
    return max(tables, key=len)


def closest_tokens(table: torch.Tensor, k: int, special: tuple[int, ...], chunk: int = 1024) -> torch.Tensor:
    """[vocabulary, k]: for each row of the token-embedding ``table``, the ``k`` others closest to it by cosine,
    closest first, never a ``special`` token; computed ``chunk`` rows at a time (never vocabulary × vocabulary)."""
    if k >= len(table) - len(special):
        raise KdforgeError(
            f"data.augment.tokens.neighbours: {k} close tokens asked of a vocabulary of {len(table)} tokens "
            f"({len(special)} of them special): set a smaller neighbours"
        )
    unit = F.normalize(table.detach().float(), dim=1)
    barred = torch.tensor([i for i in special if i < len(unit)], dtype=torch.long, device=unit.device)
    found = []
    for start in range(0, len(unit), chunk):
        rows = torch.arange(start, min(start + chunk, len(unit)), device=unit.device)
        similar = unit[rows] @ unit.T
        similar[:, barred] = -torch.inf
        similar[rows - start, rows] = -torch.inf  # a token is not its own neighbour
        found.append(similar.topk(k, dim=1).indices)
    return torch.cat(found)


def student_only(cfg: Any) -> bool:
    """Whether ``data.augment``'s token changes are the student's alone (``tokens.teacher: original``): the teacher
    reads each row as it is."""
    return cfg.tokens is not None and cfg.tokens.teacher == "original"


class BatchAugment:
    """Token changes (rows of token ids), or RandAugment (optional), random shift, then additive Gaussian noise
    (std ``noise``, in standardised units)."""

    def __init__(
        self,
        shift: int = 0,
        noise: float = 0.0,
        randaugment: RandAugment | None = None,
        tokens: TokenAugment | None = None,
    ):
        self.shift, self.noise, self.randaugment, self.tokens = shift, noise, randaugment, tokens

    @classmethod
    def from_config(cls, cfg: Any, scaling: tuple[float, float], token_ids: TokenIds | None = None) -> BatchAugment:
        """From ``data.augment`` (mixing is :class:`Mixer`'s), the dataset's scaling and, for rows of token ids,
        its tokenizer's special ids."""
        ra = RandAugment(cfg.randaugment.n, cfg.randaugment.m, scaling) if cfg.randaugment is not None else None
        tokens = None
        if cfg.tokens is not None:
            if token_ids is None:
                raise KdforgeError(
                    "data.augment.tokens changes token ids; this dataset's inputs are not rows of token ids "
                    "(text_classification, package_docstrings and token_classification give them): drop "
                    "data.augment.tokens"
                )
            tokens = TokenAugment(cfg.tokens.p, cfg.tokens.mask, token_ids, cfg.tokens.neighbours)
        return cls(cfg.shift, cfg.noise, ra, tokens)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.tokens is not None:
            return self.tokens(x)
        if self.randaugment is not None:
            x = self.randaugment(x)
        x = random_shift(x, self.shift)
        if self.noise > 0:
            x = x + self.noise * torch.randn_like(x)
        return x

    def __bool__(self) -> bool:
        return self.shift > 0 or self.noise > 0 or self.randaugment is not None or self.tokens is not None


class Mixer:
    """Mixup and CutMix of training batches, with soft targets.

    A batch is mixed with probability ``mix_prob``, by CutMix with probability
    ``switch_prob`` when both are on. λ ~ Beta(α, α); each sample is mixed with its
    mirror in the batch (sample B − 1 − i). Mixup: λ·x + (1 − λ)·x'. CutMix: a box of
    area (1 − λ) from x' pasted into x, λ recomputed from the clipped box. Targets become
    λ·onehot(y) + (1 − λ)·onehot(y'). The strengths α may be schedules (read at the step's
    clock); α = 0 leaves the batch as it is.
    """

    def __init__(self, cfg: Any, num_classes: int):
        self.cfg, self.num_classes = cfg, num_classes

    def scheduled(self, clock: Clock) -> dict[str, float]:
        """The strengths that follow a schedule, at ``clock`` (``mixup.alpha``, ``cutmix.alpha``): logged with each
        step."""
        return {
            f"{name}.alpha": schedule_value(a, clock)
            for name, a in (("mixup", self.cfg.mixup), ("cutmix", self.cfg.cutmix))
            if isinstance(a, ScheduleConfig)
        }

    def __call__(self, x: torch.Tensor, y: torch.Tensor, clock: Clock) -> tuple[torch.Tensor, torch.Tensor]:
        """(mixed inputs, soft targets [B, K]); the targets are soft even when not mixed."""
        targets = F.one_hot(y, self.num_classes).float()
        mixup, cutmix = (schedule_value(a, clock) for a in (self.cfg.mixup, self.cfg.cutmix))
        if (mixup <= 0 and cutmix <= 0) or float(torch.rand(())) >= self.cfg.mix_prob:
            return x, targets
        use_cutmix = cutmix > 0 and (mixup <= 0 or float(torch.rand(())) < self.cfg.switch_prob)
        alpha = cutmix if use_cutmix else mixup
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        if use_cutmix:
            x, lam = cutmix_images(x, lam)
        else:
            x = lam * x + (1.0 - lam) * x.flip(0)
        return x, lam * targets + (1.0 - lam) * targets.flip(0)


def cutmix_images(x: torch.Tensor, lam: float) -> tuple[torch.Tensor, float]:
    """Paste a random box of area ≈ (1 − λ) from each sample's mirror (x.flip(0)) into it,
    over the spatial axes of [B, C, L] or [B, C, H, W]; returns the batch and the exact λ
    (the share of each sample that is still its own)."""
    spatial = x.shape[2:]
    ratio = (1.0 - lam) ** (1.0 / len(spatial))  # the box's side as a share of each axis
    slices, kept = [], 1.0
    for size in spatial:
        side = int(size * ratio)
        centre = int(torch.randint(size, ()))
        lo, hi = max(centre - side // 2, 0), min(centre + side - side // 2, size)
        slices.append(slice(lo, hi))
        kept *= (hi - lo) / size
    mixed = x.clone()
    box = (slice(None), slice(None), *slices)
    mixed[box] = x.flip(0)[box]
    return mixed, 1.0 - kept


class FixedViews:
    """``views`` fixed augmented versions of every training sample: view v of sample i is
    always the same (its shift and noise are drawn once, from the seed and v). A teacher
    cache stores its outputs on exactly these inputs; training then shows the student view
    ``epoch % views`` of each sample, so teacher and student always see the same input."""

    def __init__(self, augment: BatchAugment, samples: int, sample_shape: tuple[int, ...], views: int, seed: int):
        self.augment, self.views = augment, views
        self.offsets: list[torch.Tensor | None] = []
        self.noise: list[torch.Tensor | None] = []
        for v in range(views):
            g = torch.Generator().manual_seed(seed * 1_000_003 + v)
            spatial = len(sample_shape) - 1
            self.offsets.append(
                torch.randint(0, 2 * augment.shift + 1, (samples, spatial), generator=g) if augment.shift else None
            )
            self.noise.append(
                augment.noise * torch.randn(samples, *sample_shape, generator=g) if augment.noise else None
            )

    def __call__(self, x: torch.Tensor, index: torch.Tensor, epoch: int) -> torch.Tensor:
        """The inputs ``x`` of samples ``index`` as seen in view ``epoch % views``."""
        v = epoch % self.views
        rows = index.cpu()
        if (offsets := self.offsets[v]) is not None:
            x = shift(x, offsets[rows].to(x.device), self.augment.shift)
        if (noise := self.noise[v]) is not None:
            x = x + noise[rows].to(x.device)
        return x
