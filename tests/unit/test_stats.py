"""Bootstrap, comparison and calibration statistics against hand-computed values and scikit-learn.

Each test names in a comment the product-code change that would make it fail where that is not
obvious from the assertion.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize, special, stats
from sklearn import metrics as skm

from scripts.stats import stats as st

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


# --- resampling: test images or groups, and seeds -----------------------------------------------

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

def test_resampling_keeps_each_class_count():
    labels = np.array(["b", "a", "b", "c", "a", "b", "b", "c"] * 5)
    counts = st.resample_counts(labels, 300, seed=3)
    assert counts.shape == (300, 40) and (counts.sum(axis=1) == 40).all()
    for label in "abc":  # fails if resampling ignored the classes
        assert (counts[:, labels == label].sum(axis=1) == (labels == label).sum()).all()


def test_resampling_is_seeded_and_draws_with_replacement():
    labels = np.repeat([0, 1], [30, 70])
    first = st.resample_counts(labels, 2000, seed=11)
    assert (first == st.resample_counts(labels, 2000, seed=11)).all()
    assert (first != st.resample_counts(labels, 2000, seed=12)).any()
    assert (first[:20] > 1).any(axis=1).all()  # repeats: with replacement
    # Every image is drawn once per resample on average (fails if some members were favoured).
    assert first.mean(axis=0) == pytest.approx(np.ones(100), abs=0.1)


def test_groups_are_drawn_whole_within_strata_of_their_classes():
    # Patients p0..p5 of class 0 with 1-3 images, p6..p8 of class 1, p9 with an image of each class.
    groups = np.array(["p0", "p0", "p1", "p2", "p2", "p2", "p3", "p4", "p5",
                       "p6", "p6", "p7", "p8", "p8", "p9", "p9"])
    labels = np.array([0] * 9 + [1] * 5 + [0, 1])
    counts = st.resample_counts(labels, 500, seed=2, groups=groups)
    for patient in np.unique(groups):  # every image of a patient is drawn as often as the others
        members = counts[:, groups == patient]
        assert (members == members[:, :1]).all(), patient
    per_group = {g: counts[:, np.flatnonzero(groups == g)[0]] for g in np.unique(groups)}
    strata = {"class 0": [f"p{i}" for i in range(6)], "class 1": ["p6", "p7", "p8"], "both": ["p9"]}
    for members in strata.values():  # each stratum keeps its number of patients
        assert (sum(per_group[g] for g in members) == len(members)).all()
    assert (per_group["p9"] == 1).all()
    assert len({tuple(c) for c in counts}) > 100 and counts.sum(axis=1).std() > 0  # sizes vary
    with pytest.raises(ValueError, match="one id per test image"):
        st.resample_counts(labels, 10, seed=0, groups=groups[:-1])


def test_clustered_errors_widen_the_interval_only_when_groups_are_declared():
    # 20 patients x 10 images; the model is wrong on every image of 6 patients. Drawing images
    # treats 200 images as independent; drawing patients sees 20.
    groups = np.repeat(np.arange(20), 10)
    labels = np.repeat([0, 1], 100)
    wrong = np.isin(groups, [0, 1, 2, 10, 11, 12])
    probs = np.eye(2)[np.where(wrong, 1 - labels, labels)] * 0.8 + 0.1
    by_image = st.config_bootstrap(labels, [probs], "accuracy", 2000, seed=5)
    by_patient = st.config_bootstrap(labels, [probs], "accuracy", 2000, seed=5, groups=groups)
    assert by_image["estimate"] == by_patient["estimate"] == pytest.approx(0.7)
    # binomial sd of a share: images sqrt(.21/200) = .032, patients sqrt(.21/20) = .10
    assert by_image["high"] - by_image["low"] == pytest.approx(4 * 0.032, rel=0.2)
    assert by_patient["high"] - by_patient["low"] == pytest.approx(4 * 0.10, rel=0.2)


def test_seeds_and_images_by_hand():
    per_seed = np.array([[0.10, 0.30, 0.20, 0.40], [0.20, 0.20, 0.30, 0.50], [0.00, 0.40, 0.10, 0.30]])
    estimates = np.array([0.25, 0.30, 0.20])
    result = st.seeds_and_images(per_seed, estimates)
    seeds, images = np.var(estimates, ddof=1) / 3, np.var(per_seed.mean(axis=0), ddof=1)
    own = per_seed.var(axis=1, ddof=1).mean()  # each seed's image variance: shared + interaction
    shared = np.clip((3 * images - own) / 2, 0, images)  # what the seeds share; s² holds the rest
    assert shared > 0 and result["image_shared_variance"] == pytest.approx(shared)
    se, df = np.sqrt(seeds + shared), 2  # a t over 3 seeds
    assert (result["estimate"], result["se"], result["df"]) == pytest.approx((0.25, se, df))
    assert result["p_value"] == pytest.approx(2 * stats.t.sf(0.25 / se, df))
    half = stats.t.ppf(0.975, df) * se
    assert (result["low"], result["high"]) == pytest.approx((0.25 - half, 0.25 + half))
    assert result["seed_variance"] == pytest.approx(np.var(estimates, ddof=1)) and result["n_seeds"] == 3
    assert result["image_variance"] == pytest.approx(images)


def test_seed_differences_of_two_three_and_five_points_on_a_large_test_set_are_no_claim():
    """The paired t over seeds: with no image variation (a large test set) it is the t-test of
    the three per-seed differences, p = 0.063 and [-0.005, 0.071]; drawing the seeds with
    replacement gave p = 0.002 and [0.02, 0.05]."""
    differences = np.array([0.02, 0.03, 0.05])
    result = st.seeds_and_images(np.repeat(differences[:, None], 200, axis=1), differences)
    expected = stats.ttest_1samp(differences, 0.0)
    assert result["p_value"] == pytest.approx(expected.pvalue) and result["p_value"] == pytest.approx(0.063, abs=5e-4)
    assert (result["low"], result["high"]) == pytest.approx(tuple(expected.confidence_interval()))
    assert result["low"] == pytest.approx(-0.005, abs=5e-4) and result["high"] == pytest.approx(0.071, abs=5e-4)
    assert result["df"] == 2


def test_one_seed_leaves_the_seed_part_out_and_no_variance_gives_p_zero_or_one():
    result = st.seeds_and_images(np.array([[0.1, 0.2, 0.3]]), np.array([0.2]))
    assert np.isnan(result["seed_variance"]) and np.isinf(result["df"])
    assert result["se"] == pytest.approx(0.1)
    assert st.seeds_and_images(np.zeros((3, 5)), np.zeros(3))["p_value"] == 1.0
    fixed = st.seeds_and_images(np.full((3, 5), 0.1), np.full(3, 0.1))
    assert (fixed["p_value"], fixed["low"], fixed["high"]) == pytest.approx((0.0, 0.1, 0.1))


def power_of(difference: float, seed_sd: float, image_sd: float, n_seeds: int, alpha: float, studies: int,
             seed: int) -> float:
    """Share of simulated studies in which :func:`st.seeds_and_images` rejects at ``alpha``:
    seeds vary by ``seed_sd``, the test set shifts every seed alike by ``image_sd`` (its
    resamples by as much again)."""
    rng = np.random.default_rng(seed)
    rejected = 0
    for _ in range(studies):
        seed_values = difference + rng.normal(0.0, seed_sd, n_seeds)
        test_set, resamples = rng.normal(0.0, image_sd), rng.normal(0.0, image_sd, 400)
        result = st.seeds_and_images(seed_values[:, None] + resamples[None, :], seed_values + test_set)
        rejected += result["p_value"] < alpha
    return rejected / studies


@pytest.mark.parametrize("seed_sd, image_sd, n_seeds, alpha", [
    (0.03, 0.0, 3, 0.05),  # seeds alone: the noncentral t is exact
    (0.03, 0.01, 5, 0.05 / 3),  # both, at a Holm threshold: the statistic's Satterthwaite approximation
])
def test_the_detectable_difference_is_detected_four_times_in_five(seed_sd, image_sd, n_seeds, alpha):
    smallest = st.detectable_difference(seed_sd ** 2, image_sd ** 2, n_seeds, alpha)
    power = power_of(smallest, seed_sd, image_sd, n_seeds, alpha, studies=3000, seed=n_seeds)
    assert power == pytest.approx(st.POWER, abs=0.025)  # 2.5 Monte Carlo standard errors (0.0073)
    assert power_of(smallest / 2, seed_sd, image_sd, n_seeds, alpha, studies=1000, seed=1) < 0.5


def test_seeds_to_detect_is_the_fewest_seeds_whose_detectable_difference_is_small_enough():
    seed_variance, shared = 0.03 ** 2, 0.005 ** 2

    def detectable(n_seeds: int) -> float:
        return st.detectable_difference(seed_variance, shared, n_seeds, 0.05)

    needed = int(st.seeds_to_detect(0.02, seed_variance, shared, 0.05))
    assert detectable(needed) <= 0.02 < detectable(needed - 1)
    # the shared image part alone (0.01 standard error) keeps 0.02 out of reach at any number of
    # seeds: 80% power needs (1.96 + 0.84) standard errors
    assert st.seeds_to_detect(0.02, seed_variance, 0.01 ** 2, 0.05) == np.inf
    assert np.isnan(st.seeds_to_detect(0.02, np.nan, shared, 0.05))
    assert np.isnan(st.detectable_difference(np.nan, shared, 1, 0.05))


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
    indices = np.random.default_rng(5).integers(0, len(y_true), size=(25, len(y_true)))
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

def rows_of(counts_row: np.ndarray) -> np.ndarray:
    """The image indices a count row draws (each repeated as often as it is drawn)."""
    return np.repeat(np.arange(len(counts_row)), counts_row)


def test_config_estimate_is_the_mean_over_seeds_on_the_full_test_set():
    y_true = np.array([0, 0, 1, 1])
    seed_a = np.array([[.9, .1], [.8, .2], [.4, .6], [.6, .4]])  # 3 of 4 right
    seed_b = np.array([[.9, .1], [.2, .8], [.4, .6], [.6, .4]])  # 2 of 4 right
    result = st.config_bootstrap(y_true, [seed_a, seed_b], "accuracy", 200, seed=0)
    assert result["estimate"] == pytest.approx((3 / 4 + 2 / 4) / 2)
    assert set(result) == {"estimate", "low", "high", "images_low", "images_high"}


def test_config_interval_is_zero_width_when_every_model_is_always_right():
    y_true = np.array([0, 1, 1, 2, 2, 2])
    perfect = np.eye(3)[y_true] * 0.8 + 0.2 / 3
    result = st.config_bootstrap(y_true, [perfect, perfect], "f1_macro", 100, seed=0)
    assert result == {"estimate": 1.0, "low": 1.0, "high": 1.0, "images_low": 1.0, "images_high": 1.0}


@pytest.mark.parametrize("metric", ["accuracy", "f1_macro", "auc"])
def test_config_intervals_equal_a_resample_by_resample_reference(metric):
    y_true, first = tied_predictions(90, 3, seed=21)
    _, second = tied_predictions(90, 3, seed=22)
    seeds = [first, second]  # second: a model unrelated to these labels
    result = st.config_bootstrap(y_true, seeds, metric, 60, seed=4)
    rows = [rows_of(c) for c in st.resample_counts(y_true, 60, seed=4)]
    per_seed = np.array([[sklearn_metric(metric, y_true[r], p[r]) for r in rows] for p in seeds])
    estimates = np.array([sklearn_metric(metric, y_true, p) for p in seeds])
    images = per_seed.mean(axis=0)
    own = per_seed.var(axis=1, ddof=1).mean()
    shared = np.clip(2 * np.var(images, ddof=1) - own, 0, np.var(images, ddof=1))  # (S v - w) / (S - 1)
    se = np.sqrt(np.var(estimates, ddof=1) / 2 + shared)
    half = stats.t.ppf(0.975, 1) * se  # a t over 2 seeds
    assert (result["low"], result["high"]) == pytest.approx((estimates.mean() - half, estimates.mean() + half))
    assert (result["images_low"], result["images_high"]) == pytest.approx(
        tuple(np.percentile(images, [2.5, 97.5])), rel=1e-12)
    assert result["estimate"] == pytest.approx(np.mean([sklearn_metric(metric, y_true, p) for p in seeds]))


def test_the_interval_over_seeds_and_images_covers_seed_variation():
    # Two seeds that disagree (all right, all wrong): the images alone see no variation at all.
    y_true = np.repeat([0, 1], 30)
    right, wrong = np.eye(2)[y_true] * 0.8 + 0.1, np.eye(2)[1 - y_true] * 0.8 + 0.1
    result = st.config_bootstrap(y_true, [right, wrong], "accuracy", 400, seed=3)
    assert result["images_low"] == result["images_high"] == 0.5
    # the seeds' variance: s = 0.71 over 2 seeds, a t with 1 degree of freedom
    half = stats.t.ppf(0.975, 1) * np.sqrt(0.5 / 2)
    assert (result["low"], result["high"]) == pytest.approx((0.5 - half, 0.5 + half))


def test_paired_bootstrap_equals_a_resample_by_resample_reference():
    y_true, probs_a = tied_predictions(80, 2, seed=31)
    _, probs_b = tied_predictions(80, 2, seed=32)
    _, probs_c = tied_predictions(80, 2, seed=33)
    result = st.paired_bootstrap(y_true, [probs_a, probs_c], [probs_b, probs_a], "sensitivity", 80, seed=9,
                                 positive=1)
    rows = [rows_of(c) for c in st.resample_counts(y_true, 80, seed=9)]

    def sens(r: np.ndarray, p: np.ndarray) -> float:
        return sklearn_metric("sensitivity", y_true[r], p[r], positive=1)

    pairs = ((probs_a, probs_b), (probs_c, probs_a))
    per_pair = np.array([[sens(r, a) - sens(r, b) for r in rows] for a, b in pairs])
    everything = np.arange(80)
    differences = np.array([sens(everything, a) - sens(everything, b) for a, b in pairs])
    assert result["difference"] == pytest.approx(differences.mean())
    expected = st.seeds_and_images(per_pair, differences)
    assert (result["low"], result["high"], result["p_value"]) == pytest.approx(
        (expected["low"], expected["high"], expected["p_value"]))
    with pytest.raises(ValueError, match="paired by position"):
        st.paired_bootstrap(y_true, [probs_a], [probs_b, probs_a], "accuracy", 10, seed=0)


def test_paired_bootstrap_of_a_configuration_with_itself_finds_no_difference():
    y_true, probs = tied_predictions(50, 3, seed=41)
    result = st.paired_bootstrap(y_true, [probs], [probs], "auc", 100, seed=1)
    assert result == {"difference": 0.0, "low": 0.0, "high": 0.0, "p_value": 1.0}


def test_paired_bootstrap_of_a_model_that_always_wins_has_p_zero():
    y_true = np.repeat([0, 1], 20)
    right = np.eye(2)[y_true] * 0.6 + 0.2
    wrong = np.eye(2)[1 - y_true] * 0.6 + 0.2
    result = st.paired_bootstrap(y_true, [right, right], [wrong, wrong], "accuracy", 250, seed=2)
    assert result == {"difference": 1.0, "low": 1.0, "high": 1.0, "p_value": 0.0}


def seeds_at_accuracies(accuracies: tuple[float, ...], n: int = 624, seed: int = 0) -> list[np.ndarray]:
    """Binary test probabilities of one seed per accuracy, each wrong on its own random images."""
    y_true = np.repeat([0, 1], [234, 390])
    rng = np.random.default_rng(seed)
    seeds = []
    for accuracy in accuracies:
        wrong = np.zeros(n, dtype=bool)
        wrong[rng.choice(n, round((1 - accuracy) * n), replace=False)] = True
        seeds.append(np.eye(2)[np.where(wrong, 1 - y_true, y_true)] * 0.8 + 0.1)
    return seeds


def test_two_seeds_of_which_one_loses_are_not_significant_once_seeds_count():
    """624 test images, 2 seeds: the configuration scores 0.96 and 0.84, the baseline 0.85 and
    0.85. One seed loses; the test images alone (seeds held fixed) give p near 0.001."""
    y_true = np.repeat([0, 1], [234, 390])
    config, baseline = seeds_at_accuracies((0.96, 0.84), seed=1), seeds_at_accuracies((0.85, 0.85), seed=2)
    result = st.paired_bootstrap(y_true, config, baseline, "accuracy", 1000, seed=0)
    assert result["difference"] == pytest.approx(0.05, abs=0.002)
    assert result["p_value"] > 0.2  # the seeds' t with 1 degree of freedom
    assert result["low"] < 0 < result["high"]
    shared = st.SharedBootstrap(y_true, 1000, 0, None)  # the images alone: what the seeds hide
    images_only = shared.resampled("accuracy", config) - shared.resampled("accuracy", baseline)
    assert st.bootstrap_p_value(images_only) < 0.005


def test_bootstrap_p_value_by_hand():
    assert st.bootstrap_p_value([1.0, 2.0, 3.0, -1.0]) == pytest.approx(2 * 2 / 5)  # 1 on the far side
    assert st.bootstrap_p_value([-1.0, 0.0, 1.0, 2.0]) == 1.0  # 2 * 3 / 5 > 1
    assert st.bootstrap_p_value([0.1, 0.2, 0.3, 0.4]) == pytest.approx(2 / 5)  # none on the far side: 2 * 1/(B+1)
    assert np.isnan(st.bootstrap_p_value([0.1, float("nan")]))


def test_resamples_are_raised_until_a_holm_adjusted_p_below_alpha_is_attainable():
    # 52 comparisons at B = 1,000: the smallest Holm p is 52 * 2/1001 = 0.10, never below 0.05.
    assert 52 * st.smallest_p_value(1000) > 0.05
    raised = st.resamples_for_family(1000, 52, 0.05)
    assert raised > 1000 and 52 * st.smallest_p_value(raised) <= 0.025
    assert 52 * st.smallest_p_value(raised - 1) > 0.025  # the smallest such B
    assert min(st.holm([st.smallest_p_value(raised)] * 52)) < 0.05
    assert st.resamples_for_family(1000, 3, 0.05) == 1000  # enough already: kept


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


def test_the_temperature_is_applied_to_what_it_was_fitted_on():
    """Validation probabilities with a label at exactly 0 (float underflow): the fitted T
    minimises the NLL of the floored log-probabilities, and applying T to the same
    probabilities gives exactly that NLL. Unfloored, the zero would stay zero and the
    applied probabilities' NLL be infinite."""
    probabilities = np.array([[1.0, 0.0], [0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    labels = np.array([1, 0, 1, 1, 0])
    floored = np.log(np.clip(probabilities, 1e-12, 1.0))
    temperature = st.fit_temperature(floored, labels)
    applied = st.apply_temperature(probabilities, temperature)
    with np.errstate(divide="ignore"):
        nll = -np.log(applied[np.arange(len(labels)), labels]).mean()
    assert np.isfinite(nll)
    assert nll == pytest.approx(st.negative_log_likelihood(floored, labels, temperature))
    assert st.floored_log(probabilities) == pytest.approx(floored)


def test_ece_and_brier_on_every_resample_equal_the_formulas_on_that_resample():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, 40)
    probabilities = rng.dirichlet(np.ones(3), 40)
    counts = st.resample_counts(labels, 25, 1)
    drawn = [np.repeat(np.arange(len(labels)), row) for row in counts]
    expected_ece = [st.expected_calibration_error(labels[rows], probabilities[rows], 15) for rows in drawn]
    expected_brier = [st.brier_score(labels[rows], probabilities[rows]) for rows in drawn]
    assert st.resampled_ece(labels, probabilities, counts, 15) == pytest.approx(expected_ece)
    assert st.resampled_brier(labels, probabilities, counts) == pytest.approx(expected_brier)


def test_calibration_slope_and_intercept_recover_a_known_miscalibration():
    """Outcomes drawn from sigmoid(z); predictions sigmoid(2 z + 1): over-confident and
    shifted, so the fit of the outcome on the predicted logit 2 z + 1 has slope 1/2 and
    intercept -1/2. Swapping which class is the outcome keeps the slope and negates the
    intercept."""
    rng = np.random.default_rng(0)
    z = rng.normal(0, 1.5, 40_000)
    outcome = rng.random(len(z)) < special.expit(z)
    predicted = special.expit(2 * z + 1)
    probabilities = np.column_stack([1 - predicted, predicted])
    slope, intercept = st.calibration_slope_intercept(outcome.astype(int), probabilities, positive=1)
    assert (slope, intercept) == pytest.approx((0.5, -0.5), abs=0.03)
    swapped = st.calibration_slope_intercept(outcome.astype(int), probabilities, positive=0)
    assert swapped == pytest.approx((slope, -intercept), abs=1e-4)


def test_top_label_calibration_slope_for_three_classes_and_no_fit_when_separated():
    """Three classes, the top-label confidence calibrated by construction (right with
    probability equal to it): slope 1, intercept 0. Perfectly separated outcomes: NaN."""
    rng = np.random.default_rng(1)
    n = 30_000
    confidence = rng.uniform(0.4, 0.99, n)
    predicted = rng.integers(0, 3, n)
    right = rng.random(n) < confidence
    labels = np.where(right, predicted, (predicted + rng.integers(1, 3, n)) % 3)
    probabilities = np.full((n, 3), 0.0)
    probabilities[np.arange(n), predicted] = confidence
    for offset in (1, 2):
        probabilities[np.arange(n), (predicted + offset) % 3] = (1 - confidence) / 2
    slope, intercept = st.calibration_slope_intercept(labels, probabilities, positive=None)
    assert (slope, intercept) == pytest.approx((1.0, 0.0), abs=0.06)
    separated = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]])
    assert np.isnan(st.calibration_slope_intercept(np.array([0, 0, 1, 1]), separated, None)).all()


