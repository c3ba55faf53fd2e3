"""Bootstrap, comparison and calibration statistics against hand-computed values and scikit-learn.

Each test names in a comment the product-code change that would make it fail where that is not
obvious from the assertion.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special
from sklearn import metrics as skm

from scripts import stats as st

T_975_DF2 = 4.302652729911275  # t-table: 97.5th percentile, 2 degrees of freedom


def sklearn_metric(name: str, y_true: np.ndarray, probs: np.ndarray, positive: int | None = None) -> float:
    """Reference values straight from scikit-learn."""
    k = probs.shape[1]
    y_pred, labels = probs.argmax(axis=1), np.arange(k)
    if name == "accuracy":
        return skm.accuracy_score(y_true, y_pred)
    if name == "balanced_accuracy":
        return skm.balanced_accuracy_score(y_true, y_pred)
    if name == "auc":
        if k == 2:
            column = 1 if positive is None else positive
            return skm.roc_auc_score(y_true == column, probs[:, column])
        return skm.roc_auc_score(y_true, probs, multi_class="ovr", average="macro")
    if name == "sensitivity":
        return skm.recall_score(y_true, y_pred, pos_label=positive, average="binary")
    if name == "specificity":
        return skm.recall_score(y_true, y_pred, pos_label=1 - positive, average="binary")
    if name == "specificity_macro":  # one-vs-rest: TN / (TN + FP) from sklearn's per-class matrices
        matrices = skm.multilabel_confusion_matrix(y_true, y_pred, labels=labels)
        return np.nanmean([m[0, 0] / m[0].sum() if m[0].sum() else np.nan for m in matrices])
    score = {"f1_macro": skm.f1_score, "precision_macro": skm.precision_score,
             "recall_macro": skm.recall_score}[name]
    return score(y_true, y_pred, labels=labels, average="macro", zero_division=0)


def tied_predictions(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities in steps of 0.1 (many tied scores), loosely related to the labels."""
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, k, n)
    weights = np.full((n, k), 1.0)
    weights[np.arange(n), y_true] += 1.5
    counts = np.array([rng.multinomial(10, w / w.sum()) for w in weights])
    return y_true, counts / 10


def metrics_for(k: int) -> list[tuple[str, int | None]]:
    if k == 2:
        return [(name, positive) for name in st.METRICS for positive in (0, 1)]
    return [(name, None) for name in st.METRICS if name not in st.TWO_CLASS_METRICS]


# --- t-interval ---------------------------------------------------------------------------------

def test_t_interval_by_hand_ignores_missing_values():
    mean, low, high, n = st.t_interval([1.0, 2.0, None, 3.0, float("nan")])
    half = T_975_DF2 * 1.0 / np.sqrt(3)  # sd of 1, 2, 3 is 1
    assert (mean, n) == (2.0, 3)
    assert low == pytest.approx(2.0 - half) and high == pytest.approx(2.0 + half)


def test_t_interval_needs_two_values():
    mean, low, high, n = st.t_interval([0.7, None])
    assert (mean, n) == (0.7, 1) and np.isnan(low) and np.isnan(high)
    assert st.t_interval([])[3] == 0 and np.isnan(st.t_interval([])[0])



def test_bounded_t_interval_clips_the_ends_to_the_range_and_keeps_the_mean():
    sensitivity = [1.0, 0.9]  # t-interval 0.95 ± 0.635
    mean, low, high, n = st.bounded_t_interval(sensitivity, (0.0, 1.0))
    _, t_low, t_high, _ = st.t_interval(sensitivity)
    assert t_high > 1 and (mean, n) == (0.95, 2)
    assert (low, high) == (pytest.approx(t_low), 1.0)
    assert st.bounded_t_interval([0.0, 0.05], (0.0, 1.0))[1] == 0.0  # an ECE interval does not go below 0
    assert st.bounded_t_interval([1.9, 2.0], (0.0, 2.0))[2] == 2.0  # Brier's range is [0, 2]
    _, low, high, _ = st.bounded_t_interval([0.7], (0.0, 1.0))
    assert np.isnan(low) and np.isnan(high)  # undefined stays undefined
# --- stratified bootstrap -----------------------------------------------------------------------

def test_stratified_bootstrap_keeps_each_column_in_its_class():
    labels = np.array(["b", "a", "b", "c", "a", "b", "b", "c"] * 5)
    indices = st.stratified_bootstrap(labels, 300, seed=3)
    assert indices.shape == (300, 40)
    assert (labels[indices] == labels).all()  # fails if resampling ignored the classes


