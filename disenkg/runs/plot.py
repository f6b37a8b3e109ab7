"""Learning curves and the relation x component attention of a run, as PNG files.

matplotlib is an optional extra (``pip install "disenkg[plot]"``); without it
:func:`plot_run` raises :class:`~disenkg.errors.ConfigError` saying how to install it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from disenkg.errors import ConfigError
from disenkg.runs.rundir import RunDir

__all__ = ["plot_run"]


def _pyplot():
    if importlib.util.find_spec("matplotlib") is None:
        raise ConfigError("plot needs matplotlib, which is not installed",
                          hint='pip install "disenkg[plot]" (or matplotlib)')
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_run(run_dir: Path, out: Path | None = None, *, device: torch.device | str = "cpu"
             ) -> list[Path]:
    """Writes ``curves.png`` (train loss, MI loss, validation MRR / Hits@k per epoch) and,
    for DisenKGAT, ``component_attention.png``; returns the paths written."""
    plt = _pyplot()
    rd = RunDir(run_dir)
    rows = rd.read_history()
    config = rd.read_config()
    out = Path(out) if out is not None else rd.path
    out.mkdir(parents=True, exist_ok=True)
    written = []
    epochs = [r["epoch"] for r in rows]
    fig, (ax_l, ax_v) = plt.subplots(1, 2, figsize=(11, 4))
    ax_l.plot(epochs, [r["loss"] for r in rows], label="train loss (incl. MI penalty)")
    ax_l.set_xlabel("epoch")
    ax_l.set_yscale("log")
    ax_l.legend(loc="upper left")
    if any(r.get("mi_loss") for r in rows):  # may be negative: its own linear axis
        ax_m = ax_l.twinx()
        ax_m.plot(epochs, [r["mi_loss"] for r in rows], color="tab:orange",
                  label="MI penalty (right axis)")
        ax_m.legend(loc="upper right")
    ax_l.set_title("training")
    for key in ("valid_mrr", "valid_hits@1", "valid_hits@10"):
        pts = [(r["epoch"], r[key]) for r in rows if r.get(key) is not None]
        if pts:
            ax_v.plot(*zip(*pts), marker=".", label=key.replace("valid_", ""))
    ax_v.set_xlabel("epoch")
    ax_v.set_ylim(0, 1)
    ax_v.legend()
    ax_v.set_title("validation (filtered)")
    fig.suptitle(f"{config.get('dataset', {}).get('name', '')} / {config.get('model', '')}")
    fig.tight_layout()
    written.append(out / "curves.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)
    if config.get("model") == "disenkgat":
        from disenkg.runs.trained import TrainedRun

        run = TrainedRun.load(rd.path, device=device)
        att = run.component_attention()
        names = run.relation_names()
        keep = [i for i in range(len(names)) if not np.isnan(att[i]).all()][:60]
        fig, ax = plt.subplots(figsize=(2 + 0.6 * att.shape[1], 1 + 0.18 * len(keep)))
        im = ax.imshow(att[keep], aspect="auto", cmap="viridis", vmin=0, vmax=1)
        ax.set_yticks(range(len(keep)), [names[i] for i in keep], fontsize=6)
        ax.set_xticks(range(att.shape[1]), [f"k={k}" for k in range(att.shape[1])])
        ax.set_title("component attention")
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        written.append(out / "component_attention.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written
