"""The figures quoted in README.md and docs/ match the committed benchmark results (benchmarks/figures.py)."""

import benchscripts


def load():
    return benchscripts.load("figures")


def test_every_registered_figure_matches_its_results_file():
    assert load().problems() == []


def test_a_figure_that_no_longer_matches_its_results_is_found(tmp_path, monkeypatch):
    figures = load()
    doc = tmp_path / "doc.md"
    doc.write_text("the student gains 1.23 points, 45.6 % of the time\n")
    (tmp_path / figures.RESULTS).mkdir(parents=True)
    (tmp_path / figures.RESULTS / "lm.md").write_text("| gain | 1.2349 | share | 0.456 |\n")
    (tmp_path / "benchmarks" / "lm.py").write_text("")
    monkeypatch.setattr(figures, "ROOT", tmp_path)
    monkeypatch.setattr(figures, "NOT_FIGURES", {})
    monkeypatch.setattr(figures, "FIGURES", [figures.Figure("doc.md", "gains 1.23 points, 45.6 %", "lm.md")])
    assert figures.problems() == []  # 1.2349 rounds to 1.23; 0.456 is 45.6 %
    (tmp_path / figures.RESULTS / "lm.md").write_text("| gain | 1.31 | share | 0.456 |\n")  # a re-run moved it
    assert figures.problems() == [
        "doc.md: 'gains 1.23 points, 45.6 %': 1.23 not in lm.md (regenerate: uv run python benchmarks/lm.py)"
    ]


def test_every_row_of_a_registered_table_is_checked_whole_numbers_too(tmp_path, monkeypatch):
    figures = load()
    (tmp_path / "doc.md").write_text(
        "Intro.\n\n| model | params | acc |\n|---|---:|---:|\n| a | 1,234 | 98.5 |\n| b | 56 | 97.1 |\n"
    )
    (tmp_path / figures.RESULTS).mkdir(parents=True)
    (tmp_path / figures.RESULTS / "lm.md").write_text("a 1234 0.985; b 57 0.971\n")
    (tmp_path / "benchmarks" / "lm.py").write_text("")
    monkeypatch.setattr(figures, "ROOT", tmp_path)
    monkeypatch.setattr(figures, "NOT_FIGURES", {})
    monkeypatch.setattr(figures, "FIGURES", figures.table("doc.md", "| a |", "lm.md"))
    (problem,) = figures.problems()  # row a matches (1,234 is 1234); row b's whole number 56 does not
    assert problem.startswith("doc.md: '| b | 56 | 97.1 |': 56 not in lm.md")
    monkeypatch.setattr(figures, "FIGURES", figures.table("doc.md", "| c |", "lm.md"))
    assert "no longer in the document" in figures.problems()[0]


def test_the_audit_lists_prose_figures_no_passage_checks_decimals_and_whole_numbers_with_a_unit():
    figures = load()
    doc = "A checked gain of 1.5 points.\nAn unchecked one of 2.5.\n```\nlr: 0.003\n```\n| `lr` | 0.001 |\nWhole 12.\n"
    doc += "It gains 13–21 points,\nkeeps 74 %,\nruns 3× faster.\nOn 8×8 digits, 15 epochs.\n"
    doc += "Its checked gain of 1.5 points beside 2.7 more.\n"  # a checked passage does not cover its whole line
    registered = [figures.Figure("d.md", "checked gain of 1.5 points", "x.md")]
    whole = ["d.md:8: It gains 13–21 points,", "d.md:9: keeps 74 %,", "d.md:10: runs 3× faster."]
    beside = "d.md:12: Its checked gain of 1.5 points beside 2.7 more."
    assert figures.unregistered({"d.md": doc}, registered, {}) == ["d.md:2: An unchecked one of 2.5.", *whole, beside]
    declared = {"d.md": ("An unchecked one of 2.5.", "It gains 13–21 points,", "keeps 74 %,", "runs 3× faster.",
                         "2.7 more")}  # fmt: skip
    assert figures.unregistered({"d.md": doc}, registered, declared) == []


