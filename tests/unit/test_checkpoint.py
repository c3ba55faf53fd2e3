"""Early-stopping bookkeeping across the head warm-up and fine-tuning."""

from __future__ import annotations

from scripts.train.checkpoint import EarlyStopping, continue_after_warm_up, new_state


def test_the_warm_up_epoch_kept_stays_the_kept_epoch_into_fine_tuning():
    """Warm-up epochs 1-3 with the best validation loss at epoch 2, then a fine-tuning
    epoch that is worse: the kept epoch is 2 (its weights are what the model holds), not
    the warm-up's last epoch 3."""
    state = new_state()
    warm_up = EarlyStopping(state, patience=1)
    for epoch, val_loss in [(0, 0.9), (1, 0.5), (2, 0.3), (3, 0.4)]:
        warm_up.update(epoch, val_loss)
        state["epoch"] = epoch
    assert state["stopped"] and state["best_epoch"] == 2
    continue_after_warm_up(state)
    assert state["best_epoch"] == 2 and state["best_val_loss"] == 0.3
    assert not state["stopped"] and state["wait"] == 0
    fine_tuning = EarlyStopping(state, patience=3)
    assert not fine_tuning.update(4, 0.35)
    state["epoch"] = 4
    assert state["best_epoch"] == 2


def test_without_head_epochs_the_probe_is_not_a_candidate():
    state = new_state()
    EarlyStopping(state, patience=0).update(0, 0.5)
    continue_after_warm_up(state)
    assert state["best_epoch"] is None and state["best_val_loss"] is None
