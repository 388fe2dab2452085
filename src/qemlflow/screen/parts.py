"""The work folder of a screen: a manifest, one verified part file per scored chunk, assembly.

``OUTPUT.parts/`` sits next to the output. ``manifest.json`` says what is being screened
(input digest and size, model digest, chunk size, options); ``part-00000012.arrow`` is
chunk 12's scored rows and ``part-00000012.json`` its record: the chunk index, the input
rows it covers, the sha256 of those input rows (ids and SMILES) and the part file's own
sha256. Every file is written atomically (temp file, fsync, rename), the record before its
part, so a screen killed at any moment leaves only whole parts with their records.
``--resume`` keeps a part only when its record matches the chunk it is resumed for and the
file still hashes to the recorded digest; anything else is scored again. Assembly re-checks
each part as it reads it, and streams the parts in order into the output with fixed writer
settings: identical parts give a byte-identical output, whichever engine scored them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qemlflow._atomic import write_atomic
from qemlflow.errors import ConfigError, QeMLflowError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["ScreenPartError", "TopK", "WorkFolder", "rows_digest", "sha256_file"]

MANIFEST = "manifest.json"
_FORMAT = "qemlflow.screen/3"  # 3: parts carry standardized_smiles
_PART_FORMAT = "qemlflow.screen-part/1"


class ScreenPartError(QeMLflowError):
    """A part file no longer matches its record; the output was not written."""


def rows_digest(ids: list[str], smiles: list[str]) -> str:
    """The sha256 of a chunk's input rows (ids and SMILES, in order).

    Examples
    --------
    >>> rows_digest(["1"], ["CCO"]) == rows_digest(["1"], ["CCO"]) != rows_digest(["2"], ["CCO"])
    True
    """
    return hashlib.sha256(json.dumps([ids, smiles], separators=(",", ":")).encode()).hexdigest()


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class WorkFolder:
    """``OUTPUT.parts/``: the manifest and the finished parts of one screen."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.path = output.with_name(output.name + ".parts")

    def start(self, manifest: dict[str, Any], *, resume: bool) -> set[int]:
        """Create the folder (or, resuming, check it is this screen's); return the done parts."""
        existing = self.path / MANIFEST
        wanted = {"format": _FORMAT, **manifest}
        if existing.is_file():
            if not resume:
                raise ConfigError(
                    f"an unfinished screen of '{self.output}' is in '{self.path}'",
                    f"add --resume to continue it, or delete '{self.path}' to start over",
                )
            recorded = json.loads(existing.read_text())
            for key, value in wanted.items():
                if recorded.get(key) != value:
                    raise ConfigError(
                        f"cannot resume: {key} differs from the interrupted screen's "
                        f"({recorded.get(key)!r} there, {value!r} now)",
                        f"screen with the same input, model and options, or delete '{self.path}'",
                    )
            return self.done()
        self.path.mkdir(parents=True, exist_ok=True)
        text = json.dumps(wanted, indent=2, sort_keys=True) + "\n"

        def write(path: Path) -> None:
            path.write_text(text)

        write_atomic(existing, write)
        return set()

    def part(self, index: int) -> Path:
        """Where chunk ``index``'s scored rows are kept."""
        return self.path / f"part-{index:08d}.arrow"

    def record(self, index: int) -> Path:
        """Where chunk ``index``'s part record is kept."""
        return self.path / f"part-{index:08d}.json"

    def done(self) -> set[int]:
        """The chunks whose part and record are both written (not yet checked)."""
        found = {int(p.stem.split("-")[1]) for p in self.path.glob("part-*.arrow")}
        return {i for i in found if self.record(i).is_file()}

    def write_part(self, index: int, first_row: int, table: pa.Table, input_digest: str) -> None:
        """Write chunk ``index``'s rows and their record (atomically: whole or absent).

        ``first_row`` is the input row of the chunk's first row, ``input_digest`` the
        :func:`rows_digest` of the input rows it was scored from.
        """
        import pyarrow as pa

        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        data = sink.getvalue().to_pybytes()
        entry = {
            "format": _PART_FORMAT,
            "index": index,
            "first_row": first_row,
            "rows": table.num_rows,
            "input_sha256": input_digest,
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        text = json.dumps(entry, sort_keys=True) + "\n"
        # The record first: a part on disk always has one (a record alone is not "done").
        write_atomic(self.record(index), lambda path: path.write_text(text))
        write_atomic(self.part(index), lambda path: path.write_bytes(data))

    def discard(self, index: int) -> None:
        """Delete chunk ``index``'s part and record (to score it again)."""
        self.part(index).unlink(missing_ok=True)
        self.record(index).unlink(missing_ok=True)

    def check(self, index: int, first_row: int, input_digest: str) -> str | None:
        """Why chunk ``index``'s part cannot be reused for the input rows from
        ``first_row`` whose digest is ``input_digest``; None when it can."""
        try:
            self._verified(index, first_row, input_digest)
        except ScreenPartError as exc:
            return exc.problem
        return None

    def read_part(self, index: int, first_row: int) -> pa.Table:
        """Chunk ``index``'s rows, after checking the file against its record and that they
        start at input row ``first_row``.

        Raises
        ------
        ScreenPartError
            The part or its record is missing, altered, or of another chunk.
        """
        import pyarrow as pa

        entry, data = self._verified(index, first_row, None)
        table = pa.ipc.open_file(pa.BufferReader(data)).read_all()
        if table.num_rows != entry["rows"]:
            raise self._mismatch(index, f"has {table.num_rows} rows, its record {entry['rows']}")
        return table

    def parts(self, count: int) -> Iterator[pa.Table]:
        """The parts 0 .. count-1, in order, each checked as it is read: together they must
        cover the input rows from the first on, without gap or overlap."""
        first_row = 0
        for index in range(count):
            table = self.read_part(index, first_row)
            first_row += table.num_rows
            yield table

    def _verified(
        self, index: int, first_row: int, input_digest: str | None
    ) -> tuple[dict[str, Any], bytes]:
        """The part's record and bytes, once both say they are chunk ``index`` from input row
        ``first_row`` (scored from rows with ``input_digest``, when given)."""
        try:
            entry = json.loads(self.record(index).read_text())
            data = self.part(index).read_bytes()
        except FileNotFoundError as exc:
            raise self._mismatch(index, f"is missing its {Path(str(exc.filename)).name}") from None
        except (OSError, ValueError) as exc:
            raise self._mismatch(index, f"has an unreadable record ({exc})") from None
        if not isinstance(entry, dict) or entry.get("format") != _PART_FORMAT:
            raise self._mismatch(index, "has no valid record")
        expected: dict[str, Any] = {"index": index, "first_row": first_row}
        if input_digest is not None:
            expected["input_sha256"] = input_digest
        for key, value in expected.items():
            if entry.get(key) != value:
                raise self._mismatch(
                    index, f"was written for {key} {entry.get(key)!r}, not {value!r}"
                )
        digest = hashlib.sha256(data).hexdigest()
        if digest != entry.get("sha256"):
            raise self._mismatch(
                index,
                f"hashes to {digest[:12]}, not to its recorded {str(entry.get('sha256'))[:12]}",
            )
        return entry, data

    def _mismatch(self, index: int, why: str) -> ScreenPartError:
        return ScreenPartError(
            f"part {index} in '{self.path}' {why}",
            "run the same command with --resume to score it again",
        )

    def remove(self) -> None:
        """Delete the work folder (after the output is written)."""
        shutil.rmtree(self.path, ignore_errors=True)


class TopK:
    """The ``k`` best rows seen so far, by one score column; ties go to the earlier row.

    ``ascending`` makes lower scores better. Rows without a score (errors) never rank.
    """

    def __init__(self, k: int, column: str, ascending: bool) -> None:
        self.k = k
        self.column = column
        self.ascending = ascending
        self.best: pa.Table | None = None
        self.rows = np.empty(0, dtype=np.int64)

    def add(self, table: pa.Table, first_row: int) -> None:
        """Offer a chunk's rows (``first_row`` is the input row of its first)."""
        import pyarrow as pa

        scores = table.column(self.column).to_numpy(zero_copy_only=False).astype(float)
        keep = np.flatnonzero(~np.isnan(scores))
        candidates = table.take(pa.array(keep))
        rows = keep.astype(np.int64) + first_row
        if self.best is not None:
            candidates = pa.concat_tables([self.best, candidates])
            rows = np.concatenate([self.rows, rows])
        values = candidates.column(self.column).to_numpy(zero_copy_only=False).astype(float)
        order = np.lexsort((rows, values if self.ascending else -values))[: self.k]
        self.best = candidates.take(pa.array(order))
        self.rows = rows[order]


def write_output(
    output: Path, tables: Iterator[pa.Table], schema: pa.Schema, chunk_size: int
) -> str:
    """Write the tables to ``output`` (Parquet or CSV by extension), atomically; return
    the output's sha256. Parquet gets one row group per table and fixed settings."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    def write(path: Path) -> None:
        if output.suffix.lower() == ".csv":
            with pa.OSFile(str(path), "wb") as sink, pacsv.CSVWriter(sink, schema) as writer:
                for table in tables:
                    writer.write_table(table)
            return
        with pq.ParquetWriter(
            str(path),
            schema,
            compression="zstd",
            compression_level=3,
            use_dictionary=False,
            write_statistics=True,
            version="2.6",
        ) as writer:
            for table in tables:
                writer.write_table(table, row_group_size=max(chunk_size, len(table), 1))

    output.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(output, write)
    return sha256_file(output)
