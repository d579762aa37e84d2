"""student.peft on any student, not only language models: a digits MLP distilled through LoRA adapters keeps its
own weights, and leaves as a plain MLP with the adapters merged."""

import torch

from kdforge import Recipe, run
from kdforge.export import load_student
from kdforge.models import build_model


def test_an_mlp_student_learns_through_its_adapters_and_leaves_merged(tiny_recipe):
    tiny_recipe["student"] = {"model": {"name": "mlp", "hidden": [32]}, "peft": {"r": 4, "alpha": 8}}
    tiny_recipe["train"] = {"epochs": 2, "baseline": True}
    result = run(Recipe.from_dict(tiny_recipe))
    student = load_student(result.run_dir)
    assert not any("lora" in name for name in student.state_dict())  # a plain MLP again
    torch.manual_seed(tiny_recipe["seed"])  # the student as the run built it
    initial = build_model("mlp", input_shape=(64,), num_classes=10, hidden=[32])
    last = [n for n in initial.state_dict() if n.endswith("weight")][-1]  # the output head: not adapted
    assert torch.equal(student.state_dict()[last], initial.state_dict()[last])
    first = next(n for n in initial.state_dict() if n.endswith("weight"))
    assert not torch.equal(student.state_dict()[first], initial.state_dict()[first])  # merged adapters moved it
    # rank-4 updates of a random MLP learn, if not much: above chance (0.1), and so does the student alone
    assert (
        result.results["student"]["test"]["accuracy"] > 0.2
        and result.results["student_alone"]["test"]["accuracy"] > 0.2
    )
