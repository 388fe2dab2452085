"""Molecular datasets: bundled benchmarks, file ingest, and row-by-row accounting.

Examples
--------
>>> from qemlflow.data import BUNDLED, DUPLICATE_POLICIES
>>> sorted(BUNDLED)[:3], DUPLICATE_POLICIES
(['bace', 'bbbp', 'clintox'], ('mean', 'first', 'drop_conflicting'))
"""

from qemlflow.data.dataset import Dataset
from qemlflow.data.ingest import read_table
from qemlflow.data.loading import (
    DUPLICATE_POLICIES,
    RawData,
    dataset_from_raw,
    load_dataset,
    read_raw,
)
from qemlflow.data.registry import BUNDLED, BundledDataset, list_datasets

__all__ = [
    "BUNDLED",
    "DUPLICATE_POLICIES",
    "BundledDataset",
    "Dataset",
    "RawData",
    "dataset_from_raw",
    "list_datasets",
    "load_dataset",
    "read_raw",
    "read_table",
]
