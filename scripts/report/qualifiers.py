"""The first screen of a dataset: its chosen configuration, the selection metric's
comparison with the baseline, and every warning that qualifies the choice
(:data:`DECISION_WARNINGS`)."""

from __future__ import annotations

import numpy as np

from scripts.plan import grid
from scripts.plan.grid import SCRATCH, config_title
from scripts.report.view import LABELS, interval, number
from scripts.stats.stats import TEMPERATURE_BOUNDS
from scripts.stats.verdict import TOO_FEW_SEEDS


def _warning(kind: str, text: str, link: str, level: str = "warn") -> dict:
    """One qualifier of a dataset's decision: ``level`` "warn" qualifies the claim, "note" adds context."""
    return {"kind": kind, "text": text, "link": link, "level": level}


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def seeds_warnings(d: dict, study: dict) -> list[dict]:
    chosen = d["verdict"]["chosen"]
    if not d["verdict"].get("too_few_seeds"):
        return []
    width = "undefined" if chosen["n_seeds"] < 2 else "very wide"
    return [_warning("seeds", f"{_plural(chosen['n_seeds'], 'seed')}: too few to conclude; the interval over seeds is "
                     f"{width}. Run at least {TOO_FEW_SEEDS} seeds before claiming one configuration beats "
                     "another.",
                     f"chosen-{d['index']}")]


def pretraining_warnings(d: dict, study: dict) -> list[dict]:
    chosen, missing = d["verdict"]["chosen"], study["not_pretrained"]
    if chosen["strategy"] != SCRATCH and (chosen["model"] in missing or chosen["weights"] == grid.RANDOM_INIT):
        return [_warning("pretraining", f"{chosen['model']} ran from random weights (weights source none): the chosen "
                         "configuration is not transfer learning.", "not-pretrained")]
    if missing:
        return [_warning("pretraining", f"not pretrained: {', '.join(missing)} ran from random weights, so their "
                         "strategies other than scratch are not transfer learning.", "not-pretrained", "note")]
    return []


def leakage_warnings(d: dict, study: dict) -> list[dict]:
    """Test images that are copies of training images, and test images of patients who
    also have training images: a note where ``data.leakage: drop`` removed them, a
    warning on every claim where they were kept."""
    leak, link = d["leakage"], f"data-{d['index']}"
    if leak is None:
        return [_warning("leakage", "the check for test images that are copies of training images did not run.", link)]
    found = []
    if leak["copies"]:
        found.append(f"{len(leak['copies'])} of {leak['n_checked']} test images are copies of training or "
                     "validation images")
    if leak["shared_groups"]:
        images = sum(int(group["n_test"]) for group in leak["shared_groups"])
        found.append(f"{_plural(images, 'test image')} belong to {len(leak['shared_groups'])} of "
                     f"{leak['n_test_groups']} test patients who also have training or validation images")
    if not found:
        return []
    if leak["policy"] == "drop":
        return [_warning("leakage", f"{'; '.join(found)}; they were removed from the test set.", link, "note")]
    return [_warning("leakage", f"{'; '.join(found)}, kept in the test set: its metrics are optimistic for them.",
                     link)]


def shortcut_warnings(d: dict, study: dict) -> list[dict]:
    info, chosen = d["verdict"]["shortcut"], d["verdict"]["chosen"]
    link = f"shortcut-{d['index']}"
    if info["chosen_flagged"]:
        return [_warning("shortcut", "shortcut suspected: its Grad-CAM maps put more of their mass outside the lung "
                         "box than the shortcut check allows.", link)]
    if chosen.get("cam_informative") is False:
        return [_warning("shortcut", f"its Grad-CAM maps ({chosen['cam_cells']} cells) cannot locate anything: the "
                         "shortcut check cannot judge it.", link)]
    if info["flagged"]:
        return [_warning("shortcut", f"the shortcut check flags {_plural(len(info['flagged']), 'other configuration')}"
                         "; not the chosen one.", link, "note")]
    return []


