"""Can a run's probabilities be trusted? Calibration of its test predictions.

Per run: the top-label expected calibration error in :data:`scripts.stats.stats.ECE_BINS`
equal-width bins, the multi-class Brier score, the calibration slope and intercept, and, when
the run's validation predictions are given, the temperature fitted on them (negative
log-likelihood) with the test ECE and Brier score after it. Per configuration: reliability
bins of its seeds' pooled test predictions, and the ECE and Brier score (mean over seeds) on
every test-image resample, and what a calibrated model's ECE would be on the same test images
(:func:`calibrated_ece`): ECE is biased upward on a finite test set (a calibrated model scores
about 0.12 on 57 images, 0.05 on 400), so a configuration is called miscalibrated only where its
ECE exceeds the 95th percentile of that reference. The formulas are in :mod:`scripts.stats.stats`.
"""

from __future__ import annotations

import numpy as np

from scripts.stats import stats as st

# Label sets drawn for the calibrated reference, from a fixed seed so that the report repeats.
CALIBRATED_DRAWS, CALIBRATED_SEED = 2000, 0
# A configuration's ECE above this percentile of the calibrated reference is called miscalibrated.
CALIBRATED_PERCENTILE = 95
CALIBRATION = ["ece", "brier", "calibration_slope", "calibration_intercept", "temperature", "ece_scaled",
               "brier_scaled"]


def run_calibration(test: tuple, validation: tuple | None, positive: int | None) -> tuple[dict, np.ndarray | None]:
    """ECE, Brier score, calibration slope and intercept (``positive``: the two-class
    outcome's class, :func:`scripts.stats.stats.calibration_slope_intercept`) of a run's test
    predictions ``(paths, labels, probabilities)``; with ``validation`` predictions also
    the temperature fitted on them (NLL) and the test ECE and Brier score after it.
    Returns the :data:`CALIBRATION` values and the rescaled test probabilities (None
    without validation predictions)."""
    _, labels, probabilities = test
    slope, intercept = st.calibration_slope_intercept(labels, probabilities, positive)
    values = {"ece": st.expected_calibration_error(labels, probabilities),
              "brier": st.brier_score(labels, probabilities),
              "calibration_slope": slope, "calibration_intercept": intercept,
              "temperature": np.nan, "ece_scaled": np.nan, "brier_scaled": np.nan}
    if validation is None or len(validation[1]) == 0:
        return values, None
    _, val_labels, val_probabilities = validation
    # log p as logits (softmax(log p / T) = softmax(z / T)); floored as apply_temperature floors them
    temperature = st.fit_temperature(st.floored_log(val_probabilities), val_labels)
    scaled = st.apply_temperature(probabilities, temperature)
    values.update(temperature=temperature, ece_scaled=st.expected_calibration_error(labels, scaled),
                  brier_scaled=st.brier_score(labels, scaled))
    return values, scaled


def calibration_test_intervals(tests: list[tuple], counts: np.ndarray,
                               scaled: list[np.ndarray | None] | None = None) -> dict:
    """95% percentile intervals over the test-image resamples ``counts`` (the rows of the
    dataset's shared bootstrap) of a configuration's ECE and Brier score, each the mean over
    its seeds' test predictions ``tests``: columns ``ece_test_low`` ... ``brier_test_high``.
    They cover test-sample variation given the trained models, as the metrics' test intervals do.
    Also ``ece_calibrated`` and ``ece_calibrated_high``: the mean and the
    :data:`CALIBRATED_PERCENTILE` percentile of :func:`calibrated_ece`, and the same of the
    temperature-scaled probabilities ``scaled`` (``ece_scaled_calibrated...``; NaN unless
    every seed was rescaled)."""
    row = {}
    for name, resampled in (("ece", lambda y, p: st.resampled_ece(y, p, counts)),
                            ("brier", lambda y, p: st.resampled_brier(y, p, counts))):
        values = np.mean([resampled(labels, probabilities) for _, labels, probabilities in tests], axis=0)
        low, high = np.percentile(values, [2.5, 97.5])
        row.update({f"{name}_test_low": float(low), f"{name}_test_high": float(high)})
    references = {"ece": [probabilities for _, _, probabilities in tests], "ece_scaled": scaled}
    for name, probabilities in references.items():
        if probabilities and all(p is not None for p in probabilities):
            reference = calibrated_ece(probabilities)
            mean, high = float(reference.mean()), float(np.percentile(reference, CALIBRATED_PERCENTILE))
        else:
            mean = high = np.nan
        row.update({f"{name}_calibrated": mean, f"{name}_calibrated_high": high})
    return row


def calibrated_ece(probabilities_per_seed: list[np.ndarray], draws: int = CALIBRATED_DRAWS,
                   seed: int = CALIBRATED_SEED) -> np.ndarray:
    """The mean over seeds of the top-label ECE that calibrated models with these predicted
    probabilities would score on these test images: ``draws`` values, each from labels drawn
    as the probabilities say. The top-label ECE needs only whether the most probable class is
    right, which for a calibrated model happens with probability its confidence: per draw and
    image one uniform u, and a seed is right where u < its confidence (one u for all seeds, as
    their errors share the test images; the most cautious coupling, which spreads the mean
    over seeds the most). The confidence bins are the images' own, as in
    :func:`scripts.stats.stats.expected_calibration_error`."""
    rng = np.random.default_rng(seed)
    uniform = rng.random((draws, len(probabilities_per_seed[0])))
    total = np.zeros(draws)
    for probabilities in probabilities_per_seed:
        probabilities = np.asarray(probabilities, dtype=float)
        labels = probabilities.argmax(axis=1)  # any labels: only the confidence and bins are used
        _, confidence, _, bin_of = st._confidence_bins(labels, probabilities, st.ECE_BINS)
        order = np.argsort(bin_of, kind="stable")  # the images bin by bin, to sum each bin's run
        starts = np.flatnonzero(np.r_[True, np.diff(bin_of[order]) != 0])
        gap = np.add.reduceat((uniform[:, order] < confidence[order]) - confidence[order], starts, axis=1)
        total += np.abs(gap).sum(axis=1) / len(confidence)
    return total / len(probabilities_per_seed)


def reliability(tests: list[tuple], scaled: list[np.ndarray | None]) -> dict:
    """Reliability bins of a configuration, its seeds' test predictions pooled; before and
    (when the probabilities were rescaled) after temperature scaling."""
    labels = np.concatenate([test[1] for test in tests])
    before = st.reliability_bins(labels, np.concatenate([test[2] for test in tests]))
    after = (st.reliability_bins(labels, np.concatenate(scaled))
             if scaled and all(s is not None for s in scaled) else None)
    return {"before": before, "after": after}
