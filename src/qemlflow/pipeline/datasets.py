"""Dataset versions: a raw file plus its reading options, standardized and stored."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from qemlflow.pipeline.steps import STEP_VERSIONS, StepExecutor, StepResult

if TYPE_CHECKING:
    from qemlflow.data import Dataset, RawData
    from qemlflow.store import DatasetRecord, Store

__all__ = [
    "DATASET_VERSION",
    "add_dataset_version",
    "dataset_version_libraries",
    "record_dataset_version",
    "standardize_steps",
]

# 2: the id names the standardizer's version and the libraries it ran with (RDKit's
# first): a new RDKit that standardizes differently makes a new version, not the old one.
DATASET_VERSION = "2"


def standardize_steps(
    raw: RawData,
    executor: StepExecutor,
    *,
    smiles_column: str | None = None,
    target_columns: list[str] | None = None,
    task: str | None = None,
    duplicates: str = "mean",
    standardize: bool = True,
    tautomer: bool = False,
    header: bool | None = None,
) -> tuple[StepResult[bytes], StepResult[Dataset]]:
    """Run the ``dataset`` and ``standardize`` steps exactly as an experiment does."""
    from pydantic import ValidationError

    from qemlflow.errors import ConfigError
    from qemlflow.pipeline.config import DatasetConfig
    from qemlflow.pipeline.runner import execute_data_steps

    try:
        config = DatasetConfig(
            source=raw.source,
            smiles_column=smiles_column,
            target_columns=target_columns,
            task=task,
            duplicates=duplicates,
            standardize=standardize,
            tautomer=tautomer,
            header=header,
        )
    except ValidationError as exc:  # --task, --duplicates: name the option and its values
        first = exc.errors()[0]
        option = "--" + "-".join(str(p) for p in first["loc"]).replace("_", "-")
        raise ConfigError(
            f"bad value for {option}: {str(first['msg']).removeprefix('Value error, ')}",
            "see --help",
        ) from None
    return execute_data_steps(config, raw, executor)


def record_dataset_version(
    store: Store, data_step: StepResult[Any], std_step: StepResult[Any], dataset: Dataset
) -> DatasetRecord:
    """Record (idempotently) the dataset version made by these two steps.

    The version id hashes the raw bytes with the options as resolved (the SMILES and
    label columns actually used, the task, the duplicate policy, standardization): the
    same data read the same way is the same version, wherever the file lies and whether
    a column was named or found by default. It also names the standardizer's version and
    the versions of the libraries it ran with (:func:`dataset_version_libraries`): the
    same file standardized by another RDKit is another version.
    """
    from qemlflow.store import DatasetRecord, content_key

    rejected_csv = dataset.reported.to_csv(index=False)  # merged duplicates too
    rejected_digest = store.blobs.put_bytes(rejected_csv.encode("utf-8"))
    resolved = {
        "smiles_column": dataset.smiles_column,
        "target_columns": list(dataset.target_names),
        "task": dataset.task,
        "duplicates": std_step.params.get("duplicates"),
        "standardize": std_step.params.get("standardize"),
        "tautomer": std_step.params.get("tautomer"),
        "chemistry": std_step.params.get("chemistry"),
        **({"header": std_step.params["header"]} if "header" in std_step.params else {}),
    }
    libraries = dataset_version_libraries(std_step)
    record = DatasetRecord(
        id=content_key("dataset_version", DATASET_VERSION, resolved, [data_step.output], libraries),
        name=dataset.name,
        source=dataset.source,
        raw_digest=data_step.output,
        table_digest=std_step.output,
        rejected_digest=rejected_digest,
        params=resolved,
        summary=dataset.summary(),
        libraries=libraries,
    )
    return store.datasets.add(record)


def dataset_version_libraries(std_step: StepResult[Any]) -> dict[str, str]:
    """The libraries map of a dataset version: the standardize step's, and its version.

    ``qemlflow:standardize`` is the standardizer's own version (``STEP_VERSIONS``), bumped
    whenever QeMLflow changes what standardization outputs.
    """
    from qemlflow.pipeline.steps import step_libraries

    libraries = dict(std_step.libraries) or step_libraries("standardize")
    return {**libraries, "qemlflow:standardize": STEP_VERSIONS["standardize"]}


def add_dataset_version(
    store: Store,
    source: str | Path,
    **options: Any,
) -> tuple[DatasetRecord, Dataset]:
    """Validate, standardize and store a data file (or bundled dataset) as a version."""
    from qemlflow.data import read_raw
    from qemlflow.pipeline.runner import portable_raw

    raw = portable_raw(read_raw(source))
    with store.in_flight("data add"):  # gc keeps its blobs until the version is recorded
        data_step, std_step = standardize_steps(raw, StepExecutor(store), **options)
        dataset: Dataset = std_step.value
        return record_dataset_version(store, data_step, std_step, dataset), dataset
