"""Tsetlin-machine clause layers that learn by gradient (the students made of them alone: :mod:`.flat`).

A clause is an AND over *literals*: the F inputs u ∈ [0, 1] and their negations 1 − u.
Each clause j has include logits over the 2F literals; the include mask is hard in the
forward pass (logit > 0) and, in the backward pass, carries the gradient of σ(logit/τ)
(a straight-through estimator whose gradient is never zero, so clauses really learn). A
clause's violation count is m_j = Σ_i include_ji · (1 − literal_i); its score is

* ``capacity`` (default): max(0, min(|included_j|, LF) − m_j), the fuzzy-pattern score:
  up to LF points, one lost per violated literal. As a rule it is a *threshold* clause: with n
  included literals it fires when at least k = n − min(n, LF) + 1 of them hold (k = n, an AND,
  only when n ≤ 1 or LF = 1; k = 1, an OR, whenever n ≤ LF). ``strict`` sets LF = 1, so that
  every clause is a true conjunction;
* ``product``: exp(−κ · m_j / (τ · F)), a soft AND that is 1 when nothing is violated (in hard
  mode, the AND itself).

A clause may include a literal and its negation; exactly one of the two holds, so under the
capacity form the pair is one literal that always holds (a clause that can never fire under an
AND). ``exclusive_literals`` keeps only the larger-logit literal of such a pair in the include
mask, so clauses never contradict themselves.

Outputs are the scores voted through a learned matrix whose sign is each clause's fixed
polarity (half the clauses vote for, half against), plus a learned bias (``clause_bias``).

τ matters in both passes: it sets the slope of the include surrogate and the sharpness of
the clause's soft AND (``capacity`` scores are τ·softplus(x/τ), which tends to max(0, x)
as τ → 0). **Hard mode** (``hard=True``, or :func:`set_hard` on a whole model) is the
exact boolean form that :mod:`kdforge.families.tm.rules` exports: literals are thresholded at 0.5,
scores are integers (``product`` becomes the plain AND: 1 iff m_j = 0), and votes are
quantised to ``vote_bits``-bit integers; every step keeps a straight-through gradient,
so a model can also be trained in hard mode.

With ``levels`` L > 1, hard mode reads each literal at L levels instead of one: u counts as k/L, where k of the L
thresholds (2j − 1)/(2L), j = 1..L, lie below it (u rounded to the nearest multiple of 1/L). Each level is one
boolean test of the input, so a clause stays a threshold over booleans (it fires when at least
L·(n − min(n, LF)) + 1 of its n·L level tests hold), and the scores are multiples of 1/L: a literal near its
threshold counts as partly true, as it does in soft mode, instead of flipping to 0 or 1.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import typing
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, validate_call
from torch import nn

from kdforge.bounds import AtLeastOne, BelowOne, Positive, Probability

# hard mode reads the levels by one search per value (``bucketize``) below this many values per level and by L
# comparisons summed from there on (2 threads: L = 3 level at ~16,000 values, the search 1.4x slower at 32,768 and
# 2.4x at 65,536; L = 8 level at ~45,000; 1 thread: the comparisons pay from fewer)
SEARCHED_VALUES_PER_LEVEL = 6144
#: a clause count: even, half vote for a class and half against
Clauses = Annotated[int, Field(ge=2, multiple_of=2)]


def straight_through(hard: torch.Tensor, surrogate: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Forward value ``hard`` exactly; gradient of ``surrogate()``, which is not even computed where no gradient is
    recorded (``no_grad``, inference): hard mode at inference is the hard values alone."""
    if not torch.is_grad_enabled():
        return hard
    soft = surrogate()
    return hard + (soft - soft.detach())