def test_stratified_bootstrap_is_seeded_and_draws_with_replacement():
    labels = np.repeat([0, 1], [30, 70])
    first = st.stratified_bootstrap(labels, 2000, seed=11)
    assert (first == st.stratified_bootstrap(labels, 2000, seed=11)).all()
    assert (first != st.stratified_bootstrap(labels, 2000, seed=12)).any()
    assert all(len(np.unique(row)) < 100 for row in first[:20])  # repeats: with replacement
    # Every image is drawn once per resample on average (fails if some members were favoured).
    per_image = np.bincount(first.ravel(), minlength=100) / 2000
    assert per_image == pytest.approx(np.ones(100), abs=0.1)


# --- vectorised metrics -------------------------------------------------------------------------

@pytest.mark.parametrize("k", [2, 3, 4])
def test_identity_resample_equals_scikit_learn(k):
    y_true, probs = tied_predictions(300, k, seed=k)
    identity = np.arange(len(y_true))[None, :]
    for name, positive in metrics_for(k):
        value = st.bootstrap_metric(name, y_true, probs, identity, positive)
        assert value.shape == (1,)
        assert value[0] == pytest.approx(sklearn_metric(name, y_true, probs, positive), rel=1e-12), name


@pytest.mark.parametrize("k", [2, 3])
def test_every_resample_equals_scikit_learn_on_that_resample(k):
    # Resampled rows repeat images, so AUC sees many ties; any error in the counting shows here.
    y_true, probs = tied_predictions(120, k, seed=10 + k)
    indices = st.stratified_bootstrap(y_true, 25, seed=5)
    for name, positive in metrics_for(k):
        values = st.bootstrap_metric(name, y_true, probs, indices, positive)
        expected = [sklearn_metric(name, y_true[row], probs[row], positive) for row in indices]
        assert values == pytest.approx(expected, rel=1e-12), name


def test_unstratified_rows_follow_scikit_learn_conventions_for_absent_classes():
    # Row 0 has no class-2 image: recall_macro counts its recall as 0, balanced accuracy skips it,
    # AUC is undefined.
    y_true, probs = tied_predictions(60, 3, seed=7)
    row = np.flatnonzero(y_true != 2)[:20]
    recall = st.bootstrap_metric("recall_macro", y_true, probs, row[None])[0]
    balanced = st.bootstrap_metric("balanced_accuracy", y_true, probs, row[None])[0]
    expected = skm.recall_score(y_true[row], probs[row].argmax(1), labels=[0, 1, 2], average="macro",
                                zero_division=0)
    assert recall == pytest.approx(expected)
    assert balanced == pytest.approx(skm.balanced_accuracy_score(y_true[row], probs[row].argmax(1)))
    assert np.isnan(st.bootstrap_metric("auc", y_true, probs, row[None])[0])


def test_two_class_metrics_need_a_positive_class_and_known_names():
    y_true, probs = tied_predictions(20, 2, seed=1)
    identity = np.arange(20)[None]
    with pytest.raises(ValueError, match="positive"):
        st.bootstrap_metric("sensitivity", y_true, probs, identity)
    with pytest.raises(ValueError, match="unknown metric 'kappa'"):
        st.bootstrap_metric("kappa", y_true, probs, identity)
    three_y, three_p = tied_predictions(20, 3, seed=1)
    with pytest.raises(ValueError, match="two classes"):
        st.bootstrap_metric("specificity", three_y, three_p, identity, positive=1)


# --- per-configuration and paired bootstrap -----------------------------------------------------

def test_config_estimate_is_the_mean_over_seeds_on_the_full_test_set():
    y_true = np.array([0, 0, 1, 1])
    seed_a = np.array([[.9, .1], [.8, .2], [.4, .6], [.6, .4]])  # 3 of 4 right
    seed_b = np.array([[.9, .1], [.2, .8], [.4, .6], [.6, .4]])  # 2 of 4 right
    result = st.config_bootstrap(y_true, [seed_a, seed_b], "accuracy", 200, seed=0)
    assert result["estimate"] == pytest.approx((3 / 4 + 2 / 4) / 2)
    assert set(result) == {"estimate", "low", "high"}


def test_config_interval_is_zero_width_when_every_model_is_always_right():
    y_true = np.array([0, 1, 1, 2, 2, 2])
    perfect = np.eye(3)[y_true] * 0.8 + 0.2 / 3
    result = st.config_bootstrap(y_true, [perfect, perfect], "f1_macro", 100, seed=0)
    assert result == {"estimate": 1.0, "low": 1.0, "high": 1.0}


