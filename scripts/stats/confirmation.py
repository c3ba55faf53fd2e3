"""The confirmation stage's prespecified comparison.

Validation chooses a configuration among many; the seeds that won it were partly lucky, and
the same trained models carry that luck to the test set, so a comparison on them favours
the chosen configuration. The confirmation stage trains fresh seeds
(``evaluation.confirmation_seeds``, none of the study's) of the chosen configuration and of
the scratch CNN baseline after the choice; :func:`confirm` compares the two on those runs
alone, with the study's own paired comparison
(:func:`scripts.stats.comparisons.versus_baseline`, family ``prespecified``). The
confirmation runs appear nowhere else: the study's tables and its choice are the
aggregate step's, from the study's seeds.

:func:`with_confirmation` puts the result into the verdict the report renders.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scripts.common.layout import RUN_FILES
from scripts.plan import config as study_config
from scripts.plan.grid import CONFIGURATION_KEYS, config_title
from scripts.stats import stats as st
from scripts.stats.comparisons import SIGNIFICANCE, Resampled, versus_baseline
from scripts.stats.evaluation import positive_index
from scripts.stats.run_tables import config_key, read_predictions, read_run, test_units
from scripts.stats.verdict import outcome


def confirm(plan: dict, verdict: dict) -> dict:
    """Per trained dataset: the confirmation stage's plan
    (:func:`scripts.plan.config.confirmation_plan` from the ``verdict``'s choice), and where
    it trained (status ``confirming``) the prespecified comparison of the chosen
    configuration against the baseline on the confirmation runs that finished."""
    chosen = {name: part.get("chosen") for name, part in verdict["datasets"].items()}
    planned = {tuple(run[key] for key in CONFIGURATION_KEYS) for run in plan["runs"]}
    stages = study_config.confirmation_plan(plan["config"], chosen, planned)
    datasets = {}
    for name, stage in stages.items():
        result = {**stage, "comparison": None, "claim": None, "finished": 0, "missing": []}
        if stage["status"] == study_config.CONFIRMING:
            result.update(_compared(name, plan, verdict["datasets"][name], stage))
        datasets[name] = result
    return {"seeds": study_config.confirmation_seeds(plan["config"]), "datasets": datasets}


def _compared(name: str, plan: dict, part: dict, stage: dict) -> dict:
    """The chosen configuration minus the baseline on the confirmation runs that finished."""
    config = plan["config"]
    evaluation, selection = config["evaluation"], config["evaluation"]["selection_metric"]
    classes, positive_class = part["classes"], part["positive_class"]
    finished = [run for run in stage["runs"] if read_run(run, RUN_FILES) is not None]
    missing = [run["dir"] for run in stage["runs"] if run not in finished]
    predictions = [read_predictions(Path(run["dir"]) / RUN_FILES["predictions"], classes) for run in finished]
    result = {"finished": len(finished), "missing": missing}
    if not finished:
        return result
    paths, y_true, _ = predictions[0]
    for run, (run_paths, _, _) in zip(finished, predictions, strict=True):
        if run_paths != paths:
            raise ValueError(f"{run['dir']}: its test set differs from the other confirmation runs'")
    groups = test_units(plan, name, paths)
    resamples = st.resamples_for_family(evaluation["bootstrap_resamples"], 1, SIGNIFICANCE)
    bootstrap = st.SharedBootstrap(y_true, resamples, evaluation["bootstrap_seed"],
                                   positive_index(classes, positive_class), groups)
    rows, resampled, means = [], {}, []
    for configuration in stage["configurations"]:
        row = {**configuration, "fraction": float(configuration["fraction"])}
        of_it = [(run["seed"], probabilities) for run, (_, _, probabilities) in zip(finished, predictions, strict=True)
                 if {key: run[key] for key in CONFIGURATION_KEYS} == configuration]
        if not of_it:
            continue
        seeds, probabilities = (tuple(seed for seed, _ in of_it), [p for _, p in of_it])
        estimate = bootstrap.per_seed_estimate(selection, probabilities)
        resampled[config_key(row), selection] = Resampled(seeds, bootstrap.per_seed(selection, probabilities), estimate)
        means.append({"configuration": config_title(row), "seeds": list(seeds),
                      "per_seed": [float(v) for v in estimate], "mean": float(np.mean(estimate))})
        rows.append(row)
    chosen = (config_key({**stage["configurations"][0], "fraction": float(stage["configurations"][0]["fraction"])}),
              selection)
    compared = versus_baseline(rows, resampled, [selection], bootstrap, chosen,
                               evaluation["meaningful_difference"]) if chosen in resampled else []
    comparison = next((_plain(row) for row in compared if row["family"] == "prespecified"), None)
    return {**result, "metric": selection, "resamples": resamples, "n_test": len(paths), "per_configuration": means,
            "comparison": comparison, "claim": outcome(comparison) if comparison else None}


def _plain(row: dict) -> dict:
    """A comparison row with plain Python numbers (JSON)."""
    return {key: value.item() if isinstance(value, np.generic) else value for key, value in row.items()}


def with_confirmation(verdict: dict, confirmation: dict | None) -> dict:
    """The aggregate step's ``verdict`` with each dataset's confirmation stage
    (``confirmation``: :func:`confirm`'s result; None where the study has none): under
    ``confirmation``, and where it compared, its comparison as the dataset's
    ``prespecified`` one with its ``claim``. The study's own comparison of the chosen
    configuration stays among its ``versus`` rows."""
    if confirmation is None:
        return verdict
    datasets = {}
    for name, part in verdict["datasets"].items():
        stage = confirmation["datasets"].get(name)
        part = {**part, "confirmation": stage}
        if stage and stage["status"] == study_config.CONFIRMING:
            part.update(prespecified=stage["comparison"], claim=stage["claim"])
        datasets[name] = part
    return {**verdict, "datasets": datasets}

