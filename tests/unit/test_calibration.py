"""A run's calibration values and a configuration's reliability bins and test intervals,
on hand-made predictions whose ECE and Brier score are worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scripts.stats import calibration
from scripts.stats import stats as st

# Four images, two classes: each predicted at confidence 0.9; three of the four are right.
LABELS = np.array([0, 0, 1, 1])
OVERCONFIDENT = np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.9, 0.1]])


def test_ece_and_brier_of_a_run_by_hand_and_nothing_scaled_without_validation():
    values, scaled = calibration.run_calibration((None, LABELS, OVERCONFIDENT), None, positive=1)
    # one bin (0.9): accuracy 3/4 against confidence 0.9
    assert values["ece"] == pytest.approx(0.15)
    # right images: 0.1² + 0.1²; the wrong one: 0.9² + 0.9²
    assert values["brier"] == pytest.approx((3 * 0.02 + 1.62) / 4)
    assert scaled is None
    assert all(np.isnan(values[key]) for key in ("temperature", "ece_scaled", "brier_scaled"))
    assert set(values) == set(calibration.CALIBRATION)


def test_empty_validation_predictions_fit_no_temperature():
    empty = (None, np.array([], int), np.zeros((0, 2)))
    values, scaled = calibration.run_calibration((None, LABELS, OVERCONFIDENT), empty, positive=1)
    assert scaled is None and np.isnan(values["temperature"])


def test_a_temperature_fitted_on_overconfident_validation_softens_the_test_probabilities():
    values, scaled = calibration.run_calibration((None, LABELS, OVERCONFIDENT), (None, LABELS, OVERCONFIDENT),
                                                 positive=1)
    assert values["temperature"] > 1  # over-confident: T above 1 softens
    assert scaled.shape == OVERCONFIDENT.shape and np.allclose(scaled.sum(axis=1), 1)
    assert scaled.max() < 0.9 and (scaled.argmax(axis=1) == OVERCONFIDENT.argmax(axis=1)).all()
    assert values["ece_scaled"] < values["ece"] and values["brier_scaled"] < values["brier"]
    assert values["ece_scaled"] == pytest.approx(st.expected_calibration_error(LABELS, scaled, st.ECE_BINS))


def test_test_intervals_are_the_percentiles_of_the_mean_over_seeds_per_resample():
    counts = np.array([[1, 1, 1, 1], [2, 0, 2, 0], [0, 0, 0, 4]])  # all images; right ones only; the wrong one
    perfect = np.eye(2)[LABELS]
    row = calibration.calibration_test_intervals([(None, LABELS, OVERCONFIDENT), (None, LABELS, perfect)], counts)
    # the perfect seed's ECE and Brier score are 0 on every resample: the mean halves the other's
    ece = np.array([0.15, 0.1, 0.9]) / 2
    brier = np.array([(3 * 0.02 + 1.62) / 4, 0.02, 1.62]) / 2
    assert row["ece_test_low"] == pytest.approx(np.percentile(ece, 2.5))
    assert row["ece_test_high"] == pytest.approx(np.percentile(ece, 97.5))
    assert row["brier_test_low"] == pytest.approx(np.percentile(brier, 2.5))
    assert row["brier_test_high"] == pytest.approx(np.percentile(brier, 97.5))


def test_reliability_pools_the_seeds_and_shows_after_only_when_every_seed_was_rescaled():
    tests = [(None, LABELS, OVERCONFIDENT), (None, LABELS, np.eye(2)[LABELS] * 0.6 + 0.2)]
    bins = calibration.reliability(tests, [None, None])
    filled = [b for b in bins["before"] if b["count"]]
    assert len(bins["before"]) == st.ECE_BINS and bins["after"] is None
    assert [(b["count"], b["accuracy"]) for b in filled] == [(4, 1.0), (4, 0.75)]  # at 0.8, at 0.9
    assert calibration.reliability(tests, [OVERCONFIDENT, None])["after"] is None
    after = calibration.reliability(tests, [OVERCONFIDENT, OVERCONFIDENT])["after"]
    assert sum(b["count"] for b in after) == 8


def _calibrated_study(rng, n_images: int, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Predicted probabilities and labels drawn from them: a calibrated model by construction."""
    probabilities = rng.dirichlet(np.full(n_classes, 0.7), n_images)
    labels = (rng.random(n_images)[:, None] > probabilities.cumsum(axis=1)).sum(axis=1).clip(max=n_classes - 1)
    return probabilities, labels


