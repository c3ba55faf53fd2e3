"""What to deploy and at which threshold: ensembles, a validation-chosen operating point
and the decision curve of one dataset.

* ``ensembles``: per configuration at the verdict's training fraction its seed ensemble
  (the mean of its seeds' probabilities), and the top-k configurations by validation
  score averaged (``decision.top_k``); each against the chosen single configuration on
  the same test resamples (:class:`scripts.stats.stats.SharedBootstrap`), Holm within the
  dataset's ensembles per metric. The top-k configurations are the first k of the verdict's
  ranking (mean over seeds of each seed's validation metric); the best ensemble is the one
  with the best out-of-bag validation score (:func:`scripts.stats.decision.out_of_bag_average`).
* ``operating_point`` (two classes): the chosen configuration (each seed at the threshold
  its own validation set gives) and the best ensemble at a threshold chosen on
  validation (``decision.operating_point``), the ensemble's on its own averaged scores
  (:func:`scripts.stats.decision.shared_average`) where its members share enough validation
  images, else on its out-of-bag scores; the sensitivity to expect on new images; sensitivity,
  specificity, PPV and NPV on test with stratified bootstrap intervals over the test images,
  PPV and NPV also at a second prevalence (``decision.prevalence``, else the training split's).
* ``decision_curve`` (two classes): net benefit of the chosen configuration (mean over
  seeds), the best ensemble, treat-all and treat-none, at the test prevalence and at
  ``decision.prevalence`` when set, with stratified bootstrap bands over the test images.

The formulas are :mod:`scripts.stats.decision`; :mod:`scripts.stats.aggregate` calls
:func:`dataset_decision`; :mod:`scripts.report.deployment` renders the tables.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from scripts.common import fsutil
from scripts.common.layout import RUN_FILES
from scripts.plan.grid import config_title
from scripts.stats import decision as dc
from scripts.stats import stats as st
from scripts.stats.run_tables import CONFIG, config_key, read_predictions

ENSEMBLE_COLUMNS = ["dataset", "ensemble", "kind", "members", "n_runs", "fraction", "val_metric", "val_value",
                    "n_val", "metric", "value", "test_low", "test_high", "difference", "low", "high", "p_value",
                    "p_holm", "best"]
OPERATING_POINT_COLUMNS = ["dataset", "deployed", "name", "rule", "target", "threshold", "thresholds",
                           "chosen_on", "n_val_positives", "val_sensitivity", "val_specificity",
                           "new_sensitivity", "new_sensitivity_low", "measure", "prevalence", "prevalence_of",
                           "value", "low", "high"]
DECISION_CURVE_COLUMNS = ["dataset", "prevalence_of", "prevalence", "strategy", "threshold", "net_benefit",
                          "low", "high"]
# The decision curve's threshold probabilities: every hundredth from 0.01 to 0.99, all of
# the open interval where net benefit is defined; the reader takes the clinically relevant
# range off the figure or the table, so no setting narrows it.
DECISION_CURVE_THRESHOLDS = np.round(np.arange(0.01, 0.99 + 0.01 / 2, 0.01), 10)
DECISION_TABLES = {"ensembles": ENSEMBLE_COLUMNS, "operating_point": OPERATING_POINT_COLUMNS,
                   "decision_curve": DECISION_CURVE_COLUMNS}
ARGMAX_REASON = ("With more than two classes there is no single threshold to move: each test image goes to "
                 "its most probable class (argmax). Trading one class's errors against another's needs a cost "
                 "per pair of classes, which the study does not set.")
# Where an ensemble's threshold was chosen: its own averaged scores, or out-of-bag scores.
OWN_SCORES, OUT_OF_BAG = "own validation scores", "out-of-bag validation scores"
SEED_ENSEMBLE_NOTE = ("A seed ensemble averages its configuration's seeds into one model: it has no seed "
                      "variation left, so its intervals (and those of its comparison with the chosen "
                      "configuration) cover the test images only.")


def empty_tables() -> dict[str, list]:
    return {name: [] for name in DECISION_TABLES}


def dataset_decision(name: str, plan: dict, done: pd.DataFrame, test: dict, candidates: list[dict],
                     bootstrap: st.SharedBootstrap, metrics: list[str], verdict: dict) -> dict:
    """One dataset's rows of :data:`DECISION_TABLES` and its ``info`` for the verdict.
    ``test``: a run's test predictions by its index in the plan; ``candidates``: the
    configurations in the order the choice ranks them
    (:func:`scripts.stats.verdict.ranked_candidates`); ``bootstrap``: the dataset's shared
    test resamples."""
    settings, chosen = plan["config"]["decision"], verdict.get("chosen")
    selection, positive = verdict["selection_metric"], bootstrap.positive
    if chosen is None:
        return {**empty_tables(), "info": None}
    runs = {key: list(group.sort_values("seed").index) for key, group in done.groupby(CONFIG, sort=False)}
    classes = verdict["classes"]
    validation = {}  # read only for the runs an ensemble or the operating point needs

    def validated(i: int) -> tuple:
        if i not in validation:
            validation[i] = read_predictions(Path(plan["runs"][i]["dir"]) / RUN_FILES["val_predictions"], classes)
        return validation[i]

    ensembles = _ensembles(candidates, runs, test, validated, settings)
    for ensemble in ensembles:
        _, labels, probabilities = ensemble["validation"]
        ensemble["val_value"] = float(st.bootstrap_metric(selection, labels, probabilities,
                                                          np.arange(len(labels))[None], positive)[0])
    best = max(ensembles, key=lambda e: e["val_value"]) if ensembles else None
    chosen_test = [test[i][2] for i in runs[config_key(chosen)]]
    rows = _ensemble_rows(name, ensembles, best, chosen_test, bootstrap, metrics, selection)
    chosen_title = config_title(chosen, with_fraction=False)  # every candidate is at the verdict's fraction
    info = {"seed_ensembles": settings["seed_ensembles"], "top_k": settings["top_k"],
            "best": best["name"] if best else None, "chosen": chosen_title, "note": SEED_ENSEMBLE_NOTE,
            "two_class": positive is not None, "argmax_reason": None if positive is not None else ARGMAX_REASON,
            "validation_shared": _validation_shared(validation)}
    if positive is None:
        return {**rows, "operating_point": [], "decision_curve": [], "info": info}
    chosen_runs = runs[config_key(chosen)]
    y_test = bootstrap.y_true == positive
    prevalence = {"test": float(y_test.mean()),
                  "validation": float(np.mean(np.concatenate([validated(i)[1] == positive for i in chosen_runs]))),
                  "train": _train_prevalence(plan["datasets"][name]["split"], classes[positive]),
                  "user": settings["prevalence"]}
    other = ("set", prevalence["user"]) if prevalence["user"] is not None else ("train", prevalence["train"])
    point = settings["operating_point"]
    deployed = [("chosen configuration", chosen_title, [test[i][2][:, positive] for i in chosen_runs],
                 [validated(i) for i in chosen_runs], OWN_SCORES)]
    if best:
        own = best["own_validation"]
        # with one shared validation set the out-of-bag scores are the ensemble's own
        on_own = _enough_to_choose(own[1] == positive, point) or len(own[0]) == len(best["validation"][0])
        deployed.append(("best ensemble", best["name"], [best["test"][:, positive]],
                         [own if on_own else best["validation"]], OWN_SCORES if on_own else OUT_OF_BAG))
    operating = [row for deploy in deployed
                 for row in _operating_rows(name, *deploy, positive, y_test, bootstrap.counts, point, other)]
    curve = _curve_rows(name, [deploy[:3] for deploy in deployed], y_test, bootstrap.counts,
                        [("test", prevalence["test"])] + ([("set", prevalence["user"])]
                                                          if prevalence["user"] is not None else []))
    class_weight = plan["config"].get("training", {}).get("class_weight")
    info.update(prevalence=prevalence, other_prevalence=other[0], rule=point["rule"], target=point["target"],
                positive_class=classes[positive], class_weight=class_weight,
                best_own_validation=len(best["own_validation"][0]) if best else None)
    return {**rows, "operating_point": operating, "decision_curve": curve, "info": info}


def _ensembles(candidates: list[dict], runs: dict, test: dict, validated, settings: dict) -> list[dict]:
    """The seed ensembles of ``candidates`` with two or more seeds, and the top-k ensemble
    (candidates are in validation order); each with its test probabilities, its out-of-bag
    validation predictions (``validated``: a run's, by its index) and its own averaged
    predictions on the validation images every member held out (``own_validation``)."""
    def seed_ensemble(row: dict) -> dict:
        indices, title = runs[config_key(row)], config_title(row, with_fraction=False)
        return {"name": f"seed ensemble · {title}", "kind": "seeds", "members": title,
                "n_runs": len(indices), "fraction": row["fraction"],
                "test": np.mean([test[i][2] for i in indices], axis=0),
                "validation": dc.out_of_bag_average([validated(i) for i in indices]),
                "own_validation": dc.shared_average([validated(i) for i in indices])}

    ensembles = ([seed_ensemble(row) for row in candidates if len(runs[config_key(row)]) >= 2]
                 if settings["seed_ensembles"] else [])
    k = min(settings["top_k"], len(candidates))
    if k >= 2:
        top = [seed_ensemble(row) for row in candidates[:k]]
        ensembles.append({"name": f"top-{k} by validation", "kind": "top_k",
                          "members": "; ".join(e["members"] for e in top),
                          "n_runs": sum(e["n_runs"] for e in top), "fraction": top[0]["fraction"],
                          "test": np.mean([e["test"] for e in top], axis=0),
                          "validation": dc.out_of_bag_average([e["validation"] for e in top]),
                          "own_validation": dc.shared_average([e["own_validation"] for e in top])})
    return ensembles


def _ensemble_rows(name: str, ensembles: list[dict], best: dict | None, chosen_test: list[np.ndarray],
                   bootstrap: st.SharedBootstrap, metrics: list[str], selection: str) -> dict:
    """Per ensemble and metric: its test value with a test-image interval, and its paired
    difference from the chosen configuration (``chosen_test``: its seeds' test probabilities;
    the metric averaged over them) with Holm's correction per metric."""
    reference = {metric: (bootstrap.resampled(metric, chosen_test), bootstrap.estimate(metric, chosen_test))
                 for metric in metrics}
    rows = []
    for ensemble in ensembles:
        for metric in metrics:
            values = bootstrap.resampled(metric, [ensemble["test"]])
            differences = values - reference[metric][0]
            test_low, test_high = np.percentile(values, [2.5, 97.5])
            low, high = np.percentile(differences, [2.5, 97.5])
            rows.append({"dataset": name, "ensemble": ensemble["name"], "kind": ensemble["kind"],
                         "members": ensemble["members"], "n_runs": ensemble["n_runs"],
                         "fraction": ensemble["fraction"], "val_metric": selection,
                         "val_value": ensemble["val_value"], "n_val": len(ensemble["validation"][0]),
                         "metric": metric, "value": bootstrap.estimate(metric, [ensemble["test"]]),
                         "test_low": float(test_low), "test_high": float(test_high),
                         "difference": bootstrap.estimate(metric, [ensemble["test"]]) - reference[metric][1],
                         "low": float(low), "high": float(high), "p_value": st.bootstrap_p_value(differences),
                         "best": ensemble is best})
    for metric in metrics:
        family = [row for row in rows if row["metric"] == metric]
        for row, adjusted in zip(family, st.holm([row["p_value"] for row in family]), strict=True):
            row["p_holm"] = float(adjusted)
    return {"ensembles": rows}


def _validation_shared(validation: dict) -> bool:
    """Whether every run was validated on the same images (the dataset's own val/ folder)."""
    paths = {tuple(v[0]) for v in validation.values()}
    return len(paths) <= 1


def _train_prevalence(split_path: str, positive_class: str) -> float | None:
    """Share of the positive class among the first seed's training images (None without the split)."""
    if not Path(split_path).exists():
        return None
    split = fsutil.read_table(split_path)
    train = split[split["subset"] == "train"]
    return float((train["label"] == positive_class).mean()) if len(train) else None


def _enough_to_choose(is_positive: np.ndarray, point: dict) -> bool:
    """Whether validation labels ``is_positive`` can choose a threshold by ``point``'s rule:
    both classes, and for a sensitivity target enough positives to meet it in expectation
    (:func:`scripts.stats.decision.sensitivity_rank`)."""
    n_positive = int(np.sum(is_positive))
    if n_positive == 0 or n_positive == len(is_positive):
        return False
    return point["rule"] != "sensitivity" or (1 - point["target"]) * (n_positive + 1) >= 1 - 1e-9


def _operating_rows(name: str, deployed: str, title: str, test_scores: list[np.ndarray], validation: list[tuple],
                    chosen_on: str, positive: int, y_test: np.ndarray, draws: np.ndarray, point: dict,
                    other: tuple[str, float | None]) -> list[dict]:
    """Each model's threshold chosen on its validation predictions (``chosen_on``: the
    model's own scores, or an ensemble's out-of-bag ones), the sensitivity to expect on new
    images (a sensitivity target chosen on the model's own scores only: out-of-bag scores are
    not exchangeable with the ensemble's), and the measures on test at those thresholds
    (counts summed over seeds) with stratified bootstrap intervals."""
    thresholds = [dc.choose_threshold(labels == positive, probabilities[:, positive], point["rule"], point["target"])
                  for _, labels, probabilities in validation]
    val_counts = [dc.threshold_counts(labels == positive, [probabilities[:, positive]], [t],
                                      np.ones((1, len(labels))))
                  for (_, labels, probabilities), t in zip(validation, thresholds, strict=True)]
    val_rates = dc.rates({k: sum(c[k] for c in val_counts) for k in ("tp", "fp", "tn", "fn")})
    positives = [int(np.sum(labels == positive)) for _, labels, _ in validation]
    new, new_low = (dc.new_data_sensitivity(positives, point["target"], _validation_shared(dict(enumerate(validation))))
                    if point["rule"] == "sensitivity" and chosen_on == OWN_SCORES else (np.nan, np.nan))
    estimate = dc.rates(dc.threshold_counts(y_test, test_scores, thresholds, np.ones((1, len(y_test)))))
    resampled = dc.rates(dc.threshold_counts(y_test, test_scores, thresholds, draws))
    measures = [(m, "test", float(y_test.mean()), estimate[m], resampled[m])
                for m in ("sensitivity", "specificity", "ppv", "npv")]
    if other[1] is not None:
        at_estimate = dc.predictive_values(estimate["sensitivity"], estimate["specificity"], other[1])
        at_resampled = dc.predictive_values(resampled["sensitivity"], resampled["specificity"], other[1])
        measures += [(m, other[0], other[1], at_estimate[m], at_resampled[m]) for m in ("ppv", "npv")]
    common = {"dataset": name, "deployed": deployed, "name": title, "rule": point["rule"],
              "target": point["target"], "threshold": float(np.mean(thresholds)),
              "thresholds": " ".join(f"{t:.3f}" for t in thresholds), "chosen_on": chosen_on,
              "n_val_positives": " ".join(str(n) for n in positives),
              "val_sensitivity": float(val_rates["sensitivity"][0]),
              "val_specificity": float(val_rates["specificity"][0]),
              "new_sensitivity": new, "new_sensitivity_low": new_low}
    rows = []
    for measure, prevalence_of, prevalence, value, values in measures:
        finite = values[~np.isnan(values)]
        low, high = np.percentile(finite, [2.5, 97.5]) if len(finite) else (np.nan, np.nan)
        rows.append({**common, "measure": measure, "prevalence": prevalence, "prevalence_of": prevalence_of,
                     "value": float(value[0]), "low": float(low), "high": float(high)})
    return rows


def _curve_rows(name: str, deployed: list[tuple], y_test: np.ndarray, draws: np.ndarray,
                prevalences: list[tuple[str, float]]) -> list[dict]:
    """Net benefit at :data:`DECISION_CURVE_THRESHOLDS` at each of ``prevalences`` (``(of,
    value)``): sensitivity * prevalence - (1 - specificity) * (1 - prevalence) * pt/(1 - pt),
    which at the test prevalence is TP/n - FP/n * pt/(1 - pt). A model with several seeds:
    the mean of its seeds' net benefit. ``low``/``high``: the 95% percentile band over the
    test-image resamples ``draws`` (stratified: each keeps the test set's class counts)."""
    thresholds = DECISION_CURVE_THRESHOLDS
    weight = thresholds / (1 - thresholds)
    whole = np.ones((1, len(y_test)))
    rates = {f"{deploy[0]}: {deploy[1]}": (_rates_at_thresholds(y_test, deploy[2], whole),
                                           _rates_at_thresholds(y_test, deploy[2], draws))
             for deploy in deployed}
    rows = []
    for prevalence_of, prevalence in prevalences:
        curves = {}
        for strategy, ((sensitivity, fpr), (sensitivities, fprs)) in rates.items():
            low, high = np.percentile(sensitivities * prevalence - fprs * (1 - prevalence) * weight, [2.5, 97.5],
                                      axis=0)
            curves[strategy] = ((sensitivity * prevalence - fpr * (1 - prevalence) * weight)[0], low, high)
        treat_all = dc.treat_all_benefit(prevalence, thresholds)
        curves["treat all"] = (treat_all, treat_all, treat_all)  # stratified resamples keep the prevalence
        curves["treat none"] = (np.zeros_like(thresholds),) * 3
        rows += [{"dataset": name, "prevalence_of": prevalence_of, "prevalence": float(prevalence),
                  "strategy": strategy, "threshold": float(t), "net_benefit": float(v),
                  "low": float(lo), "high": float(hi)}
                 for strategy, (values, lows, highs) in curves.items()
                 for t, v, lo, hi in zip(thresholds, values, lows, highs, strict=True)]
    return rows


def _rates_at_thresholds(y_test: np.ndarray, scores_per_seed: list[np.ndarray], counts: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Sensitivity and false-positive rate ``(resamples, thresholds)`` of treating an image
    whose score is at least each of :data:`DECISION_CURVE_THRESHOLDS`, the mean over seeds;
    ``counts``: each resample's draws per test image."""
    is_positive = np.asarray(y_test, dtype=bool)
    positives, negatives = counts @ is_positive, counts @ ~is_positive
    sensitivity, false_positive_rate = 0.0, 0.0
    for scores in scores_per_seed:
        called = (np.asarray(scores)[:, None] >= DECISION_CURVE_THRESHOLDS[None, :]).astype(float)
        sensitivity = sensitivity + (counts * is_positive) @ called / positives[:, None]
        false_positive_rate = false_positive_rate + (counts * ~is_positive) @ called / negatives[:, None]
    return sensitivity / len(scores_per_seed), false_positive_rate / len(scores_per_seed)
