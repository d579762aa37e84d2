"""TinyBERT's and MiniLM's intermediate terms on Hugging Face encoders, which tap like any model: hidden states and
embeddings through ``hint``, attention through ``attn_mse`` / ``attn_kl`` / ``minilm`` reading BERT's separate
query, key and value projections (``qkv``), each against a hand-written reference on the same captured tensors."""

import math

import pytest
import torch
import torch.nn.functional as F

from datafiles import write_bert
from kdforge.distiller import Distiller
from kdforge.losses import build_losses
from kdforge.losses.terms import LossTerm
from kdforge.models import build_model
from kdforge.schedules import Clock
from kdforge.teachers import Teacher

QKV = ["attention.self.query", "attention.self.key", "attention.self.value"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A 4-block BERT teacher and a 2-block student made from its blocks 1 and 3 (weights spread widely enough that
    attention is far from uniform)."""
    folder = write_bert(tmp_path_factory.mktemp("bert") / "bert", 400, initializer_range=0.3)
    teacher = build_model("hf_encoder", input_shape=(10,), num_classes=3, path=str(folder)).eval()
    student = build_model("hf_encoder", input_shape=(10,), num_classes=3, path=str(folder), layers="1::2").eval()
    x = torch.randint(5, 400, (6, 10), generator=torch.Generator().manual_seed(0))
    x[:, 0], x[3:, 7:] = 2, 0  # [CLS] first; the last rows padded
    return student, teacher, x


def captured(model, names, x):
    """The outputs of the modules ``names`` in one forward of ``model``."""
    found, modules = {}, dict(model.named_modules())
    hooks = [modules[n].register_forward_hook(lambda m, a, out, n=n: found.__setitem__(n, out)) for n in names]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return found


def scores(q, k, heads):
    b, n, d = q.shape
    q, k = (t.reshape(b, n, heads, d // heads).transpose(1, 2) for t in (q, k))
    return q @ k.transpose(-1, -2) / math.sqrt(d // heads)


def term_value(student, teacher, spec, x, pad=None):
    terms = build_losses([spec])
    distiller = Distiller(student, Teacher(teacher), terms, x[:2], pad=pad)
    distiller.eval()
    with torch.no_grad():
        return distiller(x, torch.zeros(len(x), dtype=torch.long), Clock(step=0, epoch=0, epochs=1, progress=0)).loss


@pytest.mark.parametrize("name", ["attn_mse", "attn_kl"])
def test_attention_terms_read_berts_query_and_key_projections(pair, name):
    student, teacher, x = pair
    blocks = "model.bert.encoder.layer"
    spec = {"name": name, "student": blocks, "teacher": blocks, "mapping": "uniform", "qkv": QKV, "relation_heads": 2}
    got = term_value(student, teacher, spec, x)
    pairs = [(0, 1), (1, 3)]  # uniform: the student's 2 blocks on the teacher's 4
    s = captured(student, [f"{blocks}.{i}.{p}" for i, _ in pairs for p in QKV[:2]], x)
    t = captured(teacher, [f"{blocks}.{j}.{p}" for _, j in pairs for p in QKV[:2]], x)
    losses = []
    for i, j in pairs:
        ss = scores(s[f"{blocks}.{i}.{QKV[0]}"], s[f"{blocks}.{i}.{QKV[1]}"], 2)
        ts = scores(t[f"{blocks}.{j}.{QKV[0]}"], t[f"{blocks}.{j}.{QKV[1]}"], 2)
        if name == "attn_mse":
            losses.append(((ss - ts) ** 2).mean())
        else:
            pt = ts.softmax(-1)
            losses.append((pt * (pt.log() - ss.log_softmax(-1))).sum(-1).mean())
    assert got.item() == pytest.approx(torch.stack(losses).mean().item(), rel=1e-5) and got.item() > 1e-3


def test_hidden_state_and_embedding_hints_reach_the_student_and_its_projector(pair):
    student, teacher, x = pair
    spec = [{"name": "hint", "student": "model.bert.encoder.layer", "teacher": "model.bert.encoder.layer",
             "mapping": "uniform", "projector": "none"},
            {"name": "hint", "student": "model.bert.embeddings", "teacher": "model.bert.embeddings",
             "projector": "none"}]  # fmt: skip
    terms = build_losses(spec)
    distiller = Distiller(student, Teacher(teacher), terms, x[:2])
    out = distiller(x, torch.zeros(len(x), dtype=torch.long), Clock(step=0, epoch=0, epochs=1, progress=0))
    blocks = "model.bert.encoder.layer"
    s = captured(student, [f"{blocks}.0", f"{blocks}.1", "model.bert.embeddings"], x)
    t = captured(teacher, [f"{blocks}.1", f"{blocks}.3", "model.bert.embeddings"], x)
    first = lambda value: value[0] if isinstance(value, tuple) else value  # noqa: E731
    hidden = (F.mse_loss(first(s[f"{blocks}.0"]), first(t[f"{blocks}.1"]))
              + F.mse_loss(first(s[f"{blocks}.1"]), first(t[f"{blocks}.3"]))) / 2  # fmt: skip
    assert out.parts["hint"].item() == pytest.approx(hidden.item(), rel=1e-5)
    assert out.parts["hint_2"].item() == pytest.approx(0.0, abs=1e-7)  # the student's embeddings are the teacher's
    out.loss.backward()
    assert student.model.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


BLOCKS = "model.bert.encoder.layer"
TERMS = {
    "hint": {"name": "hint", "student": BLOCKS, "teacher": BLOCKS, "mapping": "uniform", "projector": "none"},
    **{name: {"name": name, "student": BLOCKS, "teacher": BLOCKS, "mapping": "uniform", "qkv": QKV,
              "relation_heads": 2} for name in ("attn_mse", "attn_kl", "minilm")},
}  # fmt: skip


@pytest.mark.parametrize("name", list(TERMS))
def test_the_intermediate_terms_leave_the_padding_out_so_more_of_it_changes_nothing(pair, name):
    """Batches are padded to their longest row: with the data's padding id, a term sees the real tokens only, so
    padding a batch further leaves it as it was (without the id, the padded positions count)."""
    student, teacher, x = pair
    longer = torch.cat([x, torch.zeros(len(x), 5, dtype=x.dtype)], 1)
    masked = term_value(student, teacher, TERMS[name], x, pad=0)
    assert term_value(student, teacher, TERMS[name], longer, pad=0).item() == pytest.approx(masked.item(), rel=1e-5)
    assert term_value(student, teacher, TERMS[name], longer).item() != pytest.approx(masked.item(), rel=1e-4)


class RealTokensSeen(LossTerm):
    """Records the real positions each step hands it (a term that may or may not say it reads them)."""

    def __init__(self, reads: bool):
        super().__init__()
        self.name, self.reads_real_tokens, self.seen = "seen", reads, []

    def forward(self, ctx):
        self.seen.append(ctx.real_tokens)
        return ctx.student_logits.sum() * 0


@pytest.mark.parametrize("reads", [True, False])
def test_only_a_term_that_reads_the_real_positions_makes_the_step_find_them(pair, reads):
    """Finding which positions are padding waits on the device at every step: a step does it only for a term that
    reads them, however the data pads."""
    student, teacher, x = pair
    term = RealTokensSeen(reads)
    distiller = Distiller(student, Teacher(teacher), [term], x[:2], pad=0)
    with torch.no_grad():
        distiller(x, torch.zeros(len(x), dtype=torch.long), Clock(step=0, epoch=0, epochs=1, progress=0))
    (seen,) = term.seen
    assert (seen is not None) == reads
    if reads:
        assert torch.equal(seen, x != 0)


def test_attention_scores_and_hidden_states_of_real_tokens_alone_against_references(pair):
    student, teacher, x = pair
    real = x != 0
    pairs = [(0, 1), (1, 3)]
    s = captured(student, [f"{BLOCKS}.{i}{p}" for i, _ in pairs for p in ("", *(f".{q}" for q in QKV[:2]))], x)
    t = captured(teacher, [f"{BLOCKS}.{j}{p}" for _, j in pairs for p in ("", *(f".{q}" for q in QKV[:2]))], x)
    first = lambda value: value[0] if isinstance(value, tuple) else value  # noqa: E731
    both = real[:, None, :, None] & real[:, None, None, :]  # [B, 1, N, N]: pairs of real tokens
    attention, hidden = [], []
    for i, j in pairs:
        ss = scores(s[f"{BLOCKS}.{i}.{QKV[0]}"], s[f"{BLOCKS}.{i}.{QKV[1]}"], 2)
        ts = scores(t[f"{BLOCKS}.{j}.{QKV[0]}"], t[f"{BLOCKS}.{j}.{QKV[1]}"], 2)
        attention.append(((ss - ts) ** 2 * both).sum() / (both.sum() * 2))  # 2 relation heads
        squared = (first(s[f"{BLOCKS}.{i}"]) - first(t[f"{BLOCKS}.{j}"])) ** 2  # [B, N, D]
        hidden.append(squared[real].mean())
    got = term_value(student, teacher, TERMS["attn_mse"], x, pad=0)
    assert got.item() == pytest.approx(torch.stack(attention).mean().item(), rel=1e-5)
    got = term_value(student, teacher, TERMS["hint"], x, pad=0)
    assert got.item() == pytest.approx(torch.stack(hidden).mean().item(), rel=1e-5)
