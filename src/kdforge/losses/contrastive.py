"""Contrastive representation distillation (CRD; Tian, Krishnan & Isola, ICLR 2020), with its memory bank.

Student and teacher features are embedded (a trained linear map each, then L2-normalised) into one space. Each
training sample has a slot in two memory banks, one per model, holding a running average of its embeddings. A
sample's student embedding is scored against the teacher bank's entry of that same sample (the positive) and of K
other samples (negatives), and the teacher's embedding against the student bank likewise; a noise-contrastive
estimate (NCE) of how well each tells the positive from the noise is the loss. The banks make K (16,384 by default)
independent of the batch size.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from kdforge.errors import KdforgeError
from kdforge.losses.terms import LOSSES, LossTerm, Shapes, StepContext

EPS = 1e-7


def nce_loss(scores: torch.Tensor, samples: int) -> torch.Tensor:
    """The NCE loss of CRD on ``scores`` [B, 1 + K] (positive first, then K negatives; unnormalised densities already
    divided by the normalising constant): −(Σ log D(positive) + Σ log(1 − D(negative))) / B, with
    D(x) = x / (x + K/N), noise drawn uniformly from the N = ``samples`` training samples."""
    noise = (scores.shape[1] - 1) / samples  # K · P_noise
    positive = torch.log(scores[:, 0] / (scores[:, 0] + noise + EPS))
    negative = torch.log(noise / (scores[:, 1:] + noise + EPS))
    return -(positive.sum() + negative.sum()) / len(scores)


@LOSSES.register("crd")
class CRD(LossTerm):
    """CRD (Tian et al., ICLR 2020) on pooled features (``head:input`` by default), with a memory bank per model.

    Options: ``dim`` (embedding width, 128), ``negatives`` (K, 16384; at most the training split's size − 1),
    ``temperature`` (0.07), ``momentum`` (the banks' running average, 0.5), ``sampling``: ``other_class``
    (negatives from other classes, the authors' default) or ``any`` (any other sample: regression, or no labels).
    The paper weighs it 0.8 beside CE and KD (``weight: 0.8``). The banks hold 2 · N · dim floats (N training
    samples) and are saved with checkpoints; under torchrun each process keeps its own.
    """

    reads_index = True
    # buffers made in setup, once the training split's size is known
    student_bank: torch.Tensor
    teacher_bank: torch.Tensor
    labels: torch.Tensor
    normaliser: torch.Tensor

    def __init__(
        self,
        student: str = "head:input",
        teacher: str = "head:input",
        dim: int = 128,
        negatives: int = 16384,
        temperature: float = 0.07,
        momentum: float = 0.5,
        sampling: Literal["other_class", "any"] = "other_class",
    ):
        super().__init__()
        if temperature <= 0 or not 0 <= momentum < 1 or dim < 1 or negatives < 1:
            raise ValueError(
                f"crd needs temperature > 0, momentum in [0, 1), dim >= 1 and negatives >= 1; got {temperature}, "
                f"{momentum}, {dim}, {negatives}"
            )
        self.student, self.teacher, self.dim, self.negatives = student, teacher, dim, negatives
        self.temperature, self.momentum, self.sampling = temperature, momentum, sampling
        self.reads_labels = sampling == "other_class"
        self.embed_student: nn.Module = nn.Identity()
        self.embed_teacher: nn.Module = nn.Identity()
        self.normalised = False

    @property
    def student_taps(self) -> list[str]:
        return [self.student]

    @property
    def teacher_taps(self) -> list[str]:
        return [self.teacher]

    def setup(self, shapes: Shapes) -> None:
        samples = shapes.train_samples
        if samples is None:
            raise KdforgeError("crd keeps a memory bank entry per training sample, but the training split's size is "
                               "not known")  # fmt: skip
        if self.negatives >= samples:
            raise KdforgeError(
                f"crd: negatives ({self.negatives}) must be fewer than the training samples ({samples}); lower it"
            )
        self.embed_student = nn.Sequential(nn.Flatten(), nn.Linear(shapes.student[self.student][1:].numel(), self.dim))
        self.embed_teacher = nn.Sequential(nn.Flatten(), nn.Linear(shapes.teacher[self.teacher][1:].numel(), self.dim))
        bound = 1.0 / math.sqrt(self.dim / 3)  # the reference's initial spread, so first scores are of the same size
        self.register_buffer("student_bank", torch.rand(samples, self.dim) * 2 * bound - bound)
        self.register_buffer("teacher_bank", torch.rand(samples, self.dim) * 2 * bound - bound)
        self.register_buffer("labels", torch.full((samples,), -1, dtype=torch.long))  # -1: not seen yet
        # the NCE normalising constants Z (scores against the teacher bank, against the student bank), estimated
        # once from the first batch as in the reference; -1: not yet
        self.register_buffer("normaliser", torch.full((2,), -1.0))

    def contrast(self, index: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """[B, 1 + K] bank rows: each sample itself, then K others drawn uniformly (of another class, as far as the
        labels seen so far tell, with ``sampling: other_class``)."""
        drawn = torch.randint(0, len(self.student_bank), (len(index), self.negatives), device=index.device)
        for _ in range(10):  # redraw clashes; a few rounds leave almost none
            clash = drawn == index[:, None]
            if labels is not None:
                clash |= self.labels[drawn] == labels[:, None]
            if not clash.any():
                break
            drawn = torch.where(clash, torch.randint_like(drawn, 0, len(self.student_bank)), drawn)
        return torch.cat([index[:, None], drawn], dim=1)

    def forward(self, ctx: StepContext) -> torch.Tensor:
        index = ctx.index
        assert index is not None  # the Distiller refuses a step without indices for a term that reads them
        labels = ctx.labels if self.sampling == "other_class" else None
        if labels is not None and labels.shape != index.shape:
            raise KdforgeError("crd with sampling: other_class needs one class label per sample; use sampling: any")
        with torch.autocast(index.device.type, enabled=False):  # exp(cos / 0.07) needs float32
            s = F.normalize(self.embed_student(ctx.student_features[self.student].float()), dim=1)
            t = F.normalize(self.embed_teacher(ctx.teacher_features[self.teacher].float()), dim=1)
            rows = self.contrast(index, labels)
            student_scores = torch.exp(torch.einsum("bkd,bd->bk", self.teacher_bank[rows], s) / self.temperature)
            teacher_scores = torch.exp(torch.einsum("bkd,bd->bk", self.student_bank[rows], t) / self.temperature)
            if not self.normalised:  # one look at the buffer (a resumed run has it), then no more synchronisation
                if self.normaliser[0] < 0:
                    scores = torch.stack([student_scores.mean(), teacher_scores.mean()]).detach()
                    self.normaliser.copy_(scores * len(self.student_bank))
                self.normalised = True
            loss = nce_loss(student_scores / self.normaliser[0], len(self.student_bank)) + nce_loss(
                teacher_scores / self.normaliser[1], len(self.student_bank)
            )
        if self.training:
            self.remember(index, s.detach(), t.detach(), labels)
        return loss

    @torch.no_grad()
    def remember(self, index: torch.Tensor, s: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> None:
        """Move the samples' bank entries towards their new embeddings (running average, renormalised)."""
        for bank, new in ((self.student_bank, s), (self.teacher_bank, t)):
            bank.index_copy_(0, index, F.normalize(bank[index] * self.momentum + new * (1 - self.momentum), dim=1))
        if labels is not None:
            self.labels.index_copy_(0, index, labels)
