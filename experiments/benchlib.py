"""Shared pieces of the benchmark scripts (imported after their huge-page switch)."""

from __future__ import annotations

import argparse


def dataset_parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with the scripts' ``--dataset`` / ``--data-dir`` flags."""
    p = argparse.ArgumentParser(description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="FB15k-237", help="dataset name or path")
    p.add_argument("--data-dir", default=None, help="folder holding the dataset")
    return p
