"""The study grid: which runs exist (dataset × model × strategy × pretraining ×
training fraction × seed), and why some model × strategy combinations don't.

TensorFlow-free: the workflow imports it while it builds the job graph.
"""

from __future__ import annotations

import math
from pathlib import Path

# The baseline: a small CNN trained from scratch, the one model that is not a backbone.
SCRATCH_CNN = "scratch_cnn"
SCRATCH = "scratch"  # the strategy that trains every weight from random initialisation
# Every strategy, in the order the report shows them: from scratch, then from the least to
# the most of a backbone trained.
STRATEGIES = (SCRATCH, "linear_probe", "frozen", "partial", "full")
# Strategies that start from a backbone's weights (pretrained, or a random-init control).
PRETRAINED_STRATEGIES = STRATEGIES[1:]
RANDOM_INIT = "none"  # the pretraining label of every run that starts from random weights
# The pretraining label of a declared backbone file's runs that start from the file's own
# weights: whatever the study's sources, the file brings its own (config key backbones).
OWN_WEIGHTS = "own"


def baseline_of(configuration: dict) -> dict:
    """The scratch CNN baseline on the same dataset and training fraction as ``configuration``."""
    return {**configuration, "model": SCRATCH_CNN, "strategy": SCRATCH, "weights": RANDOM_INIT}


def skip_reason(model: str, strategy: str) -> str | None:
    if model == SCRATCH_CNN and strategy != SCRATCH:
        return f"{SCRATCH_CNN} has no pretrained backbone to freeze, probe or fine-tune; only {SCRATCH!r} applies"
    return None


def config_title(config, with_fraction: bool = True) -> str:
    """A configuration's name in the tables and the report: model · strategy, its
    pretraining source unless it trains from scratch (random weights, whatever the
    source), and, ``with_fraction``, its share of the training split when below the whole."""
    parts = [config["model"], config["strategy"]]
    if config["strategy"] != SCRATCH:
        parts.append(f"weights {config['weights']}")
    if with_fraction and float(config["fraction"]) < 1:
        parts.append(f"{float(config['fraction']):.0%} of train")
    return " · ".join(parts)


def report_order(config) -> tuple:
    """A configuration's place in the report's tables and figures: the baseline model first,
    then by model, strategy (:data:`STRATEGIES` order), pretraining source, largest training
    share first."""
    return (config["model"] != SCRATCH_CNN, config["model"], STRATEGIES.index(config["strategy"]),
            config["weights"], -float(config["fraction"]))


def excluded(model: str, strategy: str, exclude) -> str | None:
    for rule in exclude:
        if rule.get("model", model) == model and rule.get("strategy", strategy) == strategy:
            return "excluded in the config (exclude)"
    return None


def weights_sources(setting) -> list[dict]:
    """The config's ``weights`` as a list of named pretraining sources.

    One source (``imagenet``, ``none``, a file, or a per-backbone mapping) or a list of
    them; each gets a name used in folder names and the report.
    """
    items = setting if isinstance(setting, list) else [setting]
    sources = []
    for item in items:
        if isinstance(item, dict) and "name" in item:
            sources.append({"name": item["name"], "spec": item["source"]})
        elif item in ("imagenet", RANDOM_INIT):
            sources.append({"name": item, "spec": item})
        else:
            sources.append({"name": "custom", "spec": item})
    names = [s["name"] for s in sources]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"weights: pretraining sources need distinct names; repeated: {duplicates}")
    for source in sources:
        if (source["name"] == RANDOM_INIT) != (source["spec"] == RANDOM_INIT):
            raise ValueError(f"weights: the name {RANDOM_INIT!r} is reserved for random initialisation")
        if source["name"] == OWN_WEIGHTS:
            raise ValueError(f"weights: the name {OWN_WEIGHTS!r} is reserved for a backbone file's own weights")
    return sources


def fraction_label(fraction: float) -> str:
    return repr(float(fraction))


def missing_weights(model: str, name: str, spec) -> str | None:
    """Why source ``name`` cannot initialise ``model``: a per-backbone mapping that names
    neither the model nor a default (a silent ImageNet fallback would run ImageNet weights
    under this source's name)."""
    if isinstance(spec, dict) and model not in spec and "default" not in spec:
        return f"weights source {name!r} names no weights for {model} (add '{model}:' or 'default:' to it)"
    return None


def plan(datasets, models, strategies, sources: dict, fractions, seeds, exclude=(),
         backbone_files=()) -> tuple[list[dict], list[dict]]:
    """Every valid run, and every skipped model × strategy (× weights source) with its reason.

    ``sources``: the weights sources, name -> setting; runs of the ``scratch`` strategy
    do not depend on them and exist once, as random init. ``exclude``: the config's list
    of ``{model, strategy}`` (either may be left out: any) not to run. A model of
    ``backbone_files`` (declared files) has, instead of the pretrained sources, one
    :data:`OWN_WEIGHTS` source (random init too where the study has it).
    """
    runs, skipped = [], []
    for model in models:
        for strategy in strategies:
            reason = skip_reason(model, strategy) or excluded(model, strategy, exclude)
            if reason:
                skipped.append({"model": model, "strategy": strategy, "reason": reason})
                continue
            names = list(sources) if strategy in PRETRAINED_STRATEGIES else [RANDOM_INIT]
            if model in backbone_files and strategy in PRETRAINED_STRATEGIES:
                names = [name if name == RANDOM_INIT else OWN_WEIGHTS for name in names]
            for name in names:
                reason = missing_weights(model, name, sources.get(name))
                if reason:
                    skipped.append({"model": model, "strategy": strategy, "weights": name, "reason": reason})
            runs += [
                {"dataset": d, "model": model, "strategy": strategy, "weights": w,
                 "fraction": fraction_label(f), "seed": s}
                for d in datasets
                for w in dict.fromkeys(names) if not missing_weights(model, w, sources.get(w))
                for f in fractions
                for s in seeds
            ]
    return runs, skipped


