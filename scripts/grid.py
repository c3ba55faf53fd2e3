"""The study grid: which dataset × model × strategy × seed runs exist, and why some don't."""

from __future__ import annotations

from dataclasses import dataclass

from scripts.models import SCRATCH_CNN


@dataclass(frozen=True)
class Phase:
    name: str
    trainable: str  # see models.set_trainable
    learning_rate_key: str  # key in the training settings


def phases(strategy: str) -> list[Phase]:
    """The training phases of a strategy (the classic Keras transfer-learning recipe)."""
    head = Phase("head", "head", "learning_rate")
    return {
        "scratch": [Phase("train", "all", "learning_rate")],
        "frozen": [head],
        "partial": [head, Phase("finetune", "top", "finetune_learning_rate")],
        "full": [head, Phase("finetune", "backbone", "finetune_learning_rate")],
    }[strategy]


def skip_reason(model: str, strategy: str) -> str | None:
    if model == SCRATCH_CNN and strategy != "scratch":
        return f"{SCRATCH_CNN} has no pretrained backbone to freeze or fine-tune; only 'scratch' applies"
    return None


def plan(datasets, models, strategies, seeds) -> tuple[list[dict], list[dict]]:
    """Every valid run, and every skipped model × strategy with its reason."""
    runs, skipped = [], []
    for model in models:
        for strategy in strategies:
            reason = skip_reason(model, strategy)
            if reason:
                skipped.append({"model": model, "strategy": strategy, "reason": reason})
                continue
            runs += [
                {"dataset": d, "model": model, "strategy": strategy, "seed": s}
                for d in datasets
                for s in seeds
            ]
    return runs, skipped
