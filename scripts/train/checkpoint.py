"""A run's training state on disk, so that a killed job (Slurm time limit, preemption,
requeue) resumes from its last saved epoch, and the early-stopping bookkeeping that
travels in that state."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

from scripts.common import fsutil, tracing


def fingerprint(**parts) -> str:
    """A stable hash of ``parts`` (JSON with sorted keys): what a saved state or a cache
    file was made from."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def new_state() -> dict:
    return {"epoch": 0, "history": [], "best_val_loss": None, "best_epoch": None, "wait": 0,
            "stopped": False}


class EarlyStopping:
    """Validation-loss bookkeeping kept in the checkpoint state (so it survives resume)."""

    def __init__(self, state: dict, patience: int):
        self.state, self.patience = state, patience

    def update(self, epoch: int, val_loss: float) -> bool:
        """Record an epoch; True when this epoch is the best so far."""
        best = self.state["best_val_loss"]
        if best is None or val_loss < best:
            self.state.update(best_val_loss=val_loss, best_epoch=epoch, wait=0)
            return True
        self.state["wait"] += 1
        self.state["stopped"] = bool(self.patience) and self.state["wait"] >= self.patience
        return False


def continue_after_warm_up(state: dict) -> None:
    """Turn the head warm-up's early-stopping state into fine-tuning's start. A warm-up that
    stopped early does not stop fine-tuning. The warm-up's kept epoch (its weights are the
    model's now; not necessarily its last) is fine-tuning's first candidate; without head
    epochs the probe only initialises the head that trains end to end."""
    state.update(stopped=False, wait=0)
    if not state["epoch"]:
        state.update(best_val_loss=None, best_epoch=None)


class Checkpoint:
    """Training state in ``directory``: the latest saved epoch's weights with the
    optimizer variables (Keras's ``save_weights`` stores both), the best epoch's weights,
    and ``state.json`` (epoch, early-stopping state, history), written last.

    A save is due every ``every_seconds`` of training (0: after every epoch): a killed
    job loses at most that much work, and a fast epoch does not pay for a save of the
    whole model each time. ``fingerprint`` names the settings and inputs the state
    belongs to; a state saved under other ones is discarded.
    """

    def __init__(self, directory: str | Path, fingerprint: str, every_seconds: float):
        self.directory = Path(directory)
        self.fingerprint = fingerprint
        self.every_seconds = every_seconds
        self.last_save = time.monotonic()

    def load(self) -> dict | None:
        state_file = self.directory / "state.json"
        if not state_file.exists():
            return None
        state = fsutil.read_json(state_file)
        if state.get("fingerprint") != self.fingerprint:
            print(f"checkpoint in {self.directory} is from other settings; starting afresh")
            self.clear()
            return None
        return state

    def path(self, epoch: int) -> Path:
        return self.directory / f"epoch{epoch:04d}.weights.h5"

    @tracing.traced("load weights")
    def restore(self, model, epoch: int) -> None:
        """Load ``epoch``'s saved weights into ``model`` (with the optimizer variables
        when the model is compiled and its optimizer built)."""
        model.load_weights(self.path(epoch))

    def due(self) -> bool:
        return time.monotonic() - self.last_save >= self.every_seconds

    @tracing.traced("checkpoint save")
    def save(self, model, state: dict, best_weights: list | None) -> None:
        """Save the latest epoch, and the best epoch's weights (``best_weights``, kept in
        memory) when they are not on disk yet, then ``state.json``; older files go."""
        with fsutil.atomic_path(self.path(state["epoch"])) as tmp:
            model.save_weights(tmp)
        best = state["best_epoch"]
        if best is not None and best != state["epoch"] and not self.path(best).exists():
            latest = model.get_weights()
            model.set_weights(best_weights)
            with fsutil.atomic_path(self.path(best)) as tmp:
                model.save_weights(tmp)
            model.set_weights(latest)
        fsutil.write_json(self.directory / "state.json", {**state, "fingerprint": self.fingerprint})
        keep = {self.path(state["epoch"]).name, self.path(best if best is not None else state["epoch"]).name}
        for old in self.directory.glob("epoch*.weights.h5"):
            if old.name not in keep:
                old.unlink()
        self.last_save = time.monotonic()

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