class Temperature(nn.Module):
    """τ of a clause layer: fixed, or learnable (log-parameterised, so it stays > 0) with an
    EMA of its value that evaluation uses (``ema`` in (0, 1); None: evaluate the raw value)."""

    def __init__(self, init: float = 0.25, learnable: bool = False, ema: float | None = None):
        super().__init__()
        if init <= 0:
            raise ValueError(f"tau must be > 0, got {init}")
        if ema is not None and not (learnable and 0.0 < ema < 1.0):
            raise ValueError("tau_ema needs learn_tau: true and a decay in (0, 1)")
        log_tau = torch.tensor(math.log(init))
        self.log_tau = nn.Parameter(log_tau) if learnable else None
        self.register_buffer("fixed_log_tau", log_tau.clone(), persistent=False)
        self.ema = ema
        self.register_buffer("ema_tau", torch.tensor(init))

    def value(self) -> torch.Tensor:
        """τ as this mode uses it: the raw value in training, the EMA (if any) in eval."""
        if self.log_tau is None:
            return self.fixed_log_tau.exp()
        return self.ema_tau if self.ema is not None and not self.training else self.log_tau.exp()

    def forward(self) -> torch.Tensor:
        """:meth:`value`, once per layer forward: in training, this also advances the EMA."""
        tau = self.value()
        if self.ema is not None and self.training and torch.is_grad_enabled():
            with torch.no_grad():
                self.ema_tau.lerp_(tau.detach(), 1.0 - self.ema)
        return tau


