"""disenkg: disentangled graph attention for knowledge graphs and node-level tasks."""

__version__ = "0.1.0"
