"""What to deploy and at which threshold: ensembles, a validation-chosen operating point
and the decision curve of one dataset.

* ``ensembles``: per configuration at the verdict's training fraction its seed ensemble
  (the mean of its seeds' probabilities), and the top-k configurations by validation
  score averaged (``decision.top_k``); each against the chosen single configuration on
  the same test resamples (:class:`scripts.stats.stats.SharedBootstrap`), Holm within the
  dataset's ensembles per metric. The best ensemble is the one with the best
  out-of-bag validation score (:func:`scripts.stats.decision.out_of_bag_average`).
* ``operating_point`` (two classes): the chosen configuration (each seed at the threshold
  its own validation set gives) and the best ensemble at a threshold chosen on
  validation (``decision.operating_point``); sensitivity, specificity, PPV and NPV on
  test with stratified bootstrap intervals over the test images, PPV and NPV also at a
  second prevalence (``decision.prevalence``, else the training split's).
* ``decision_curve`` (two classes): net benefit of the chosen configuration (mean over
  seeds), the best ensemble, treat-all and treat-none.

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
                           "val_sensitivity", "val_specificity", "measure", "prevalence", "prevalence_of",
                           "value", "low", "high"]
DECISION_CURVE_COLUMNS = ["dataset", "strategy", "threshold", "net_benefit"]
# The decision curve's threshold probabilities: every hundredth from 0.01 to 0.99, all of
# the open interval where net benefit is defined; the reader takes the clinically relevant
# range off the figure or the table, so no setting narrows it.
DECISION_CURVE_THRESHOLDS = np.round(np.arange(0.01, 0.99 + 0.01 / 2, 0.01), 10)
DECISION_TABLES = {"ensembles": ENSEMBLE_COLUMNS, "operating_point": OPERATING_POINT_COLUMNS,
                   "decision_curve": DECISION_CURVE_COLUMNS}
ARGMAX_REASON = ("With more than two classes there is no single threshold to move: each test image goes to "
                 "its most probable class (argmax). Trading one class's errors against another's needs a cost "
                 "per pair of classes, which the study does not set.")
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
    deployed = [("chosen configuration", chosen_title, [test[i][2][:, positive] for i in chosen_runs],
                 [validated(i) for i in chosen_runs])]
    if best:
        deployed.append(("best ensemble", best["name"], [best["test"][:, positive]], [best["validation"]]))
    point = settings["operating_point"]
    operating = [row for deploy in deployed
                 for row in _operating_rows(name, *deploy, positive, y_test, bootstrap.counts, point, other)]
    curve = _curve_rows(name, deployed, y_test, prevalence["test"])
    info.update(prevalence=prevalence, other_prevalence=other[0], rule=point["rule"], target=point["target"],
                positive_class=classes[positive])
    return {**rows, "operating_point": operating, "decision_curve": curve, "info": info}


def _ensembles(candidates: list[dict], runs: dict, test: dict, validated, settings: dict) -> list[dict]:
    """The seed ensembles of ``candidates`` with two or more seeds, and the top-k ensemble
    (candidates are in validation order); each with its test probabilities and its
    out-of-bag validation predictions (``validated``: a run's, by its index)."""
    def seed_ensemble(row: dict) -> dict:
        indices, title = runs[config_key(row)], config_title(row, with_fraction=False)
        return {"name": f"seed ensemble · {title}", "kind": "seeds", "members": title,
                "n_runs": len(indices), "fraction": row["fraction"],
                "test": np.mean([test[i][2] for i in indices], axis=0),
                "validation": dc.out_of_bag_average([validated(i) for i in indices])}

    ensembles = ([seed_ensemble(row) for row in candidates if len(runs[config_key(row)]) >= 2]
                 if settings["seed_ensembles"] else [])
    k = min(settings["top_k"], len(candidates))
    if k >= 2:
        top = [seed_ensemble(row) for row in candidates[:k]]
        ensembles.append({"name": f"top-{k} by validation", "kind": "top_k",
                          "members": "; ".join(e["members"] for e in top),
                          "n_runs": sum(e["n_runs"] for e in top), "fraction": top[0]["fraction"],
                          "test": np.mean([e["test"] for e in top], axis=0),
                          "validation": dc.out_of_bag_average([e["validation"] for e in top])})
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


def _operating_rows(name: str, deployed: str, title: str, test_scores: list[np.ndarray], validation: list[tuple],
                    positive: int, y_test: np.ndarray, draws: np.ndarray, point: dict,
                    other: tuple[str, float | None]) -> list[dict]:
    """Each model's threshold chosen on its validation predictions, and the measures on test
    at those thresholds (counts summed over seeds) with stratified bootstrap intervals."""
    thresholds = [dc.choose_threshold(labels == positive, probabilities[:, positive], point["rule"], point["target"])
                  for _, labels, probabilities in validation]
    val_counts = [dc.threshold_counts(labels == positive, [probabilities[:, positive]], [t],
                                      np.ones((1, len(labels))))
                  for (_, labels, probabilities), t in zip(validation, thresholds, strict=True)]
    val_rates = dc.rates({k: sum(c[k] for c in val_counts) for k in ("tp", "fp", "tn", "fn")})
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
              "thresholds": " ".join(f"{t:.3f}" for t in thresholds),
              "val_sensitivity": float(val_rates["sensitivity"][0]),
              "val_specificity": float(val_rates["specificity"][0])}
    rows = []
    for measure, prevalence_of, prevalence, value, values in measures:
        finite = values[~np.isnan(values)]
        low, high = np.percentile(finite, [2.5, 97.5]) if len(finite) else (np.nan, np.nan)
        rows.append({**common, "measure": measure, "prevalence": prevalence, "prevalence_of": prevalence_of,
                     "value": float(value[0]), "low": float(low), "high": float(high)})
    return rows


def _curve_rows(name: str, deployed: list[tuple], y_test: np.ndarray, prevalence: float) -> list[dict]:
    """Net benefit at :data:`DECISION_CURVE_THRESHOLDS`."""
    thresholds = DECISION_CURVE_THRESHOLDS
    curves = {f"{deploy[0]}: {deploy[1]}": np.mean([dc.net_benefit(y_test, s, thresholds) for s in deploy[2]], axis=0)
              for deploy in deployed}
    curves["treat all"] = dc.treat_all_benefit(prevalence, thresholds)
    curves["treat none"] = np.zeros_like(thresholds)
    return [{"dataset": name, "strategy": strategy, "threshold": float(t), "net_benefit": float(v)}
            for strategy, values in curves.items() for t, v in zip(thresholds, values, strict=True)]