@pytest.mark.parametrize("metric", ["accuracy", "f1_macro", "auc"])
def test_config_interval_equals_a_resample_by_resample_reference(metric):
    y_true, first = tied_predictions(90, 3, seed=21)
    _, second = tied_predictions(90, 3, seed=22)
    seeds = [first, second]  # second: a model unrelated to these labels
    result = st.config_bootstrap(y_true, seeds, metric, 60, seed=4)
    rows = st.stratified_bootstrap(y_true, 60, seed=4)
    means = [np.mean([sklearn_metric(metric, y_true[r], p[r]) for p in seeds]) for r in rows]
    assert result["low"] == pytest.approx(np.percentile(means, 2.5), rel=1e-12)
    assert result["high"] == pytest.approx(np.percentile(means, 97.5), rel=1e-12)
    assert result["estimate"] == pytest.approx(np.mean([sklearn_metric(metric, y_true, p) for p in seeds]))


def test_paired_bootstrap_equals_a_resample_by_resample_reference():
    y_true, probs_a = tied_predictions(80, 2, seed=31)
    _, probs_b = tied_predictions(80, 2, seed=32)
    result = st.paired_bootstrap(y_true, [probs_a], [probs_b, probs_a], "sensitivity", 80, seed=9,
                                 positive=1)
    rows = st.stratified_bootstrap(y_true, 80, seed=9)

    def sens(r: np.ndarray, p: np.ndarray) -> float:
        return sklearn_metric("sensitivity", y_true[r], p[r], positive=1)

    diffs = np.array([sens(r, probs_a) - (sens(r, probs_b) + sens(r, probs_a)) / 2 for r in rows])
    everything = np.arange(80)
    assert result["difference"] == pytest.approx(
        sens(everything, probs_a) - (sens(everything, probs_b) + sens(everything, probs_a)) / 2)
    assert result["low"] == pytest.approx(np.percentile(diffs, 2.5), abs=1e-12)
    assert result["high"] == pytest.approx(np.percentile(diffs, 97.5), abs=1e-12)
    share = 2 * min(np.mean(diffs <= 0), np.mean(diffs >= 0))
    assert result["p_value"] == pytest.approx(min(max(share, 1 / 80), 1.0))


def test_paired_bootstrap_of_a_configuration_with_itself_finds_no_difference():
    y_true, probs = tied_predictions(50, 3, seed=41)
    result = st.paired_bootstrap(y_true, [probs], [probs], "auc", 100, seed=1)
    assert result == {"difference": 0.0, "low": 0.0, "high": 0.0, "p_value": 1.0}


def test_paired_bootstrap_p_value_is_one_over_b_for_a_model_that_always_wins():
    y_true = np.repeat([0, 1], 20)
    right = np.eye(2)[y_true] * 0.6 + 0.2
    wrong = np.eye(2)[1 - y_true] * 0.6 + 0.2
    result = st.paired_bootstrap(y_true, [right], [wrong], "accuracy", 250, seed=2)
    assert result["difference"] == 1.0 and result["p_value"] == pytest.approx(1 / 250)


def test_bootstrap_p_value_by_hand():
    assert st.bootstrap_p_value([1.0, 2.0, 3.0, -1.0]) == pytest.approx(0.5)  # 2 * min(1/4, 3/4)
    assert st.bootstrap_p_value([-1.0, 0.0, 1.0, 2.0]) == 1.0  # 2 * min(2/4, 3/4) = 1
    assert st.bootstrap_p_value([0.1, 0.2, 0.3, 0.4]) == pytest.approx(1 / 4)  # 0, bounded to 1/B
    assert np.isnan(st.bootstrap_p_value([0.1, float("nan")]))


def test_holm_by_hand():
    # sorted: .005*4=.02, .01*3=.03, .03*2=.06, .04*1=.04 -> monotone .02 .03 .06 .06
    adjusted = st.holm([0.01, None, 0.04, 0.03, 0.005])
    assert adjusted[[0, 2, 3, 4]] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert np.isnan(adjusted[1])
    assert st.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # .5*2 = 1, then max(1, .6), cap 1
    assert st.holm([0.02, 0.9, float("nan")])[:2] == pytest.approx([0.04, 0.9])  # m = 2


# --- calibration --------------------------------------------------------------------------------

FOUR_Y = np.array([0, 1, 1, 1])
FOUR_P = np.array([[.9, .1], [.85, .15], [.3, .7], [.45, .55]])
# top-label confidence and correctness: .9 right, .85 wrong, .7 right, .55 right


def test_expected_calibration_error_by_hand():
    # 5 bins: (.8,1] holds .9 and .85 -> confidence .875, accuracy .5, weight 2/4
    #         (.6,.8] holds .7 -> gap .3, weight 1/4; (.4,.6] holds .55 -> gap .45, weight 1/4
    expected = 2 / 4 * 0.375 + 1 / 4 * 0.3 + 1 / 4 * 0.45
    assert st.expected_calibration_error(FOUR_Y, FOUR_P, n_bins=5) == pytest.approx(expected)
    # 1 bin: |mean accuracy - mean confidence| = |3/4 - 3/4| = 0
    assert st.expected_calibration_error(FOUR_Y, FOUR_P, n_bins=1) == pytest.approx(0.0)