def calibration_warnings(d: dict, study: dict) -> list[dict]:
    chosen = d["verdict"]["chosen"]
    text = f"ECE {number(chosen['ece'])} {interval(chosen['ece_seed_low'], chosen['ece_seed_high'], 2)} over seeds"
    reference = chosen.get("ece_calibrated_high", np.nan)
    if not np.isnan(reference):  # what calibrated models score on this test set: ECE is biased upward
        verdict = "miscalibrated" if chosen["ece"] > reference else "within what a calibrated model scores"
        text += (f" ({verdict}: calibrated models with these probabilities score {number(chosen['ece_calibrated'])}"
                 f" on these test images, 95% ≤ {number(reference)})")
    text += f", Brier {number(chosen['brier'])}"
    if not np.isnan(chosen.get("ece_scaled", np.nan)):
        text += f"; after temperature scaling ECE {number(chosen['ece_scaled'])}"
        low, high = TEMPERATURE_BOUNDS
        if chosen["temperature"] <= low or chosen["temperature"] >= high:
            return [_warning("calibration", f"{text}: the fitted temperature sits at its search bound, so the "
                             "validation predictions carry no usable signal.", f"calibration-{d['index']}")]
    return [_warning("calibration", f"{text}.", f"calibration-{d['index']}", "note")]


def validation_drop_warnings(d: dict, study: dict) -> list[dict]:
    drop = d["verdict"].get("validation_drop")
    if not drop or not drop["overestimated"]:
        return []
    return [_warning("validation → test", f"{drop['text']} (it drops {drop['drop']:.3f} from validation to test; "
                     f"the other configurations' median drop is {drop['median_other_drop']:.3f}, and choosing the "
                     f"best of {drop['n_others'] + 1} explains up to {drop['selection_margin']:.3f} more).",
                     f"configurations-{d['index']}")]


def missing_runs_warnings(d: dict, study: dict) -> list[dict]:
    if not d["missing"]:
        return []
    return [_warning("failed runs", f"{_plural(len(d['missing']), 'run')} failed or did not finish and "
                     f"{'is' if len(d['missing']) == 1 else 'are'} not in the numbers.", f"runs-{d['index']}")]


def external_warnings(d: dict, study: dict) -> list[dict]:
    metric = d["verdict"]["selection_metric"]
    return [_warning("external", f"on {x['name']} ({x['n_evaluated']} images) {LABELS[metric]} "
                     f"{number(x['chosen']['external'][metric])}, internal {number(x['chosen']['internal'][metric])}.",
                     f"external-{d['index']}-{position}", "note")
            for position, x in enumerate(d["external"], 1)
            if x.get("chosen") and x["chosen"]["internal"] and metric in x["chosen"]["external"]]


# Every qualifier of a dataset's decision, in the order shown: a new warning is one function here.
DECISION_WARNINGS = (seeds_warnings, pretraining_warnings, validation_drop_warnings, leakage_warnings,
                     shortcut_warnings, calibration_warnings, missing_runs_warnings, external_warnings)


def decision(d: dict, study: dict) -> dict | None:
    """The first screen of a dataset: its chosen configuration, the selection metric's
    comparison with the baseline and every warning that qualifies the choice (None
    without a chosen configuration)."""
    verdict = d["verdict"]
    if not verdict.get("chosen"):
        return None
    selection = verdict["selection_metric"]
    versus = {c["metric"]: c for c in verdict.get("versus") or []}
    return {"chosen": verdict["chosen"], "title": config_title(verdict["chosen"]), "selection": selection,
            "metrics": [{"metric": m, "versus": versus.get(m)} for m in verdict["metrics"]],
            "is_baseline": verdict.get("is_baseline"),
            "warnings": [w for check in DECISION_WARNINGS for w in check(d, study)]}


def with_decisions(datasets: list[dict], study: dict) -> list[dict]:
    """Each dataset section with its index (1, 2, …) and its decision."""
    indexed = [{**d, "index": index} for index, d in enumerate(datasets, 1)]
    return [{**d, "decision": decision(d, study)} for d in indexed]
