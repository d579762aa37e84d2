"""What ``kdforge tune`` leaves: tune.md (the best trial, every trial, parameter importances), Optuna's plots as PNG,
best.yaml, and the best recipe trained over seeds beside the student alone."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kdforge.config import Recipe
from kdforge.errors import KdforgeError
from kdforge.files import save_figure, write_text
from kdforge.tuner.space import Space, suggest
from kdforge.tuner.trials import RECIPE_ITSELF

if TYPE_CHECKING:
    import optuna


@dataclass
class TuneResult:
    """What a tune found: its directory, the best trial's values and score, its recipe, and the sweep over seeds."""

    tune_dir: Path
    best_params: dict[str, Any]
    best_value: float
    best_recipe: Recipe
    sweep: dict[str, Any] | None


def report(
    study: optuna.Study, recipe: Recipe, space: Space, tune_dir: Path, seeds: int, console: Console
) -> TuneResult:
    """tune.md, the plots, best.yaml, and the best recipe over ``seeds`` seeds."""
    import optuna

    from kdforge.sweeper import sweep

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise KdforgeError(f"tune: no trial of study '{study.study_name}' finished; see {tune_dir / 'trials'}")
    best = study.best_trial
    best_raw = suggest(optuna.trial.FixedTrial(best.params), recipe.to_dict(), space)
    best_recipe = Recipe.from_dict(best_raw)
    write_text(tune_dir / "best.yaml", best_recipe.to_yaml())
    importances = _importances(study)
    plots = _plots(study, tune_dir / "plots", importances)
    summary = None
    if seeds:
        console.rule(f"[bold]the best recipe over {seeds} seeds, beside the student alone")
        final = best_recipe.model_copy(
            update={
                "train": best_recipe.train.model_copy(update={"baseline": True}),
                "log": best_recipe.log.model_copy(update={"dir": str(tune_dir)}),
            }
        )
        summary = sweep(final, seeds, recipe.seed, console).summary
    write_text(tune_dir / "tune.md", tune_markdown(study, recipe, best, importances, plots, summary))
    console.print(tune_table(study, best))
    console.print(f"tune directory: [bold]{escape(str(tune_dir))}[/] (tune.md, best.yaml, plots/, trials/)")
    return TuneResult(tune_dir, best.params, float(best.value or 0.0), best_recipe, summary)


def _importances(study: optuna.Study) -> dict[str, float]:
    import optuna

    try:
        return optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError):  # fewer than two finished trials, or one value everywhere
        return {}


def _plots(study: optuna.Study, folder: Path, importances: dict[str, float]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    import optuna.visualization.matplotlib as views

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {  # plot, and the axes' names in our words (x, y)
        "history": (views.plot_optimization_history, ("trial", "best validation score")),
        "intermediate": (views.plot_intermediate_values, ("epoch", "validation score")),
    }
    if importances:
        wanted["importances"] = (views.plot_param_importances, ("importance", "parameter"))
    made = []
    for name, (plot, (x, y)) in wanted.items():
        axes = plot(study)
        axes.set_xlabel(x)
        axes.set_ylabel(y)
        figure = axes.get_figure()
        save_figure(figure, folder / f"{name}.png", dpi=120, bbox_inches="tight")
        plt.close(figure)  # type: ignore[arg-type]
        made.append(f"plots/{name}.png")
    return made


def _trial_rows(study: optuna.Study) -> list[list[str]]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        epochs = max(t.intermediate_values) if t.intermediate_values else "-"
        params = ", ".join(f"{k} = {_shown(v)}" for k, v in t.params.items())
        value = f"{t.value:.4f}" if t.value is not None else "-"
        number = f"{t.number} (the recipe)" if t.user_attrs.get(RECIPE_ITSELF) else str(t.number)
        rows.append([number, t.state.name.lower(), value, str(epochs), params])
    return rows


def _shown(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def tune_markdown(
    study: optuna.Study,
    recipe: Recipe,
    best: optuna.trial.FrozenTrial,
    importances: dict[str, float],
    plots: list[str],
    summary: dict[str, Any] | None,
) -> str:
    lines = [
        f"# kdforge tune: {recipe.name}",
        "",
        "Objective: the distilled student's best validation score (higher is better; a perplexity enters negated). "
        "Only validation scores chose and pruned the trials; the test figures come from the final runs over seeds.",
        "",
        f"**Best trial: {best.number}**"
        + (" (the recipe as written: no trial scored higher)" if best.user_attrs.get(RECIPE_ITSELF) else "")
        + f", validation {best.value:.4f}, "
        + ", ".join(f"`{k}` = {_shown(v)}" for k, v in best.params.items())
        + " (recipe: `best.yaml`).",
        "",
    ]
    if summary is not None:
        from kdforge.sweeper import sweep_report

        lines += ["## The best recipe over seeds (test split)", "", sweep_report(summary).split("\n", 2)[-1], ""]
    if importances:
        lines += ["## Parameter importances", "", "| parameter | importance |", "|---|---:|"]
        lines += [f"| `{k}` | {v:.3f} |" for k, v in importances.items()]
        lines.append("")
    lines += ["## Trials", "", "| trial | state | validation | epochs | parameters |", "|---:|---|---:|---:|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in _trial_rows(study)]
    lines += ["", *[f"![{Path(p).stem}]({p})" for p in plots], ""]
    return "\n".join(lines)


def tune_table(study: optuna.Study, best: optuna.trial.FrozenTrial) -> Table:
    table = Table(title=f"kdforge tune: {escape(study.study_name)} (best: trial {best.number})")
    for column in ("trial", "state", "validation", "epochs", "parameters"):
        table.add_column(column, justify="right" if column in ("trial", "validation", "epochs") else "left")
    for row in _trial_rows(study):
        table.add_row(*map(escape, row), style="bold" if row[0].partition(" ")[0] == str(best.number) else None)
    return table