# ---- Packs: several runs of one configuration trained by one job (one process). --------
CONFIGURATION_KEYS = ("dataset", "model", "strategy", "weights", "fraction")
# A train job's start before its first run (Snakemake inside the job, TensorFlow's import,
# the images): about 15 s measured (make benchmark, section 6), rounded up.
JOB_START_MINUTES = 1


def pack_label(seeds: list[int]) -> str:
    """A pack's name in paths: its first and last seed (``3-8``); the seeds between are
    the configuration's planned seeds in that range."""
    return f"{seeds[0]}-{seeds[-1]}"


def packs(runs: list[dict], size: int) -> list[dict]:
    """The runs grouped into packs of at most ``size`` runs of one configuration (the
    same dataset, model, strategy, weights and fraction; consecutive seeds in sorted
    order), each ``{**configuration, "seeds": "first-last", "members": [seed, ...]}``
    (``seeds``: the pack's name, :func:`pack_label`). Appending
    seeds to a study keeps the earlier packs as they were while they were full."""
    if size < 1:
        raise ValueError(f"runs_per_job must be at least 1, got {size}")
    by_configuration: dict[tuple, list[int]] = {}
    for run in runs:
        by_configuration.setdefault(tuple(run[key] for key in CONFIGURATION_KEYS), []).append(int(run["seed"]))
    grouped = []
    for configuration, seeds in by_configuration.items():
        seeds = sorted(set(seeds))
        for start in range(0, len(seeds), size):
            chunk = seeds[start:start + size]
            grouped.append({**dict(zip(CONFIGURATION_KEYS, configuration, strict=True)),
                            "seeds": pack_label(chunk), "members": chunk})
    return grouped


def pack_seeds(label: str, planned_seeds: list[int]) -> list[int]:
    """The seeds of the pack named ``label`` among a configuration's ``planned_seeds``."""
    first, _, last = label.partition("-")
    seeds = [seed for seed in sorted(planned_seeds) if int(first) <= seed <= int(last)]
    if not seeds or seeds[0] != int(first) or seeds[-1] != int(last):
        raise ValueError(f"pack {label}: seeds {first} and {last} are not both planned ({sorted(planned_seeds)})")
    return seeds


def pack_too_long(per_run_minutes: float, n_runs: int, runs_at_once: int, max_minutes: int | None,
                  measured: bool) -> str | None:
    """Why a pack job of ``n_runs`` runs (in turns of ``runs_at_once``) cannot finish
    within the site's ``max_minutes`` at its first attempt, naming the settings to
    change; None where it fits. A job submitted with a limit known to be too short would
    time out, and its retries would too."""
    turns = math.ceil(n_runs / runs_at_once)
    minutes = pack_minutes(per_run_minutes, turns, 1, None)
    if not max_minutes or minutes <= max_minutes:
        return None
    source = ("1.5 x the longest measured run of the configuration" if measured
              else "set-resources.train.run_minutes")
    fitting = int((max_minutes - JOB_START_MINUTES) // per_run_minutes) * runs_at_once
    change = (f"lower set-resources.train.runs_per_job to at most {fitting}" if fitting >= 1
              else "one run alone exceeds it: give the train rule a partition with a longer MaxTime")
    return (f"a train job of {n_runs} runs ({turns} turns of runs_at_once {runs_at_once}) at "
            f"{per_run_minutes:g} min a run ({source}) needs {minutes} min, more than "
            f"set-resources.train.max_runtime {max_minutes} min: {change}, raise "
            "set-resources.train.runs_at_once, or set max_runtime to the partition's MaxTime if it is "
            "higher (config/README.md)")


def pack_minutes(per_run_minutes: float, n_runs: int, attempt: int, max_minutes: int | None) -> int:
    """A pack job's time limit: the job's start (Snakemake, TensorFlow, the images) plus
    what one run takes times the pack's runs, times the attempt (1x, 2x, 3x), never more
    than the site's ``max_minutes`` (a partition's MaxTime rejects a longer job; a first
    attempt that needs more is refused before, :func:`pack_too_long`)."""
    minutes = math.ceil((JOB_START_MINUTES + per_run_minutes * n_runs) * attempt)
    return min(minutes, max_minutes) if max_minutes else minutes


def is_current(identity: dict | None, run: dict, settings: dict, images: str, external_tests: list) -> bool:
    """Whether a finished run's recorded ``identity`` (its ``finished.json``) is of the
    run as it would be trained now, as far as planning knows: the same run (``run``: its
    configuration and seed), ``settings`` (the train step's, parsed), decoded ``images``
    (path and size in bytes) and ``external_tests``. The trainer also compares the split
    (it may not exist while planning). A record of another setting (a 1-epoch smoke test
    before the 20-epoch study) is no measurement of this run and leaves it to train."""
    if not identity or not Path(images).is_file():
        return False
    now = {"run": {**{key: run[key] for key in ("dataset", "model", "strategy", "weights")},
                   "fraction": float(run["fraction"]), "seed": int(run["seed"])},
           "settings": settings, "images": images, "images_bytes": Path(images).stat().st_size,
           "external_tests": list(external_tests)}
    return all(identity.get(key) == value for key, value in now.items())
