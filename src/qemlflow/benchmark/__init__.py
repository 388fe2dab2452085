"""Benchmarks against the literature: ``qemlflow benchmark`` and the report it writes."""

from qemlflow.benchmark.literature import LiteratureValue, literature_sources, literature_values
from qemlflow.benchmark.runner import BenchmarkResult, run_benchmark
from qemlflow.benchmark.suite import MODELS, SUITES, BenchmarkDataset, BenchmarkModel

__all__ = [
    "MODELS",
    "SUITES",
    "BenchmarkDataset",
    "BenchmarkModel",
    "BenchmarkResult",
    "LiteratureValue",
    "literature_sources",
    "literature_values",
    "run_benchmark",
]