def _two_class(logit: np.ndarray) -> np.ndarray:
    predicted = special.expit(logit)
    return np.column_stack([1 - predicted, predicted])


def test_no_calibration_slope_where_the_fit_carries_no_information():
    """A low-confidence model (probabilities 0.38-0.62) whose outcomes the logit separates
    but for two images at the boundary: the maximum-likelihood slope is about 50 with a
    standard error larger still. A model that gives every image about the same probability
    (logit spread 0.01) whose outcomes follow it: slope in the hundreds. Neither says
    anything about calibration: NaN, NaN."""
    logit = np.linspace(-0.5, 0.5, 40)
    outcome = (logit > 0).astype(int)
    outcome[[19, 20]] = outcome[[20, 19]]  # the two images beside the boundary swap sides
    assert np.isnan(st.calibration_slope_intercept(outcome, _two_class(logit), positive=1)).all()
    rng = np.random.default_rng(0)
    flat = rng.normal(0, 0.01, 57)
    outcome = (rng.random(57) < special.expit(300 * flat)).astype(int)
    assert np.isnan(st.calibration_slope_intercept(outcome, _two_class(flat), positive=1)).all()


def test_a_calibration_slope_with_a_usable_standard_error_is_the_maximum_likelihood_fit():
    """57 test images (the demo's test set), calibrated predictions of a useful model (logit
    sd 2) and of a weak one (sd 0.5): both keep their slope, the maximum of the likelihood
    (scipy.optimize on the negative log-likelihood), and its standard error is the inverse
    of the likelihood's curvature (finite differences), below the limit."""
    rng = np.random.default_rng(3)
    for spread in (2.0, 0.5):
        logit = rng.normal(0, spread, 57)
        outcome = rng.random(57) < special.expit(logit)

        def nll(params, logit=logit, outcome=outcome):
            eta = params[1] + params[0] * logit
            return float(np.sum(np.logaddexp(0, eta) - outcome * eta))

        best = optimize.minimize(nll, [1.0, 0.0], method="Nelder-Mead",
                                 options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 5000}).x
        slope, intercept = st.calibration_slope_intercept(outcome.astype(int), _two_class(logit), positive=1)
        assert (slope, intercept) == pytest.approx(tuple(best), abs=1e-4)
        step = 1e-4
        hessian = np.array([[(nll(best + step * (e_i + e_j)) - nll(best + step * (e_i - e_j))
                              - nll(best - step * (e_i - e_j)) + nll(best - step * (e_i + e_j))) / (4 * step ** 2)
                             for e_j in np.eye(2)] for e_i in np.eye(2)])
        expected_se = np.sqrt(np.linalg.inv(hessian)[0, 0])
        assert st._slope_standard_error(logit, intercept + slope * logit) == pytest.approx(expected_se, rel=1e-3)
        assert expected_se < st.SLOPE_SE_LIMIT