@pytest.mark.parametrize(("n_images", "n_classes", "seeds"), [(57, 3, 1), (57, 3, 3), (400, 2, 1)])
def test_a_calibrated_model_is_called_miscalibrated_at_most_5_percent_of_the_time(n_images, n_classes, seeds):
    """Under a known null (labels drawn from the predicted probabilities; with three seeds,
    three copies of one calibrated model), 600 simulated test sets: the mean ECE over seeds
    exceeds the reference's 95th percentile in at most 5% of them (within Monte Carlo error),
    while its mean is far above 0, as the finite-sample bias makes it. Measured flag rates:
    4.3% (57 images), 5.5% (57, three seeds), 5.5% (400); mean ECE 0.136, 0.140, 0.042."""
    rng = np.random.default_rng(n_images + seeds)
    studies, flagged, observed = 600, 0, []
    for _ in range(studies):
        probabilities, labels = _calibrated_study(rng, n_images, n_classes)
        ece = st.expected_calibration_error(labels, probabilities)
        reference = calibration.calibrated_ece([probabilities] * seeds, draws=400,
                                               seed=int(rng.integers(2**31)))
        flagged += ece > np.percentile(reference, calibration.CALIBRATED_PERCENTILE)
        observed.append(ece)
    assert flagged / studies <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / studies)
    assert np.mean(observed) > (0.08 if n_images == 57 else 0.03)  # the bias the reference accounts for


def test_an_overconfident_model_is_called_miscalibrated_on_400_images():
    """The labels drawn from softer probabilities than the model states (logits halved): the
    ECE exceeds the calibrated reference in most of 200 simulated test sets (measured 99%)."""
    rng = np.random.default_rng(5)
    flagged = 0
    for _ in range(200):
        logits = rng.normal(0, 3, (400, 2))
        stated = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        true = np.exp(logits / 2) / np.exp(logits / 2).sum(axis=1, keepdims=True)
        labels = (rng.random(400) < true[:, 1]).astype(int)
        reference = calibration.calibrated_ece([stated], draws=400)
        flagged += st.expected_calibration_error(labels, stated) > np.percentile(reference, 95)
    assert flagged / 200 > 0.8


def test_the_calibrated_reference_of_a_configuration_is_in_its_test_intervals_row():
    """Four images at confidence 0.8, each right with probability 0.8 under calibration:
    ECE = |right/4 - 0.8|, 0.05 (3 right, 41%), 0.2 (4 right, 41%), 0.3 (2 right, 15%), ..."""
    stated = np.array([[0.8, 0.2], [0.8, 0.2], [0.2, 0.8], [0.8, 0.2]])
    row = calibration.calibration_test_intervals([(None, LABELS, stated)], np.ones((1, 4)))
    exact = sum(math.comb(4, k) * 0.8**k * 0.2 ** (4 - k) * abs(k / 4 - 0.8) for k in range(5))
    assert row["ece_calibrated"] == pytest.approx(exact, abs=0.01)
    assert row["ece_calibrated_high"] == pytest.approx(0.3)  # P(ECE <= 0.2) = 0.82, P(ECE <= 0.3) = 0.97


def test_the_temperature_scaled_ece_gets_its_own_reference_only_when_every_seed_was_rescaled():
    tests = [(None, LABELS, OVERCONFIDENT), (None, LABELS, OVERCONFIDENT)]
    softer = np.array([[0.7, 0.3], [0.7, 0.3], [0.3, 0.7], [0.7, 0.3]])
    row = calibration.calibration_test_intervals(tests, np.ones((1, 4)), [softer, softer])
    reference = calibration.calibrated_ece([softer, softer])
    assert row["ece_scaled_calibrated"] == pytest.approx(reference.mean())
    assert row["ece_scaled_calibrated_high"] == pytest.approx(np.percentile(reference, 95))
    assert row["ece_scaled_calibrated"] != pytest.approx(row["ece_calibrated"])
    partly = calibration.calibration_test_intervals(tests, np.ones((1, 4)), [softer, None])
    assert np.isnan(partly["ece_scaled_calibrated"]) and not np.isnan(partly["ece_calibrated"])
