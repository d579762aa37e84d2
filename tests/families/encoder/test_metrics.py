"""The encoder metrics against their reference implementations: scikit-learn's macro F1 and Matthews
correlation, SciPy's correlations, seqeval's entity F1 (conlleval's chunking, IOB2 and IOBES)."""

import numpy as np
import pytest
from seqeval.metrics import f1_score as seqeval_f1
from seqeval.metrics import precision_score, recall_score
from sklearn.metrics import f1_score, matthews_corrcoef

from kdforge.families.encoder.metrics import class_metrics, entities, entity_f1, score_metrics


@pytest.mark.parametrize("classes", [2, 5])
def test_macro_f1_and_mcc_match_scikit_learn(classes):
    rng = np.random.default_rng(classes)
    target = rng.integers(0, classes, 300)
    predicted = np.where(rng.random(300) < 0.6, target, rng.integers(0, classes, 300))
    predicted[predicted == classes - 1] = 0  # one class never predicted: its F1 is 0
    found = class_metrics(predicted, target, classes + 1)  # and one class neither present nor predicted
    assert found["f1_macro"] == pytest.approx(f1_score(target, predicted, average="macro", zero_division=0))
    assert found["mcc"] == pytest.approx(matthews_corrcoef(target, predicted))
    assert class_metrics(target, target, classes)["mcc"] == pytest.approx(1.0)


def test_correlations_match_scipy():
    from scipy.stats import pearsonr, spearmanr

    rng = np.random.default_rng(0)
    target = rng.normal(size=200)
    predicted = target + rng.normal(scale=0.5, size=200)
    found = score_metrics(predicted, target)
    expected = {"pearson": pearsonr(predicted, target)[0], "spearman": spearmanr(predicted, target)[0]}
    assert found == pytest.approx(expected)


SCHEMES = {
    "IOB2": ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG"],
    "IOBES": ["O", "B-PER", "I-PER", "E-PER", "S-LOC", "B-LOC", "E-LOC", "S-ORG", "I-ORG"],
}


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_entity_f1_matches_seqeval_on_random_tag_sequences_well_formed_or_not(scheme):
    rng = np.random.default_rng(len(scheme))
    tags = SCHEMES[scheme]
    gold = [list(rng.choice(tags, rng.integers(1, 15))) for _ in range(300)]
    guess = [[t if rng.random() < 0.7 else str(rng.choice(tags)) for t in row] for row in gold]
    found = entity_f1(guess, gold)
    assert found["entity_f1"] == pytest.approx(seqeval_f1(gold, guess))
    assert found["entity_precision"] == pytest.approx(precision_score(gold, guess))
    assert found["entity_recall"] == pytest.approx(recall_score(gold, guess))


def test_entities_are_read_as_conlleval_reads_them():
    assert entities(["B-PER", "I-PER", "O", "I-LOC", "B-LOC", "E-LOC", "S-ORG"]) == {
        ("PER", 0, 1), ("LOC", 3, 3), ("LOC", 4, 5), ("ORG", 6, 6)
    }  # fmt: skip
    assert entities(["B-PER", "I-LOC"]) == {("PER", 0, 0), ("LOC", 1, 1)}  # a type change starts an entity
    assert entity_f1([["O"]], [["O"]])["entity_f1"] == 0.0  # nothing to find, nothing found
