"""The shared early stopping against the plain loops it replaced (link, GAT, VGAE)."""

from __future__ import annotations

import math
import random

import pytest

from disenkg.training.early_stopping import EarlyStopping


def link_reference(mrrs, patience, min_epochs):
    """The link trainer's loop before EarlyStopping: (kept epochs, stop epoch)."""
    best, bad, kept = -1.0, 0, []
    for epoch, v in enumerate(mrrs, start=1):
        if v > best:
            best, bad = v, 0
            kept.append(epoch)
        elif epoch > min_epochs:
            bad += 1
        if patience > 0 and bad >= patience:
            return kept, epoch
    return kept, len(mrrs)


def gat_reference(accs, losses, patience):
    """The GAT authors' criterion as node classification wrote it."""
    acc_max, loss_min, bad, kept, have = -1.0, math.inf, 0, [], False
    for epoch, (a, lo) in enumerate(zip(accs, losses), start=1):
        if a >= acc_max or lo <= loss_min:
            if (a >= acc_max and lo <= loss_min) or not have:
                kept.append(epoch)
                have = True
            acc_max, loss_min, bad = max(a, acc_max), min(lo, loss_min), 0
        else:
            bad += 1
            if bad >= patience:
                return kept, epoch
    return kept, len(accs)


def run(stopper, series, keep_first=False):
    kept, have = [], False
    for epoch, values in enumerate(series, start=1):
        v = stopper.update(*values, epoch=epoch)
        if v.best or (keep_first and v.improved and not have):
            kept.append(epoch)
            have = True
        if stopper.should_stop:
            return kept, epoch
    return kept, len(series)


@pytest.mark.parametrize("seed", range(30))
def test_single_metric_equals_the_link_loop(seed):
    rng = random.Random(seed)
    mrrs = [round(rng.random(), 1) for _ in range(rng.randint(1, 40))]  # ties on purpose
    patience, min_epochs = rng.randint(0, 5), rng.randint(0, 6)
    s = EarlyStopping(patience=patience, min_epochs=min_epochs)
    s.best = [-1.0]
    assert run(s, [(m,) for m in mrrs]) == link_reference(mrrs, patience, min_epochs)


@pytest.mark.parametrize("seed", range(30))
def test_two_metrics_not_strict_equal_the_gat_criterion(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 40)
    accs = [round(rng.random(), 1) for _ in range(n)]
    losses = [round(rng.random(), 1) for _ in range(n)]
    patience = rng.randint(1, 5)
    s = EarlyStopping(patience=patience, modes=("max", "min"), strict=False)
    assert run(s, list(zip(accs, losses)), keep_first=True) == \
        gat_reference(accs, losses, patience)


def test_state_round_trip_and_bad_input():
    s = EarlyStopping(patience=2, modes=("min",))
    s.update(0.5, epoch=1)
    s.update(0.7, epoch=2)
    t = EarlyStopping(patience=2, modes=("min",))
    t.load_state_dict(s.state_dict())
    assert (t.best, t.best_epoch, t.bad) == ([0.5], 1, 1)
    assert t.update(0.6, epoch=3).improved is False and t.should_stop
    with pytest.raises(ValueError, match="modes must be"):
        EarlyStopping(patience=1, modes=("up",))
    with pytest.raises(ValueError, match="expected 1 metric"):
        s.update(1.0, 2.0, epoch=4)
