"""Load a bundled dataset or a user file into a Dataset, accounting for every input row.

Duplicate policies (duplicates = same standardized canonical SMILES):

- ``"mean"``: regression labels are averaged per task, ignoring missing values.
  Classification labels take the per-task majority vote; a tie (as many 0s as 1s) makes
  that task's label missing, and if that leaves the molecule with no label at all, every
  copy is rejected as ``conflicting_duplicate``.
- ``"first"``: the first occurrence's labels are kept as they are (missing ones included).
- ``"drop_conflicting"``: copies that agree on every task are merged (labels averaged per
  task, missing ones ignored). Two values agree when
  ``|a - b| <= 1e-6 * max(1, |a|, |b|)``, so 0/1 labels must be equal. Otherwise every
  copy is rejected as ``conflicting_duplicate``.

In every policy the first copy of a kept molecule has status ``ok`` and the later copies
``merged``, with ``mol_index`` pointing at the shared molecule and reason
``merged_duplicate``, or ``label_conflict`` when the copies disagree on a label (the detail
gives the values and how they were resolved). :meth:`Dataset.duplicates` counts them.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd

from qemlflow.chem import MolResult, parse_smiles, standardize_smiles
from qemlflow.chem.sdf import RECORD_ERRORS_ATTR
from qemlflow.chemistry import DEFAULT_POLICY, ChemistryPolicy
from qemlflow.data.dataset import Dataset
from qemlflow.data.ingest import SUPPORTED_EXTENSIONS, read_file_bytes
from qemlflow.data.reader import SMILES_HINT, open_molecules, shown_columns
from qemlflow.data.reader import find_smiles_column as _find_in_columns
from qemlflow.data.registry import BUNDLED, BundledDataset, bundled_bytes
from qemlflow.errors import ConfigError, DataError
from qemlflow.limits import DEFAULT_LIMITS, MoleculeLimits

__all__ = ["DUPLICATE_POLICIES", "TASKS", "load_dataset"]

DuplicatePolicy = Literal["mean", "first", "drop_conflicting"]
Task = Literal["regression", "classification"]
#: Allowed values of ``load_dataset(duplicates=...)``.
DUPLICATE_POLICIES: tuple[str, ...] = get_args(DuplicatePolicy)
#: Allowed values of ``load_dataset(task=...)``.
TASKS: tuple[str, ...] = get_args(Task)
#: Column names taken as the SMILES column, in order of preference (any case).
SMILES_COLUMN_NAMES = ("smiles", "smi", "mol")
#: Relative tolerance under which two duplicate labels agree.
AGREEMENT_TOLERANCE = 1e-6

_SMILES_FLAG = SMILES_HINT
_TARGET_FLAG = "--target / target_columns"
_TRUE_FALSE = {"true": 1.0, "false": 0.0}
# Words in a column name that mark an identifier, never a label.
_ID_WORDS = {"id", "idx", "index", "no", "number", "cas", "name", "compound", "row"}


@dataclass(frozen=True)
class RawData:
    """The raw bytes of a dataset file, as read, with where they came from.

    ``dataset_from_raw`` turns them into a Dataset; the provenance store keeps these
    bytes so a run can be re-created after the original file has moved or changed.
    """

    data: bytes
    filename: str
    name: str
    source: str
    label: str

    @property
    def digest(self) -> str:
        """The sha256 hex digest of the raw bytes."""
        return hashlib.sha256(self.data).hexdigest()


def read_raw(source: str | os.PathLike[str]) -> RawData:
    """Read the raw bytes of a bundled dataset (by name) or of a data file.

    Examples
    --------
    >>> raw = read_raw("freesolv")
    >>> raw.filename, raw.source, raw.data[:8]
    ('freesolv.csv', 'bundled:freesolv', b'smiles,f')
    """
    if isinstance(source, str) and source.strip().lower() in BUNDLED:
        name = source.strip().lower()
        return RawData(
            data=gzip.decompress(bundled_bytes(name)),
            filename=BUNDLED[name].filename.removesuffix(".gz"),
            name=name,
            source=f"bundled:{name}",
            label=BUNDLED[name].filename.removesuffix(".gz"),
        )
    path = Path(source)
    if not path.exists() and not any(path.name.lower().endswith(e) for e in _all_extensions()):
        raise DataError(
            f"unknown dataset {os.fspath(source)!r}: not a bundled dataset and not a data file",
            f"use a bundled dataset ({', '.join(BUNDLED)}) or the path of a data file",
        )
    stem = path.name.removesuffix(".gz").removesuffix(".GZ")
    return RawData(
        data=read_file_bytes(path),
        filename=path.name,
        name=Path(stem).stem,
        source=os.fspath(source),
        label=path.name,
    )


def _all_extensions() -> tuple[str, ...]:
    return (*SUPPORTED_EXTENSIONS, *(f"{e}.gz" for e in SUPPORTED_EXTENSIONS))


def _missing_column(kind: str, column: str, columns: list[str], label: str, flag: str) -> DataError:
    near = [c for c in columns if c.lower() == column.lower()]
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return DataError(
        f"{kind} {column!r} not found in {label}{hint} (columns: {shown_columns(columns)})",
        f"pass the right name with {flag}",
    )


def find_smiles_column(table: pd.DataFrame, label: str, requested: str | None = None) -> str:
    """Return the SMILES column of ``table``: ``requested`` if it exists, else a column
    named smiles/smi/mol (any case), else the one column whose name contains "smiles",
    else the only column (the rules of :mod:`qemlflow.data.reader`).

    Errors name the columns there are and the option that fixes it.

    Examples
    --------
    >>> find_smiles_column(pd.DataFrame({"Canonical_SMILES": ["C"], "y": [1]}), "x.csv")
    'Canonical_SMILES'
    """
    return _find_in_columns([str(c) for c in table.columns], label, requested)


def _mostly_numeric(values: pd.Series[Any]) -> bool:
    given = [v for v in values.tolist() if not _is_missing(v)]
    if not given:
        return False
    parsed = sum(1 for v in given if _to_float(v) is not None)
    return parsed * 2 >= len(given)


def _looks_like_identifier(name: str, series: pd.Series[Any], by_value: bool) -> bool:
    """True for a column named like an ID or, when ``by_value``, holding distinct integers."""
    words = name.strip().lower().replace("-", "_").replace(" ", "_").split("_")
    if set(words) & _ID_WORDS or name.lower().startswith("unnamed"):
        return True
    if not by_value:
        return False
    numbers = pd.to_numeric(series, errors="coerce").dropna()
    distinct_integers = bool((numbers == numbers.round()).all()) and numbers.is_unique
    return len(numbers) >= 3 and distinct_integers


def _target_columns(table: pd.DataFrame, smiles_column: str, label: str) -> list[str]:
    """Numeric (or mostly numeric) columns other than SMILES, when none looks like an ID."""
    candidates = [
        str(column)
        for column in table.columns
        if column != smiles_column
        and (
            pd.api.types.is_numeric_dtype(table[column])
            or pd.api.types.is_bool_dtype(table[column])
            or _mostly_numeric(table[column])
        )
    ]
    if not candidates:
        raise DataError(
            f"no numeric target column found in {label} (columns: {shown_columns(table.columns)})",
            f"name the targets with {_TARGET_FLAG}",
        )
    by_value = len(candidates) > 1
    ids = [c for c in candidates if _looks_like_identifier(c, table[c], by_value)]
    if ids:
        raise DataError(
            f"cannot tell the target columns of {label}: numeric columns "
            f"{', '.join(candidates)}, but {ids[0]!r} looks like an identifier",
            f"name the targets with {_TARGET_FLAG}",
        )
    return candidates


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _to_float(value: Any) -> float | None:
    """Return the finite number a label cell holds, or None when it holds no number."""
    if isinstance(value, bool | np.bool_):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in _TRUE_FALSE:
            return _TRUE_FALSE[text.lower()]
        try:
            number = float(text)
        except ValueError:
            return None
    elif isinstance(value, int | float | np.integer | np.floating):
        number = float(value)
    else:
        return None
    return number if math.isfinite(number) else None


def _labels(
    table: pd.DataFrame, targets: list[str], label: str
) -> tuple[np.ndarray[Any, np.dtype[np.float64]], list[str]]:
    """Return labels (NaN = missing or bad) and, per row, why a label is not a number."""
    n = len(table)
    y = np.full((n, len(targets)), np.nan)
    bad = [""] * n
    for j, column in enumerate(targets):
        values = table[column].tolist()
        first_bad: Any = None
        for i, value in enumerate(values):
            if _is_missing(value):
                continue
            number = _to_float(value)
            if number is None:
                first_bad = value if first_bad is None else first_bad
                if not bad[i]:
                    bad[i] = f"column {column!r} has non-numeric value {value!r}"
            else:
                y[i, j] = number
        if np.isnan(y[:, j]).all():
            problem = (
                f"target column {column!r} in {label} has no values"
                if first_bad is None
                else f"target column {column!r} in {label} has no numeric values "
                f"(e.g. {first_bad!r})"
            )
            raise DataError(problem, f"name the label columns with {_TARGET_FLAG}")
    return y, bad


def _resolve_task(
    y: np.ndarray[Any, np.dtype[np.float64]], task: str | None, targets: list[str], label: str
) -> Task:
    present = ~np.isnan(y)
    binary = ~present | (y == 0.0) | (y == 1.0)
    if task is None:
        return "classification" if bool(binary.all()) else "regression"
    if task == "classification" and not bool(binary.all()):
        rows, cols = np.nonzero(~binary)
        column, value = targets[cols[0]], y[rows[0], cols[0]]
        raise DataError(
            f"task 'classification' needs 0/1 labels, but column {column!r} in {label} "
            f"has {value:g}",
            "use task 'regression' (--task regression) or binarize the labels",
        )
    return "regression" if task == "regression" else "classification"


def _agree(values: np.ndarray[Any, np.dtype[np.float64]]) -> bool:
    if values.size < 2:
        return True
    spread = float(values.max() - values.min())
    scale = max(1.0, float(np.abs(values).max()))
    return spread <= AGREEMENT_TOLERANCE * scale


def _merge_labels(
    y: np.ndarray[Any, np.dtype[np.float64]], policy: str, task: Task, targets: list[str]
) -> tuple[np.ndarray[Any, np.dtype[np.float64]] | None, str]:
    """Merge the label rows of one molecule's copies.

    Returns the merged labels (None when the copies are rejected) and, when the copies
    disagree on any task, what they disagree on and how each disagreement was resolved.
    """
    if len(y) == 1:
        return y[0].copy(), ""
    merged = y[0].copy() if policy == "first" else np.full(y.shape[1], np.nan)
    conflicts: list[str] = []
    for j in range(y.shape[1]):
        values = y[:, j][~np.isnan(y[:, j])]
        if values.size == 0:
            continue
        shown = ", ".join(f"{v:g}" for v in values[:5]) + (", ..." if values.size > 5 else "")
        disagree = not _agree(values)
        resolution = ""
        if policy == "first":
            resolution = f"kept the first copy's {merged[j]:g}"
        elif policy == "drop_conflicting" and disagree:
            resolution = "rejected"
        elif policy == "mean" and task == "classification":
            ones = int((values == 1.0).sum())
            zeros = values.size - ones
            if ones == zeros:
                resolution = "tie, set missing"
            else:
                merged[j] = 1.0 if ones > zeros else 0.0
                resolution = f"majority vote {merged[j]:g}"
        else:
            merged[j] = float(values.mean())
            resolution = f"mean {merged[j]:g}"
        if disagree:
            conflicts.append(f"{targets[j]!r} ({shown}: {resolution})")
    conflict = f"{len(y)} copies disagree on {', '.join(conflicts)}" if conflicts else ""
    if policy == "drop_conflicting" and conflicts:
        return None, conflict
    if np.isnan(merged).all():  # every labelled task was a tie
        return None, conflict
    return merged, conflict


def _standardize_all(
    values: list[Any],
    standardize: bool,
    tautomer: bool,
    limits: MoleculeLimits,
    chemistry: ChemistryPolicy,
) -> dict[str, MolResult]:
    """Standardize each distinct SMILES string once.

    Serial on purpose: a process pool started from inside a library call breaks user
    scripts that lack an ``if __name__ == "__main__"`` guard (spawn) or holds threads (fork).
    """
    if not standardize:
        return {
            v: parse_smiles(v, limits=limits) for v in dict.fromkeys(values) if isinstance(v, str)
        }
    return {
        v: standardize_smiles(v, tautomer=tautomer, limits=limits, policy=chemistry)
        for v in dict.fromkeys(values)
        if isinstance(v, str)
    }


def load_dataset(
    source: str | os.PathLike[str],
    *,
    smiles_column: str | None = None,
    target_columns: str | Sequence[str] | None = None,
    task: Task | None = None,
    duplicates: DuplicatePolicy = "mean",
    standardize: bool = True,
    tautomer: bool = False,
    limits: MoleculeLimits = DEFAULT_LIMITS,
    header: bool | None = None,
    chemistry: ChemistryPolicy = DEFAULT_POLICY,
) -> Dataset:
    """Load a bundled dataset (by name) or a data file into a Dataset.

    Every input row ends up in ``Dataset.rows`` as ``ok``, ``merged`` (a duplicate of an
    earlier row's molecule) or ``rejected`` with a reason code: a chem reason such as
    ``unparsable``, ``too_large`` (over the admission ``limits``), ``unsupported_chemistry`` or
    ``parent_too_small`` (refused by the ``chemistry`` policy, see
    :mod:`qemlflow.chem.parent`), or ``non_numeric_label``,
    ``missing_label``, ``conflicting_duplicate``. Columns default from the registry for
    bundled datasets; for files the SMILES column is one named smiles/smi/mol (any case)
    and the targets are the numeric columns. The task is classification when every label
    is 0/1, else regression. See the module docstring for the duplicate policies. The file
    is read by the rules of :mod:`qemlflow.data.reader`: ``header=False`` reads a table
    without a header row (columns ``1``, ``2``, ...), and a row with more fields than the
    header is rejected as ``too_many_fields``.

    Examples
    --------
    >>> ds = load_dataset("freesolv")
    >>> len(ds), ds.task, ds.target_names, ds.source
    (628, 'regression', ['freesolv'], 'bundled:freesolv')
    >>> load_dataset("freesolv", duplicates="median")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    qemlflow.errors.ConfigError: unknown duplicate policy 'median'; use one of mean, first, ...
    """
    return dataset_from_raw(
        read_raw(source),
        smiles_column=smiles_column,
        target_columns=target_columns,
        task=task,
        duplicates=duplicates,
        standardize=standardize,
        tautomer=tautomer,
        limits=limits,
        header=header,
        chemistry=chemistry,
    )


def dataset_from_raw(
    raw: RawData,
    *,
    smiles_column: str | None = None,
    target_columns: str | Sequence[str] | None = None,
    task: Task | None = None,
    duplicates: DuplicatePolicy = "mean",
    standardize: bool = True,
    tautomer: bool = False,
    limits: MoleculeLimits = DEFAULT_LIMITS,
    header: bool | None = None,
    chemistry: ChemistryPolicy = DEFAULT_POLICY,
) -> Dataset:
    """Build a Dataset from raw file bytes; the options are those of :func:`load_dataset`."""
    if duplicates not in DUPLICATE_POLICIES:
        raise ConfigError(
            f"unknown duplicate policy {duplicates!r}",
            f"use one of {', '.join(DUPLICATE_POLICIES)}",
        )
    if task is not None and task not in TASKS:
        raise ConfigError(f"unknown task {task!r}", f"use one of {', '.join(TASKS)}")
    bundled = raw.source.startswith("bundled:")
    reading = f"bundled dataset {raw.name!r}" if bundled else f"'{raw.filename}'"
    name, source_text, label, digest = raw.name, raw.source, raw.label, raw.digest
    entry: BundledDataset | None = BUNDLED.get(name) if source_text.startswith("bundled:") else None
    molecules = open_molecules(raw.data, name=raw.filename, label=reading, header=header)
    requested = smiles_column or (entry.smiles_column if entry else None)
    # The column is found before the rows are read: naming it may settle a .smi header.
    smiles_col = "" if molecules.format == "sdf" else molecules.smiles_column(requested)
    table = molecules.table()
    table.columns = [str(c) for c in table.columns]
    columns = list(table.columns)
    if molecules.format == "sdf":  # its properties are known once it is read
        smiles_col = find_smiles_column(table, reading, requested)
    if isinstance(target_columns, str):
        targets = [target_columns]
    elif target_columns is not None:
        targets = list(target_columns)
    elif entry is not None:
        targets = list(entry.target_columns)
    else:
        targets = _target_columns(table, smiles_col, label)
    if not targets:
        raise DataError(f"no target columns given for {label}", f"name them with {_TARGET_FLAG}")
    for column in targets:
        if column not in columns:
            raise _missing_column("target column", column, columns, label, _TARGET_FLAG)
    if smiles_col in targets or len(set(targets)) != len(targets):
        raise DataError(
            f"target columns {targets} repeat a column or include the SMILES column {smiles_col!r}",
            f"list each label column once with {_TARGET_FLAG}",
        )

    y_rows, bad = _labels(table, targets, label)
    resolved = _resolve_task(y_rows, task, targets, label)
    n = len(table)
    status = ["rejected"] * n
    reason = [""] * n
    detail = [""] * n
    mol_index = [-1] * n
    record_errors: dict[int, tuple[str, str]] = table.attrs.get(RECORD_ERRORS_ATTR, {})
    raw_smiles = table[smiles_col].tolist()
    standardized = _standardize_all(raw_smiles, standardize, tautomer, limits, chemistry)
    groups: dict[str, list[int]] = {}
    for i, value in enumerate(raw_smiles):
        result = (
            standardized[value] if isinstance(value, str) else parse_smiles(value, limits=limits)
        )
        if i in record_errors:
            reason[i], detail[i] = record_errors[i]
        elif result.smiles is None:
            reason[i], detail[i] = str(result.reason), result.detail
        elif bad[i]:
            reason[i], detail[i] = "non_numeric_label", bad[i]
        elif np.isnan(y_rows[i]).all():
            reason[i] = "missing_label"
            detail[i] = (
                f"no label in column {targets[0]!r}"
                if len(targets) == 1
                else f"no label in any of the {len(targets)} target columns"
            )
        else:
            groups.setdefault(result.smiles, []).append(i)

    smiles: list[str] = []
    labels: list[np.ndarray[Any, np.dtype[np.float64]]] = []
    for canonical, members in groups.items():
        merged, conflict = _merge_labels(y_rows[members], duplicates, resolved, targets)
        if merged is None:
            for i in members:
                reason[i] = "conflicting_duplicate"
                detail[i] = f"standardized SMILES {canonical!r}: {conflict}"
            continue
        first = members[0]
        status[first], mol_index[first] = "ok", len(smiles)
        # Merged copies are listed in rejected.csv: a label conflict names its resolution.
        for i in members[1:]:
            status[i], mol_index[i] = "merged", len(smiles)
            reason[i] = "label_conflict" if conflict else "merged_duplicate"
            detail[i] = f"merged into row {first} (standardized SMILES {canonical!r})" + (
                f"; {conflict}" if conflict else ""
            )
        smiles.append(canonical)
        labels.append(merged)

    rows = pd.DataFrame(
        {
            "row": np.arange(n, dtype=np.int64),
            "input_smiles": [
                "" if v is None or v is pd.NA or v != v else str(v) for v in raw_smiles
            ],
            "status": status,
            "mol_index": np.asarray(mol_index, dtype=np.int64),
            "reason": reason,
            "detail": detail,
        }
    )
    y = np.vstack(labels) if labels else np.empty((0, len(targets)))
    return Dataset(
        name=name,
        smiles=smiles,
        y=y,
        target_names=targets,
        task=resolved,
        rows=rows,
        source=source_text,
        smiles_column=smiles_col,
        source_digest=digest,
        table=table,
    )