class ClauseLayer(nn.Module):
    """F inputs in [0, 1] -> ``clauses`` AND-clauses -> ``out_features`` votes.

    Inputs are clamped to [0, 1] (the layer's contract, checked by construction rather than
    trusted). ``[*, F] -> [*, out_features]``. The clause scores [*, clauses] pass through
    the identity module ``activations``: tap ``<layer>.activations`` to read them (the
    clause-aware losses and diagnostics do).

    Options: ``lf`` (the capacity's literal budget), ``strict`` (LF = 1: every clause an AND),
    ``exclusive_literals`` (never a literal and its negation in one clause), ``form`` (capacity | product),
    ``kappa`` (product form), ``tau`` / ``learn_tau`` / ``tau_ema``, ``clause_dropout`` and
    ``literal_dropout`` (training only; a dropped literal counts as satisfied),
    ``hard_literals`` (training only: this fraction of the literal inputs, drawn afresh each step, is read as the
    booleans hard mode reads, u > 0.5, with the gradient of u: the clauses learn on the inputs their rules will see),
    ``clause_mask`` (a boolean buffer, all true; false silences a clause: ``auto_clause`` budgets),
    ``tm_prior`` (random | symmetric include templates at initialisation), ``include_init``
    (expected included literals per clause; default 2·lf, so that clauses start where the capacity is non-linear),
    ``vote_bits`` (hard mode), ``levels`` (hard mode: each literal read at this many levels, not one boolean;
    capacity form, not ``strict``),
    ``clause_bias`` (a learned bias added to the votes, from 0 with true or from the number given, e.g. 0.05;
    false: none, as in the classic machine).
    """

    @validate_call  # built directly (not from a recipe), its option values are checked all the same
    def __init__(
        self,
        in_features: int,
        out_features: int,
        clauses: Clauses = 64,
        lf: AtLeastOne = 8,
        strict: bool = False,
        exclusive_literals: bool = False,
        form: Literal["capacity", "product"] = "capacity",
        kappa: float = 4.0,
        tau: Positive = 0.25,
        learn_tau: bool = False,
        tau_ema: float | None = None,
        clause_dropout: BelowOne = 0.0,
        literal_dropout: BelowOne = 0.0,
        hard_literals: Probability = 0.0,
        tm_prior: Literal["random", "symmetric"] = "random",
        include_init: Positive | None = None,
        vote_bits: Annotated[int, Field(ge=2, le=16)] = 8,
        levels: Annotated[int, Field(ge=1, le=8)] = 1,
        clause_bias: bool | float = True,
        hard: bool = False,
    ):
        super().__init__()
        if strict and form != "capacity":
            raise ValueError(
                "strict is an option of the capacity form (the product form is already an AND in hard mode)"
            )
        lf = 1 if strict else lf
        check_levels(levels, lf, form)
        self.in_features, self.out_features, self.clauses = in_features, out_features, clauses
        self.lf, self.form, self.kappa, self.exclusive_literals = lf, form, kappa, exclusive_literals
        self.hard_literals, self.levels = hard_literals, levels
        self.register_buffer("level_thresholds", level_thresholds(levels), persistent=False)
        self.clause_dropout, self.literal_dropout, self.vote_bits, self.hard = (
            clause_dropout,
            literal_dropout,
            vote_bits,
            hard,
        )
        self.tau = Temperature(tau, learn_tau, tau_ema)
        self.include = nn.Parameter(_include_init(clauses, in_features, include_init or 2 * lf, tm_prior))
        # the vote magnitude is softplus(votes); its sign is the clause's polarity
        self.votes = nn.Parameter(
            torch.full((clauses, out_features), math.log(math.e - 1.0)) + 0.1 * torch.randn(clauses, out_features)
        )
        if clause_bias is not False:  # a number is where the learned bias starts
            self.bias = nn.Parameter(torch.full((out_features,), 0.0 if clause_bias is True else float(clause_bias)))
        else:  # the classic machine: an output is its clauses' votes alone
            self.register_buffer("bias", torch.zeros(out_features))
        self.register_buffer("polarity", torch.tensor([1.0, -1.0]).repeat(clauses // 2), persistent=False)
        self.scale = 1.0 / (lf * math.sqrt(clauses)) if form == "capacity" else 1.0 / math.sqrt(clauses)
        self.activations = nn.Identity()  # a tap point for the clause scores
        # False switches a clause off (auto_clause budgets); boolean, so that an EMA copies it rather than averaging it
        self.register_buffer("clause_mask", torch.ones(clauses, dtype=torch.bool))

    # ------------------------------------------------------------------ parts also used by export
    def included(self) -> torch.Tensor:
        """[C, 2F] boolean: the literals each clause includes (logit > 0; with ``exclusive_literals``, of a
        literal and its negation only the one with the larger logit, the literal itself on a tie)."""
        include = self.include.detach()
        chosen = include > 0
        if self.exclusive_literals:
            positive, negative = include.chunk(2, dim=1)
            chosen &= torch.cat([positive >= negative, negative > positive], dim=1)
        return chosen

    def include_mask(self, tau: torch.Tensor | None = None) -> torch.Tensor:
        """[C, 2F] include mask: hard forward (:meth:`included`), gradient of σ(logit / τ)."""
        tau = self.tau.value() if tau is None else tau
        return straight_through(self.included().to(self.include.dtype), lambda: torch.sigmoid(self.include / tau))

    def min_true(self) -> torch.Tensor:
        """[C] integers: how many of its included literals must hold for each clause to fire (score > 0) in hard
        mode: n − min(n, LF) + 1 in the capacity form, all n in the product form (its hard form is an AND). With
        ``levels`` L, how many of the clause's n·L level tests: L·(n − min(n, LF)) + 1."""
        n = self.included().sum(1)
        return self.levels * (n - n.clamp(max=self.lf)) + 1 if self.form == "capacity" else n

    def contradictory(self) -> torch.Tensor:
        """[C] boolean: clauses that include some literal and its negation."""
        positive, negative = self.included().chunk(2, dim=1)
        return (positive & negative).any(1)

    def vote_matrix(self) -> torch.Tensor:
        """[C, K] signed votes (real-valued; see :meth:`quantised_votes` for hard mode)."""
        return self.polarity[:, None] * F.softplus(self.votes)

    def quantised_votes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Integer votes [C, K] (as floats, straight-through) and the per-output step [K]."""
        votes = self.vote_matrix()
        levels = 2 ** (self.vote_bits - 1) - 1
        step = (votes.detach().abs().amax(0) / levels).clamp_min(torch.finfo(votes.dtype).tiny)
        return straight_through(torch.round(votes.detach() / step), lambda: votes / step), step

    def include_probability(self) -> torch.Tensor:
        """[C, 2F] σ(logit / τ): the soft include mask that sparsity penalties shrink."""
        return torch.sigmoid(self.include / self.tau.value())

    # ------------------------------------------------------------------ forward
    def literals(self, u: torch.Tensor) -> torch.Tensor:
        """[*, F] inputs -> [*, 2F] literals [u, 1 − u] in [0, 1] (boolean in hard mode, or multiples of 1/L with
        ``levels`` L)."""
        u = u.clamp(0.0, 1.0)
        if self.hard:
            u = straight_through(self.leveled(u), lambda: u)
        elif self.training and self.hard_literals:
            chosen = torch.rand_like(u) < self.hard_literals
            u = torch.where(chosen, straight_through(self.leveled(u), lambda: u), u)
        return torch.cat([u, 1.0 - u], dim=-1)

    def leveled(self, u: torch.Tensor) -> torch.Tensor:
        """Hard mode's reading of inputs u in [0, 1]: u > 0.5 as 0 or 1; with ``levels`` L, k / L where k counts the
        level thresholds below u."""
        if self.levels == 1:
            return (u > 0.5).to(u.dtype)
        if u.numel() < SEARCHED_VALUES_PER_LEVEL * self.levels:  # one call: the fastest on a few rows
            return torch.bucketize(u, self.level_thresholds.to(u.dtype)).to(u.dtype) / self.levels
        first, *others = self.level_thresholds.tolist()  # on more, L comparisons summed (a search per value is slow)
        counts = (u > first).to(u.dtype)
        for threshold in others:
            counts += u > threshold
        return counts / self.levels

    def clause_scores(self, u: torch.Tensor, tau: torch.Tensor | None = None) -> torch.Tensor:
        """[*, F] -> [*, C] clause scores."""
        tau = self.tau.value() if tau is None else tau
        violated = 1.0 - self.literals(u)
        if self.training and self.literal_dropout:
            violated = violated * (torch.rand_like(violated) >= self.literal_dropout)  # a dropped literal is satisfied
        mask = self.include_mask(tau)
        m = violated @ mask.t()  # violations per clause
        if self.form == "product":
            return self._product(m, tau)
        x = torch.clamp(mask.sum(1), max=self.lf) - m
        if not self.hard:
            return tau * F.softplus(x / tau)
        if self.levels == 1:
            return torch.relu(x)
        # multiples of 1/L, snapped to the float nearest each, as the packed evaluator's integers divided by L are
        return straight_through(torch.round(torch.relu(x) * self.levels) / self.levels, lambda: torch.relu(x))

    def _product(self, m: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        def soft() -> torch.Tensor:
            return torch.exp(-self.kappa * m / (tau * self.in_features))

        return straight_through((m < 0.5).to(m.dtype), soft) if self.hard else soft()

    def forward(self, u: torch.Tensor, modulate: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """``modulate``: an optional function of the clause scores applied before voting
        (the TM blocks' routing gate and re-vote)."""
        scores = self.clause_scores(u, self.tau()) * self.clause_mask.to(u.dtype)
        if self.training and self.clause_dropout:
            scores = F.dropout(scores, self.clause_dropout)
        if modulate is not None:
            scores = modulate(scores)
        return self.vote(self.activations(scores))

    def vote(self, scores: torch.Tensor) -> torch.Tensor:
        """[*, C] clause scores -> [*, K] outputs. In hard mode with ``levels`` L, the scores (routed ones too) are
        voted as whole multiples of 1/L: the integers L·score, each worth 1/L."""
        if not self.hard:
            return self.scale * (scores @ self.vote_matrix()) + self.bias
        votes, step = self.quantised_votes()
        if self.levels > 1:
            scores = straight_through(torch.round(scores * self.levels), lambda: scores * self.levels)
        return integer_vote(scores, votes, vote_factor(self.scale / self.levels, step), self.bias, self.sum_dtype)

    @property
    def sum_dtype(self) -> torch.dtype:
        """A dtype that holds every hard-mode vote sum exactly: float32 while the largest possible one (top score ×
        top vote × clauses) stays below 2^24, float64 beyond."""
        top_score = self.levels * self.lf if self.form == "capacity" else 1
        largest = top_score * (2 ** (self.vote_bits - 1) - 1) * self.clauses
        return torch.float32 if largest < 2**24 else torch.float64

    def extra_repr(self) -> str:
        shape = f"{self.in_features} -> {self.clauses} clauses -> {self.out_features}"
        exclusive = ", exclusive_literals=True" if self.exclusive_literals else ""
        levels = f", levels={self.levels}" if self.levels > 1 else ""
        return f"{shape}, lf={self.lf}, form={self.form}{exclusive}{levels}, hard={self.hard}"


def check_levels(levels: int, lf: int, form: str) -> None:
    """Refuse ``levels`` that a clause layer cannot read its literals at."""
    if not 1 <= levels <= 8:
        raise ValueError(f"levels must be in [1, 8], got {levels}")
    if levels > 1 and (lf == 1 or form != "capacity"):
        raise ValueError(
            "levels > 1 grades the literals of capacity clauses; a strict (LF = 1) or product-form clause is an "
            "AND of booleans: give it levels: 1"
        )


def level_thresholds(levels: int) -> torch.Tensor:
    """[L] the thresholds of a literal's levels, (2j − 1) / 2L: k of them below u reads u as k / L."""
    return (torch.arange(levels) + 0.5) / levels


def vote_factor(scale: float, step: torch.Tensor) -> torch.Tensor:
    """[K] float32: what one unit of each output's integer vote sum is worth (the layer's scale times the output's
    vote step, rounded once from float64)."""
    return (scale * step.double()).float()


def integer_vote(
    scores: torch.Tensor, votes: torch.Tensor, factor: torch.Tensor, bias: torch.Tensor, exact: torch.dtype
) -> torch.Tensor:
    """Hard mode's outputs: clause scores [*, C] times integer votes [C, K], summed in ``exact`` (a dtype that holds
    every sum of integer scores exactly, so that the order of the sum cannot matter), then ``bias + total · factor``
    in float32. The packed evaluator votes the same way, so the two agree to the bit."""
    total = as_dtype(scores, exact) @ as_dtype(votes, exact)
    return torch.addcmul(bias, as_dtype(total, bias.dtype), factor)


def as_dtype(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t.to(dtype)``, without the call where ``t`` already is ``dtype`` (even a no-op ``.to`` costs a few µs, which
    counts in a small layer)."""
    return t if t.dtype == dtype else t.to(dtype)


def _include_init(clauses: int, features: int, expected: float, prior: str) -> torch.Tensor:
    """Include logits with about ``expected`` literals included per clause.

    ``symmetric``: clauses come in mirrored pairs, the second including the negations of
    the first's literals (and voting the other way), so every pattern starts with its
    opposite."""
    p = min(max(expected / (2 * features), 1e-4), 0.5)
    offset = 0.5 * float(torch.special.ndtri(torch.tensor(p)))  # P(N(offset, 0.5²) > 0) = p
    logits = offset + 0.5 * torch.randn(clauses, 2 * features)
    if prior == "symmetric":
        first = logits[0::2]
        logits[1::2] = torch.cat([first[:, features:], first[:, :features]], dim=1)
    return logits


def clause_layers(model: nn.Module) -> list[ClauseLayer]:
    return [m for m in model.modules() if isinstance(m, ClauseLayer)]


@contextlib.contextmanager
def hard_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Evaluate ``model`` in hard mode for a while; each clause layer's mode is restored."""
    layers = clause_layers(model)
    before = [layer.hard for layer in layers]
    set_hard(model, True)
    try:
        yield model
    finally:
        for layer, hard in zip(layers, before):
            layer.hard = hard


@torch.no_grad()
def clause_usage(model: nn.Module, batches: Any) -> dict[str, dict[str, float]]:
    """How each clause layer uses its clauses over ``batches``, in hard mode (what the exported
    rules compute): ``active`` clauses (not masked by ``auto_clause``), ``used`` (active clauses
    that fire on at least one input) and ``firing`` (the mean share of active clauses that fire
    on an input). Empty for a model without clause layers."""
    layers = {name: m for name, m in model.named_modules() if isinstance(m, ClauseLayer)}
    ever = {name: torch.zeros(m.clauses, dtype=torch.bool) for name, m in layers.items()}
    fired, rows = dict.fromkeys(layers, 0.0), dict.fromkeys(layers, 0)

    def recorder(name: str) -> Callable[..., None]:
        def record(module: nn.Module, args: Any, scores: torch.Tensor) -> None:
            firing = (scores > 0).flatten(0, -2)  # [inputs (and tokens), clauses]
            ever[name] |= firing.any(0).cpu()
            fired[name] += float(firing.sum())
            rows[name] += len(firing)

        return record

    handles = [m.activations.register_forward_hook(recorder(name)) for name, m in layers.items()]
    was_training = model.training
    model.eval()
    try:
        with hard_mode(model):
            for x, *_ in batches if layers else ():
                model(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    usage = {}
    for name, m in layers.items():
        active = int(m.clause_mask.sum())
        usage[name] = {
            "clauses": m.clauses,
            "active": active,
            "used": int((ever[name] & m.clause_mask.cpu()).sum()),
            "firing": fired[name] / max(rows[name], 1) / max(active, 1),
        }
    return usage


def set_hard(model: nn.Module, hard: bool = True) -> nn.Module:
    """Switch every clause layer of ``model`` to (or from) its exact boolean form."""
    for layer in clause_layers(model):
        layer.hard = hard
    return model


def set_levels(model: nn.Module, levels: int) -> nn.Module:
    """Read every clause layer's literals at ``levels`` levels in hard mode (and in the rules exported from it). Soft
    mode does not depend on it, so a student trained in soft mode may choose its levels afterwards."""
    if getattr(model, "reads_booleans", False) and levels != 1:
        raise ValueError("tm_flat reads each input as one boolean, x > t, in hard mode: give it levels: 1")
    for layer in clause_layers(model):
        check_levels(levels, layer.lf, layer.form)
        layer.levels, layer.level_thresholds = levels, level_thresholds(levels).to(layer.level_thresholds.device)
    if (spec := getattr(model, "kdforge_spec", None)) is not None:  # a saved copy rebuilds at these levels
        spec["options"] = {**spec["options"], "levels": levels}
    return model


def gradable(model: nn.Module) -> bool:
    """Whether ``model`` has clause layers and every one can read its literals at several levels (capacity form, LF > 1,
    not ``tm_flat``, whose inputs are booleans already)."""
    layers = clause_layers(model)
    graded = all(layer.form == "capacity" and layer.lf > 1 for layer in layers)
    return bool(layers) and graded and not getattr(model, "reads_booleans", False)


def with_options(*sources: Callable[..., Any]) -> Callable[[type], type]:
    """Give ``cls.__init__`` (or a factory function; either takes ``**options``) the optional keywords of ``sources``
    (classes or functions) as real keywords, so that the registry checks them, ``kdforge
    list models`` shows them, and each option is declared once, where it is used."""

    def decorate(cls: Any) -> Any:
        init = cls.__init__ if inspect.isclass(cls) else cls
        keyword = inspect.Parameter.KEYWORD_ONLY
        params = [
            p if p.name == "self" else p.replace(kind=keyword)
            for p in inspect.signature(init).parameters.values()
            if p.kind != p.VAR_KEYWORD
        ]
        names, hints = {p.name for p in params}, {}
        for source in sources:
            source_hints = typing.get_type_hints(
                source.__init__ if inspect.isclass(source) else source, include_extras=True
            )
            for p in inspect.signature(source).parameters.values():
                if p.name not in names and p.default is not p.empty and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                    params.append(p.replace(kind=keyword))
                    names.add(p.name)
                    hints[p.name] = source_hints.get(p.name, Any)
        init.__signature__ = inspect.Signature(params)
        init.__annotations__ = {**hints, **typing.get_type_hints(init, include_extras=True)}
        return cls

    return decorate
