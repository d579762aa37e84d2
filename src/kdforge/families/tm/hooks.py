"""The tm family's hooks: what it adds to every run (see :class:`kdforge.family.Family`)."""

from __future__ import annotations

from typing import Any

from kdforge.families.tm.clause import clause_layers, clause_usage, gradable, hard_mode, set_levels
from kdforge.families.tm.steering import ClauseSteering, steering_events
from kdforge.families.tm.transfer import feedforward_pairs, fit_feedforwards
from kdforge.family import Family, register_family

LEVEL_CHOICES = (1, 2, 3, 4, 8)
# of validation accuracy: 0.25 points. Chosen per run within 0.5 on validation, three cases of
# benchmarks/results/tm_levels.md end 0.48 below soft on test, at the edge; within 0.25, −0.40 at worst
LEVEL_TOLERANCE = 0.0025


class TsetlinMachines(Family):
    name = "tm"
    description = (
        "Tsetlin-machine students: clause layers trained by gradient, exported to boolean rules evaluated in integers"
    )

    def steering(self, recipe: Any, student: Any, val_batches: Any) -> Any | None:
        return ClauseSteering.wanted(recipe.student, student, val_batches)

    def from_teacher(self, session: Any, student: Any, teacher: Any) -> dict[str, Any]:
        pairs = feedforward_pairs(student, teacher.module)
        if not pairs:
            return {}
        cfg = session.recipe.student.init_from_teacher
        fits = fit_feedforwards(pairs, teacher, session.train, session.val, cfg.steps, cfg.lr, session.track)
        session.console.print(
            "init_from_teacher: TM blocks fitted to the teacher MLPs: "
            + ", ".join(f"{n} R² {f['r2_val']:.2f}" for n, f in fits.items()),
            markup=False,
        )
        return {"feedforward": fits}

    def describe_from_teacher(self, student: Any, teacher: Any) -> str:
        pairs = feedforward_pairs(student, teacher)
        return (
            f"{len(pairs)} TM blocks will learn their teacher MLPs: "
            + ", ".join(f"{n} <- {origin}" for n, (_, origin, _) in pairs.items())
            if pairs
            else ""
        )

    def describe_after_fit(self, recipe: Any, student: Any) -> str:
        hard = recipe.student.hard_finish or all(layer.hard for layer in clause_layers(student))
        if hard or not levels_to_choose(recipe.student, student):  # a student that ends hard keeps its levels
            return ""
        return (
            "its rules' levels are chosen on validation (the fewest of "
            f"{', '.join(map(str, LEVEL_CHOICES))} within {100 * LEVEL_TOLERANCE:g} points of soft mode; "
            "student.choose_levels)"
        )

    def after_fit(self, session: Any, stage: str, student: Any, history: list[dict[str, Any]]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        layers = clause_layers(student)
        if layers and not all(layer.hard for layer in layers):
            if chosen := choose_levels(session, stage, student):
                found["levels_chosen"] = chosen
            with hard_mode(student):  # what the exported boolean rules will score
                found["test_hard"] = session.evaluate(student, session.test, f"{stage}: test split, hard mode")
            found["levels"] = max(layer.levels for layer in layers)
            found["gradable"] = gradable(student)  # whether its literals could be read at several levels
        if usage := clause_usage(student, session.test):
            found["clause_usage"] = usage
        if steered := steering_events(history):
            found["steering"] = steered
        return found

    def notes(self, label: str, entry: dict[str, Any]) -> list[str]:
        lines = []
        chosen = entry.get("levels_chosen")
        if chosen and len(chosen["val_hard"]) > 1:  # with one level tried, there is nothing to say
            tried = ", ".join(f"{n}: {100 * a:.2f}%" for n, a in chosen["val_hard"].items())
            lines.append(
                f"{label}'s levels, chosen on validation (soft {100 * chosen['val_soft']:.2f}%, hard at {tried}): "
                f"{chosen['levels']}; `student.choose_levels: false` keeps one boolean per literal"
            )
        if "test_hard" in entry:
            hard = 100 * entry["test_hard"]["accuracy"]
            levels = entry.get("levels", 1)
            at = f", literals read at {levels} levels" if levels > 1 else ""
            lines.append(f"{label} in hard mode (its boolean rules{at}): {hard:.2f}% test")
            soft = (entry.get("test") or {}).get("accuracy")
            if soft is not None and (lost := 100 * soft - hard) > 0.5:
                more_levels = (  # where they can be read at several levels and none were chosen
                    "read its literals at several levels (model option `levels: 8`; on a trained student, "
                    "`kdforge.families.tm.set_levels`) or "
                    if levels == 1 and entry.get("gradable") and not chosen
                    else ""
                )
                lines.append(
                    f"{label}'s rules lose {lost:.2f} points to its soft mode: {more_levels}finish in hard mode "
                    "(`student.hard_finish: 3`); see docs/tm.md, Hard mode"
                )
        if finish := entry.get("steering", {}).get("hard_finish"):
            soft = finish.get("soft_best_val") or {}
            before = (
                f"; its best soft epoch ({finish['soft_best_epoch']}) scored {100 * soft['accuracy']:.2f}% on "
                "validation"
                if "accuracy" in soft
                else ""
            )
            lines.append(
                f"{label} trained its last {finish['epochs']} epochs in hard mode: its scores are its boolean rules'"
                + before
            )
        return lines

    def report_sections(self, entry: dict[str, Any]) -> list[str]:
        lines = []
        fits = (entry.get("init_from_teacher") or {}).get("feedforward")
        if fits:
            lines += [
                "",
                "| TM block | teacher MLP | steps | relative MSE at start | R² on validation after |",
                "|---|---|---:|---:|---:|",
            ]
            lines += [
                f"| {n} | {f['teacher_mlp']} | {f['steps']} | {f['relative_mse_start'] or float('nan'):.3f} | "
                f"{f['r2_val']:.3f} |"
                for n, f in fits.items()
            ]
        steering = entry.get("steering", {})
        if "clause_specialize" in steering:
            s = steering["clause_specialize"]
            gains = "; ".join(
                f"`{n}` " + " ".join(f"{g:.2f}" for g in heads.values()) for n, heads in s["gains"].items()
            )
            lines += [
                "",
                f"clause_specialize (strength {s['strength']}) after epoch {s['epoch']}, head gains from validation: "
                f"{gains}.",
            ]
        if "auto_clause" in steering:
            a = steering["auto_clause"]
            moves = ", ".join(f"`{n}` {a['before'][n]} → {a['after'][n]}" for n in a["after"])
            when = f"after epoch {a['epoch']}" if a["epoch"] else "before training"
            lines += ["", f"auto_clause {when}: {a['total']} active clauses shared by validation importance: {moves}."]
        return lines


def levels_to_choose(cfg: Any, student: Any) -> bool:
    """Whether a run chooses ``student``'s levels: ``student.choose_levels`` on (``cfg``: the recipe's student
    section), no levels set in the model, clause layers that can be read at several levels."""
    return cfg.choose_levels and "levels" not in cfg.model.options and gradable(student)


def choose_levels(session: Any, stage: str, student: Any) -> dict[str, Any] | None:
    """Read ``student``'s literals at the fewest of ``LEVEL_CHOICES`` levels whose hard mode scores within
    ``LEVEL_TOLERANCE`` of its soft mode on validation (the best of them if none does): what was measured, or None
    where there is nothing to choose (``student.choose_levels`` off, levels set in the model, clause layers that read
    one boolean only, a task without accuracy)."""
    if not levels_to_choose(session.recipe.student, student):
        return None
    soft = session.evaluate(student, session.val, f"{stage}: validation split, soft mode").get("accuracy")
    if soft is None:
        return None
    hard: dict[int, float] = {}
    with hard_mode(student):
        for levels in LEVEL_CHOICES:
            set_levels(student, levels)
            description = f"{stage}: validation split, hard mode at {levels} level{'s' * (levels > 1)}"
            hard[levels] = session.evaluate(student, session.val, description)["accuracy"]
            if hard[levels] >= soft - LEVEL_TOLERANCE:
                break
    chosen = level_choice(hard, soft)
    set_levels(student, chosen)
    return {"levels": chosen, "val_soft": soft, "val_hard": {str(n): a for n, a in hard.items()}}


def level_choice(hard: dict[int, float], soft: float) -> int:
    """The levels chosen given hard mode's validation accuracy at each level tried (fewest first) and soft mode's: the
    first within ``LEVEL_TOLERANCE``, else the best (ties: the fewest)."""
    return next((n for n, a in hard.items() if a >= soft - LEVEL_TOLERANCE), max(hard, key=lambda n: hard[n]))


register_family(TsetlinMachines())