def test_a_prose_decimal_neither_checked_nor_declared_fails_and_so_does_a_declaration_whose_line_went(
    tmp_path, monkeypatch
):
    figures = load()
    (tmp_path / "README.md").write_text("Distilled, it gains 2.5 points.\nAt lr 0.003.\n")
    monkeypatch.setattr(figures, "ROOT", tmp_path)
    monkeypatch.setattr(figures, "FIGURES", [])
    monkeypatch.setattr(figures, "NOT_FIGURES", {"README.md": ("At lr 0.003.", "At T = 0.5.")})
    assert figures.problems() == [
        "README.md:1: Distilled, it gains 2.5 points.: a figure no passage checks (register it in FIGURES with its "
        "results file; a setting, target or arithmetic in NOT_FIGURES)",
        "README.md: NOT_FIGURES' line 'At T = 0.5.' is no longer in the document (update NOT_FIGURES in "
        "benchmarks/figures.py)",
    ]


RENDERED = {  # a results file: the function of a benchmark script that writes its .md from its .json
    "methods": "methods.markdown",
    "encoders": "encoders.markdown",
    "encoders_seeds0_1_2_1_narrow_kd_transfer": "encoders.markdown",
    "encoders_seeds0_1_2_1_kd_tokens": "encoders.markdown",
    "encoders_seeds0_1_2_1_kd_tokens_teacher_noisy": "encoders.markdown",
    "encoders_seeds0_1_2_1_kd_neighbours": "encoders.markdown",
    "encoders_seeds0_1_2_1_kd_dkd_logit_std": "encoders.markdown",
    "encoders_seeds0_1_2_narrow_kd_dkd_logit_std": "encoders.markdown",
    "tm_ablation": "tm_ablation.ablation_table",
    "tm_ablation_avx2": "tm_ablation.ablation_table",
    "tm_ablation_30ep": "tm_ablation.ablation_table",
    "tm_ablation_30ep_alone_seeds0-5": "tm_ablation.ablation_table",
    "tm_ablation_30ep_alone_seeds0-5_avx2": "tm_ablation.ablation_table",
    "tm_levels": "tm_ablation.levels_table",
    "tm_hard_literals_30ep": "tm_ablation.hard_literals_table",
    "tm_hard_finish": "tm_ablation.hard_finish_table",
    "tm_hard_finish_30ep": "tm_ablation.hard_finish_table",
    "tm_strict_finish": "tm_ablation.strict_finish_table",
    "tm_accuracy": "tm_students.accuracy_table",
    "tm_accuracy_finish": "tm_students.accuracy_finish_table",
    "tm_transfer": "tm_students.transfer_table",
    "tm_patch_norm": "tm_students.patch_norm_table",
}


def test_the_tables_are_what_their_json_gives_so_each_derived_figure_comes_from_the_measured_cells(monkeypatch):
    """The docs quote differences (hard − soft, variant − none, gains on validation) that the tables compute from
    the JSON's cells: a table edited by hand, or one its renderer no longer writes, is found here."""
    import json

    monkeypatch.syspath_prepend(str(benchscripts.BENCHMARKS))  # the scripts import their neighbours

    for name, function in RENDERED.items():
        module, table = function.split(".")
        results = benchscripts.BENCHMARKS / "results"
        written = getattr(benchscripts.load(module), table)(json.loads((results / f"{name}.json").read_text()))
        assert written == (results / f"{name}.md").read_text(), name


def test_the_gain_text_cls_kd_quotes_is_the_benchmarks_run_of_that_recipe(monkeypatch):
    """The shipped recipe is the encoder benchmark's 3-block student in TinyBERT's order: the same terms, stages and
    budget, so the gain its comment quotes (checked against encoders.md above) is that recipe's."""
    import yaml

    monkeypatch.syspath_prepend(str(benchscripts.BENCHMARKS))
    encoders = benchscripts.load("encoders")
    shipped = yaml.safe_load(encoders.RECIPE.read_text())
    benchmarked = encoders.recipe("3 blocks", encoders.WAYS["stages"], 0, "runs")
    assert benchmarked["student"]["model"]["layers"] == list(range(6))[slice(None, None, 2)]  # the recipe's "::2"
    for key in ("data", "teacher", "losses", "stages", "optim"):
        assert benchmarked[key] == shipped[key], key
    assert benchmarked["train"]["epochs"] == shipped["train"]["epochs"]
