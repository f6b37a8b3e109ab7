"""Knowledge-graph datasets: loading, id maps, 1-N queries and evaluation filters."""

from disenkg.datasets.kg import KGDataset, QueryIndex
from disenkg.datasets.sources import KNOWN, resolve
from disenkg.datasets.triples import DatasetError, read_splits

__all__ = ["KNOWN", "DatasetError", "KGDataset", "QueryIndex", "read_splits", "resolve"]
