"""The work folder of a screen: a manifest, one part file per scored chunk, assembly.

``OUTPUT.parts/`` sits next to the output. ``manifest.json`` says what is being screened
(input digest and size, model digest, chunk size, options); ``part-00000012.arrow`` is
chunk 12's scored rows. Every file is written atomically (temp file, fsync, rename), so a
screen killed at any moment leaves only whole parts, and ``--resume`` scores the rest.
Assembly streams the parts in order into the output with fixed writer settings: identical
parts give a byte-identical output, whichever engine scored them.
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
from qemlflow.errors import ConfigError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["TopK", "WorkFolder", "sha256_file"]

MANIFEST = "manifest.json"
_FORMAT = "qemlflow.screen/1"


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

    def done(self) -> set[int]:
        """The chunks whose part is written."""
        return {int(p.stem.split("-")[1]) for p in self.path.glob("part-*.arrow")}

    def write_part(self, index: int, table: pa.Table) -> None:
        """Write chunk ``index``'s rows (atomically: a part is whole or absent)."""
        import pyarrow as pa

        def write(path: Path) -> None:
            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
                w.write_table(table)

        write_atomic(self.part(index), write)

    def read_part(self, index: int) -> pa.Table:
        """Chunk ``index``'s rows."""
        import pyarrow as pa

        with pa.memory_map(str(self.part(index))) as source:
            return pa.ipc.open_file(source).read_all()

    def parts(self, count: int) -> Iterator[pa.Table]:
        """The parts 0 .. count-1, in order (each read only when needed)."""
        for index in range(count):
            yield self.read_part(index)

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
