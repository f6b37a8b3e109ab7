"""The run and data sections of a link-prediction configuration.

The training section is :class:`disenkg.training.config.TrainingConfig`, the model sections
are registered with their builders in :mod:`disenkg.models.registry`; the whole tree is
:class:`disenkg.pipeline.LinkConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass

from disenkg.config.options import Section, option
from disenkg.config.rules import as_bool, integer, one_of, text

__all__ = ["LOG_LEVELS", "DataConfig", "RunConfig"]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass(frozen=True, kw_only=True)
class RunConfig(Section):
    """Where a run goes and how it is shown (not what it computes)."""

    section = "run"

    preset: str | None = option(
        "auto", text, nullable=True,
        help="configuration preset: 'auto' uses the named dataset's preset for DisenKGAT, "
             "'none' turns presets off (size-derived defaults apply), or a preset name; "
             "flags and --config keys override it")
    output_dir: str | None = option(
        None, text, nullable=True,
        help="the run directory (default: runs/DATASET-MODEL); refused if it already holds "
             "a run, unless --resume or --overwrite")
    resume: bool = option(
        False, as_bool,
        help="continue the run in OUTPUT_DIR from last.pt with its saved config; flags may "
             "change only epochs, patience, eval-every, device, implementations and display")
    overwrite: bool = option(False, as_bool,
                             help="delete the run files already in OUTPUT_DIR and start "
                                  "afresh")
    device: str = option("auto", text, help="'auto', 'cpu', 'cuda' or 'cuda:N'")
    tensorboard: bool = option(
        False, as_bool,
        help="also log loss and validation metrics to OUTPUT_DIR/tensorboard (needs the "
             "'tracking' extra: pip install tensorboard)")
    no_progress: bool = option(False, as_bool, help="hide tqdm progress bars")
    log_level: str = option("INFO", one_of(LOG_LEVELS, upper=True),
                            help="logging level (DEBUG also shows tracebacks of user errors)")
    debug: bool = option(False, as_bool,
                         help="show the full traceback of errors in your input")


@dataclass(frozen=True, kw_only=True)
class DataConfig(Section):
    """Which KG to train on and where to find it."""

    section = "data"

    dataset: str = option(
        "umls", text,
        help="dataset name (FB15k-237, WN18RR, kinship, umls) or a path to a directory / "
             ".tar.gz / .zip holding train.txt, valid.txt, test.txt")
    data_dir: str | None = option(
        None, text, nullable=True,
        help="directory searched first for named datasets (then $DISENKG_DATA, the bundled "
             "UMLS / Kinship, then download into ~/.cache/disenkg)")
    max_archive_mb: int | None = option(
        None, integer(1), nullable=True,
        help="largest decompressed size of a dataset archive in MiB (default: 1024, or 500x "
             "the archive's size if smaller, at least 32)")
