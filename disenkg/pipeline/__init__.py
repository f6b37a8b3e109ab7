"""A link-prediction run from configuration to metrics: the configuration tree and its
defaults pipeline (:class:`LinkConfig`), and the run itself (:func:`train_link`). The
command line and :func:`disenkg.train` are thin translations onto these."""

from disenkg.pipeline.config import SOURCES, Layer, LinkConfig, all_options
from disenkg.pipeline.run import prepare_run, train_link

__all__ = ["SOURCES", "Layer", "LinkConfig", "all_options", "prepare_run", "train_link"]
