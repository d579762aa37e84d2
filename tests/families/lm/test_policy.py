"""train.on_policy: a share of each batch rewritten with what the student (GKD) or the teacher (sequence-level
KD) writes after each row's prompt; the prompt keeps its own targets, the written tokens carry theirs."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from kdforge.config.training import OnPolicyConfig
from kdforge.data.bundle import PAD_TARGET
from kdforge.families.lm.generate import generate
from kdforge.families.lm.policy import WrittenSequences
from kdforge.models import build_model
from kdforge.schedules import Clock
from kdforge.teachers.hub import HFTeacher

LLAMA = {"model_type": "llama", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
         "intermediate_size": 32}  # fmt: skip


@pytest.fixture
def batch():
    """Eight rows of 16 tokens: a 5-token prompt (no targets) then an answer."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 320, (8, 16), generator=g)
    y = torch.cat([x[:, 1:], torch.randint(1, 320, (8, 1), generator=g)], 1)
    y[:, :4] = PAD_TARGET
    return x, y


def student():
    torch.manual_seed(0)
    return build_model("hf_causal_lm", input_shape=(16,), num_classes=320, hf_config=LLAMA).train()


def rewrite(writer, fraction=1.0, temperature=0.0, stop=(), **options):
    cfg = OnPolicyConfig(fraction=fraction, max_new_tokens=8, temperature=temperature, **options)
    return WrittenSequences(cfg, writer, seed=0, window=16, stop=list(stop))


def test_every_row_becomes_its_prompt_and_the_students_greedy_continuation(batch):
    x, y = batch
    model = student()
    new_x, new_y = rewrite(model)(x, y, Clock(step=3))
    assert model.training  # back to training after writing
    for row in range(8):
        prompt = x[row, :5].tolist()
        written = generate(model, prompt, 8, temperature=0.0)
        # the inputs are the sequence but its last token, which is only a target
        assert new_x[row, :12].tolist() == (prompt + written)[:12] and bool((new_x[row, 12:] == 0).all())
        assert bool((new_y[row, :4] == PAD_TARGET).all()) and new_y[row, 4:12].tolist() == written
        assert bool((new_y[row, 12:] == PAD_TARGET).all())


def test_a_written_row_ends_at_its_stop_token_and_so_do_its_targets(batch):
    """Each row stops at the third token it writes (made its stop token): the row holds the prompt and those three
    tokens, the stop token the last target; nothing after it is read or trained on."""
    x, y = batch
    model = student()
    free = rewrite(model)(x, y, Clock(step=3))[1]
    stops = {int(free[row, 6]) for row in range(8)}  # each row's third written token
    new_x, new_y = rewrite(model, stop=stops)(x, y, Clock(step=3))
    for row in range(8):
        written = free[row, 4:12].tolist()
        end = next(at for at, token in enumerate(written) if token in stops) + 1  # at most 3
        assert new_y[row, 4 : 4 + end].tolist() == written[:end] and new_y[row, 4 + end - 1].item() in stops
        assert bool((new_y[row, 4 + end :] == PAD_TARGET).all()) and bool((new_x[row, 4 + end :] == 0).all())


def test_lambda_picks_that_share_of_rows_and_zero_changes_nothing(batch):
    x, y = batch
    model = student()
    assert rewrite(model, 0.0)(x, y, Clock(step=0)) == (x, y)
    new_x, new_y = rewrite(model, 0.5)(x, y, Clock(step=0))
    changed = (new_y != y).any(1)
    assert int(changed.sum()) == 4 and torch.equal(new_x[~changed], x[~changed])
    again = rewrite(model, 0.5, temperature=1.0)
    first, second = again(x, y, Clock(step=5)), again(x, y, Clock(step=5))
    assert torch.equal(first[0], second[0])  # the same step writes the same rows and samples (resumable)
    assert not torch.equal(first[0], again(x, y, Clock(step=6))[0])


def test_the_teacher_writes_for_sequence_level_kd(batch, tiny_llama):
    x, y = batch
    teacher = HFTeacher(AutoModelForCausalLM.from_pretrained(tiny_llama), "input_ids", "causal_lm").eval()
    new_x, new_y = rewrite(teacher, by="teacher")(x, y, Clock(step=0))
    prompt = x[0, :5].tolist()
    assert new_y[0, 4:12].tolist() == generate(teacher, prompt, 8, temperature=0.0)


def test_text_rows_take_their_first_tokens_as_prompt(batch):
    """(Packed rows are refused with the recipe: tests/errors/test_bad_commands.py.)"""
    x, y = batch
    y = torch.cat([x[:, 1:], x[:, :1]], 1)  # plain text: every target trained
    new_x, new_y = rewrite(student(), prompt_tokens=3)(x, y, Clock(step=0))
    assert torch.equal(new_x[:, :3], x[:, :3])
    assert torch.equal(new_y[:, :2], y[:, :2])  # the prompt's own next tokens stay trained
    assert torch.equal(new_y[:, 2:9], new_x[:, 3:10])  # the eight written ones follow it (the last a target only)
    assert bool((new_y[:, 10:] == PAD_TARGET).all())  # and nothing past them


def test_a_sharded_writer_is_refused(tmp_path):
    from kdforge.config import Recipe
    from kdforge.errors import ConfigError

    raw = {
        "name": "gkd",
        "data": {"name": "text_lm", "length": 16},
        "teacher": {"source": "train", "model": {"name": "lm_transformer", "width": 16, "depth": 1, "heads": 2}},
        "student": {"model": {"name": "hf_causal_lm", "hf_config": LLAMA}},
        "losses": [{"name": "kd"}],
        "train": {"on_policy": {"fraction": 0.5}, "fsdp": True},
    }
    with pytest.raises(ConfigError, match="train.on_policy writes with the student, which train.fsdp shards"):
        Recipe.from_dict(raw)
    raw["teacher"] = {"source": "hf", "shard": True, "model": {"name": "org/llm", "output": "causal_lm"}}
    raw["train"] = {"on_policy": {"fraction": 0.5, "by": "teacher"}}
    with pytest.raises(ConfigError, match="train.on_policy writes with the teacher, which teacher.shard shards"):
        Recipe.from_dict(raw)