def test_reliability_bins_by_hand():
    bins = st.reliability_bins(FOUR_Y, FOUR_P, n_bins=5)
    assert [b["count"] for b in bins] == [0, 0, 1, 1, 2]
    assert bins[0] == {"low": 0.0, "high": 0.2, "count": 0, "confidence": None, "accuracy": None}
    assert bins[4]["low"] == pytest.approx(0.8) and bins[4]["high"] == 1.0
    assert bins[4]["confidence"] == pytest.approx(0.875) and bins[4]["accuracy"] == 0.5
    assert bins[2]["confidence"] == pytest.approx(0.55) and bins[2]["accuracy"] == 1.0


def test_a_confidence_on_a_bin_edge_belongs_to_the_lower_bin():
    # bins (0, .5] and (.5, 1]: confidence exactly .5 counts in the first
    bins = st.reliability_bins(np.array([0, 1]), np.array([[.5, .5], [1.0, 0.0]]), n_bins=2)
    assert [b["count"] for b in bins] == [1, 1]
    assert bins[0]["confidence"] == 0.5 and bins[0]["accuracy"] == 1.0  # argmax of a tie is class 0
    assert bins[1]["confidence"] == 1.0 and bins[1]["accuracy"] == 0.0


def test_brier_score_by_hand():
    # per image: .1²+.1² = .02; .85²+.85² = 1.445; .3²+.3² = .18; .45²+.45² = .405
    assert st.brier_score(FOUR_Y, FOUR_P) == pytest.approx((0.02 + 1.445 + 0.18 + 0.405) / 4)
    binary = np.mean((FOUR_P[:, 1] - FOUR_Y) ** 2)
    assert st.brier_score(FOUR_Y, FOUR_P) == pytest.approx(2 * binary)
    # three classes, label 1: (.5-0)² + (.3-1)² + (.2-0)² = .25 + .49 + .04
    assert st.brier_score(np.array([1]), np.array([[.5, .3, .2]])) == pytest.approx(0.78)


def test_fit_temperature_matches_the_closed_form_optimum():
    # Every image has logits (4, 0); 3 of 4 are class 0. NLL is minimal where
    # sigmoid(4 / T) = 3/4, i.e. T = 4 / ln 3.
    logits = np.tile([4.0, 0.0], (4, 1))
    assert st.fit_temperature(logits, np.array([0, 0, 0, 1])) == pytest.approx(4 / np.log(3), rel=1e-5)


def over_confident_model(scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z); the model reports z * scale."""
    rng = np.random.default_rng(0)
    z = rng.normal(0, 1.5, size=(4000, 3))
    u = rng.random(4000)[:, None]
    y_true = (u > np.cumsum(special.softmax(z, axis=1), axis=1)).sum(axis=1)
    return z * scale, y_true


def test_fit_temperature_softens_an_over_confident_model():
    logits, y_true = over_confident_model(scale=3.0)
    temperature = st.fit_temperature(logits, y_true)
    assert temperature == pytest.approx(3.0, rel=0.1)  # the true over-confidence factor
    before = st.negative_log_likelihood(logits, y_true)
    after = st.negative_log_likelihood(logits, y_true, temperature)
    assert after < before - 0.1
    # log-probabilities give the same temperature as logits
    log_probs = special.log_softmax(logits, axis=1)
    assert st.fit_temperature(log_probs, y_true) == pytest.approx(temperature, rel=1e-4)


def test_fit_temperature_sharpens_an_under_confident_model():
    logits, y_true = over_confident_model(scale=0.5)
    assert st.fit_temperature(logits, y_true) == pytest.approx(0.5, rel=0.1)


def test_fit_temperature_rejects_a_label_with_zero_probability():
    with pytest.raises(ValueError, match="-inf"):
        st.fit_temperature(np.array([[0.0, -np.inf]]), np.array([1]))


def test_apply_temperature_by_hand():
    # T = 2: sqrt(.8) : sqrt(.2) = 2 : 1
    assert st.apply_temperature(np.array([[.8, .2]]), 2.0) == pytest.approx(np.array([[2 / 3, 1 / 3]]))
    assert st.apply_temperature(np.array([[.8, .2, 0.0]]), 0.5)[0] == pytest.approx([16 / 17, 1 / 17, 0])
    logits = np.array([[2.0, -1.0, 0.5], [0.0, 0.3, 3.0]])
    assert st.apply_temperature(special.softmax(logits, axis=1), 1.7) == pytest.approx(
        special.softmax(logits / 1.7, axis=1))
    with pytest.raises(ValueError, match="positive"):
        st.apply_temperature(np.array([[.5, .5]]), 0.0)
