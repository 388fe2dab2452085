"""One reader for files of molecules, with one set of rules for every command.

``predict``, ``screen``, ``data add``, ``run`` and the prediction service's uploads all read
through :func:`open_molecules`. The rules:

- **Formats.** ``.csv``, ``.tsv``, ``.txt``, ``.smi`` (each optionally ``.gz``; gzip is
  also recognized by its first bytes), ``.sdf`` (optionally ``.gz``) and ``.parquet``.
- **Delimiter.** Sniffed from the first lines: the first candidate of the format that
  splits every sampled line into the same number (> 1) of fields.
- **Header.** A table's first line names its columns, unless ``header=False``
  (``--no-header``): then the columns are numbered ``1``, ``2``, ... A ``.smi`` file has a
  header only when its first line names a SMILES column (``smiles``, ``smi``, ``mol``, or
  the one given); otherwise every line is ``SMILES [whitespace name]`` (the Daylight
  convention: the name is the rest of the line) and its columns are ``smiles``, ``name``.
- **Rows.** Every record is a row, in order: rows in == rows out. Blank lines are not
  rows of a table, but in a headerless ``.smi`` every line is a molecule (an empty one is
  an invalid molecule, kept in place). A row with more fields than the header is a
  per-row error (``too_many_fields``), never read with a shifted value (empty trailing
  fields are allowed); its detail keeps the fields as read, so the rejected row loses
  nothing. A row with fewer fields has missing values.
- **Columns.** The SMILES column is the one named (a name, or a number in a headerless
  file), else one named smiles/smi/mol (any case), else the one column whose name
  contains "smiles", else the only column. A named SMILES column that is itself a
  molecule means the file has no header row: that is an error naming ``--no-header``
  rather than a silently lost first row (``header=True`` reads it as a header anyway).
- **Limits.** A row (or SD record) over ``max_field_bytes`` is a per-row error
  (``row_too_large``); a quoted field that runs past it (an unclosed quote) stops the read
  with a one-line DataError. ``max_bytes`` (decompressed) and ``max_rows``, when set, stop
  the read with :class:`~qemlflow.errors.InputTooLargeError` as soon as they are passed,
  whatever the compression; a Parquet file is checked against its footer first.
"""

from __future__ import annotations

import csv
import io
import os
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from qemlflow.errors import DataError, InputTooLargeError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DEFAULT_MAX_FIELD_BYTES",
    "HEADER_OPTION",
    "ID_OPTION",
    "SMILES_HINT",
    "SMILES_OPTION",
    "SUPPORTED_EXTENSIONS",
    "Molecule",
    "MoleculeFile",
    "ReadLimits",
    "find_smiles_column",
    "open_molecules",
    "shown_columns",
]

#: The CLI options every reading command has (hints in error messages name these).
SMILES_OPTION = "--smiles-column"
ID_OPTION = "--id-column"
HEADER_OPTION = "--no-header"
#: How hints name the SMILES column and the header: the CLI option, then the setting of
#: the Python API and of a run config (``dataset:`` section).
SMILES_HINT = f"{SMILES_OPTION} / smiles_column"
#: Largest row (line, or SD record) read as one molecule, by default.
DEFAULT_MAX_FIELD_BYTES = 1 << 20
#: Extensions understood; each text format may also end in ``.gz``.
SUPPORTED_EXTENSIONS = (".csv", ".tsv", ".txt", ".smi", ".sdf", ".parquet")
_ALIASES = {".smiles": ".smi", ".pq": ".parquet"}
_DELIMITERS = {
    ".csv": (",", ";", "\t", "|"),
    ".tsv": ("\t", ",", ";", "|"),
    ".txt": ("\t", ",", ";", "|", " "),
    ".smi": ("\t", " ", ",", ";", "|"),
}
_SMILES_NAMES = ("smiles", "smi", "mol")
_SNIFF_LINES = 50
_SNIFF_BYTES = 1 << 16
_TOO_LONG = "\ud800"  # marks an over-long line; a decoded file can never contain it
_LONG = b"\x00(line too long)"  # what _Lines.next_raw returns for one (compared by identity)
_SUPPORTED_TEXT = ", ".join(
    [*SUPPORTED_EXTENSIONS, *(f"{ext}.gz" for ext in SUPPORTED_EXTENSIONS if ext != ".parquet")]
)
_PARQUET_BATCH_BYTES = 16 << 20  # decoded bytes one Parquet batch may hold at most


@dataclass(frozen=True)
class ReadLimits:
    """How much one read may take in.

    ``max_field_bytes`` bounds one row (or SD record): a longer one is a per-row error.
    ``max_bytes`` (decompressed input) and ``max_rows``, when set, end the read with
    InputTooLargeError; the service sets them, the CLI leaves them unset.
    """

    max_field_bytes: int = DEFAULT_MAX_FIELD_BYTES
    max_bytes: int | None = None
    max_rows: int | None = None


@dataclass(frozen=True, slots=True)
class Molecule:
    """One input row as a molecule to score: its SMILES, its id, and a read error."""

    smiles: str
    id: str
    error: str = ""
    """Empty, or ``"reason: detail"`` when the row could not be read (then never scored)."""


@dataclass(frozen=True, slots=True)
class _Record:
    """One row: values aligned with the columns, or a reason and detail."""

    number: int  # 1-based line of a text file, SD record number, or Parquet row
    values: list[str | None]
    reason: str = ""
    detail: str = ""


def _format_of(name: str) -> tuple[str, bool]:
    """(extension, named .gz) of a file name; unsupported names raise."""
    lower = name.lower()
    gzipped = lower.endswith(".gz")
    stem = lower[:-3] if gzipped else lower
    for alias, ext in _ALIASES.items():
        if stem.endswith(alias):
            stem = stem[: -len(alias)] + ext
    ext = next((e for e in SUPPORTED_EXTENSIONS if stem.endswith(e)), "")
    if not ext or (gzipped and ext == ".parquet"):
        suffix = "".join(Path(name).suffixes) or "none"
        raise DataError(
            f"cannot read {name!r}: unsupported file type (extension {suffix})",
            f"use one of {_SUPPORTED_TEXT}",
        )
    return ext, gzipped


def _looks_binary(data: bytes) -> bool:
    if b"\x00" in data:
        return True
    controls = sum(1 for b in data if b < 32 and b not in (9, 10, 12, 13))
    return controls > max(1, len(data) // 100)


class _CountingReader(io.RawIOBase):
    """A binary file that counts the bytes read through it (progress on compressed input)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.raw.readinto(buffer)  # type: ignore[attr-defined]
        self.count += n or 0
        return int(n or 0)

    def close(self) -> None:
        self.raw.close()
        super().close()


def _too_large(what: str, limit: int, setting: str, fix: str) -> InputTooLargeError:
    return InputTooLargeError(f"{what} (the limit is {limit:,}, {setting})", fix)


class _Lines:
    """Lines of a decompressed stream: each bounded, the total bounded.

    ``next_raw`` returns a line without its ending (``\n``, ``\r\n`` or ``\r``), the
    marker ``_LONG`` for a line over ``max_field_bytes`` (skipped to its end), or None at
    the end; ``decode`` turns it into text (bytes that are not UTF-8 survive as lone
    surrogates, found later per row).
    """

    def __init__(self, stream: IO[bytes], limits: ReadLimits, label: str, gzipped: bool) -> None:
        self.stream = stream
        self.limits = limits
        self.label = label
        self.gzipped = gzipped
        self.total = 0
        self.number = 0
        self._pending: list[bytes] = []

    def _read(self, size: int) -> bytes:
        try:
            return self.stream.readline(size)
        except (OSError, EOFError, zlib.error):
            if not self.gzipped:
                raise
            raise DataError(
                f"{self.label} is not a valid gzip file (it breaks off after "
                f"{self.total:,} decompressed bytes)",
                "decompress it or gzip it again",
            ) from None

    def _count(self, size: int) -> None:
        self.total += size
        limit = self.limits.max_bytes
        if limit is not None and self.total > limit:
            raise _too_large(
                f"{self.label} is over {limit:,} bytes decompressed",
                limit,
                "max_upload_bytes",
                "send a smaller file, or split it over several requests",
            )

    def next_raw(self) -> bytes | None:
        if self._pending:
            self.number += 1
            return self._pending.pop()
        limit = self.limits.max_field_bytes
        raw = self._read(limit + 1)
        if not raw:
            return None
        self.number += 1
        self._count(len(raw))
        if len(raw) > limit and not raw.endswith(b"\n"):
            while True:  # skip the rest of the line, still counting what is decompressed
                more = self._read(1 << 16)
                self._count(len(more))
                if not more or more.endswith(b"\n"):
                    return _LONG
        body = raw[:-1] if raw.endswith(b"\n") else raw
        body = body[:-1] if body.endswith(b"\r") else body
        if b"\r" in body:  # old Mac line ends: more lines in this one
            first, *rest = body.split(b"\r")
            self._pending = rest[::-1]
            return first
        return body

    @staticmethod
    def decode(raw: bytes, first: bool) -> str:
        if raw is _LONG:
            return _TOO_LONG
        text = raw.decode("utf-8", "surrogateescape")
        if first and text.startswith("\ufeff"):
            text = text[1:]
        return text


def _bad_text(text: str) -> str:
    """Why a decoded line cannot be trusted (not UTF-8), or ''."""
    if text.isascii():
        return ""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        byte = ord(text[exc.start]) - 0xDC00
        return f"is not UTF-8 text (byte 0x{byte:02x})"
    return ""


def _split_line(line: str, delimiter: str) -> list[str]:
    try:
        return next(csv.reader([line], delimiter=delimiter, skipinitialspace=delimiter == " "), [])
    except csv.Error:
        return [line]


def _sniff_delimiter(lines: list[str], candidates: tuple[str, ...]) -> str:
    """Pick the first candidate that splits every sampled line into the same >1 fields."""
    for delimiter in candidates:
        counts = {len(_split_line(line, delimiter)) for line in lines}
        if len(counts) == 1 and counts.pop() > 1:
            return delimiter
    for delimiter in candidates:  # ragged rows: trust the delimiter that splits the header
        if len(_split_line(lines[0], delimiter)) > 1:
            return delimiter
    return candidates[0]  # a single column


def _mangle(names: list[str]) -> list[str]:
    """Column names as pandas makes them: 'Unnamed: i' for blanks, 'a.1' for repeats."""
    out: list[str] = []
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        name = name if name.strip() else f"Unnamed: {i}"
        base, k = name, seen.get(name, 0)
        while name in seen:
            k += 1
            name = f"{base}.{k}"
        seen[base] = k
        seen[name] = 0
        out.append(name)
    return out


def _is_molecule(text: str) -> bool:
    """Whether a column name is really a molecule (two or more heavy atoms)."""
    if not text or len(text) > 300 or not text.strip() or _bad_text(text):
        return False
    from qemlflow.chem import parse_smiles

    result = parse_smiles(text)
    return result.mol is not None and result.mol.GetNumHeavyAtoms() >= 2


def _names_smiles(name: str, requested: str | None) -> bool:
    lower = name.strip().lower()
    return name == requested or lower in _SMILES_NAMES or "smiles" in lower


def shown_columns(columns: Iterable[object], most: int = 8, width: int = 40) -> str:
    """Column names for an error message, bounded: at most ``most`` names of at most
    ``width`` characters each, then how many more. A binary file read as text can have a
    "header" of thousands of characters; the error must still be one readable line.

    Examples
    --------
    >>> shown_columns(["id", "smiles", "y"])
    'id, smiles, y'
    >>> shown_columns([f"c{i}" for i in range(12)], most=3)
    'c0, c1, c2 ... and 9 more'
    >>> shown_columns(["x" * 50])
    'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…'
    """
    names = [str(c) if len(str(c)) <= width else str(c)[: width - 1] + "…" for c in columns]
    more = len(names) - most
    return ", ".join(names[:most]) + (f" ... and {more} more" if more > 0 else "")


def find_smiles_column(
    columns: list[str], label: str, requested: str | None = None, fix: str = ""
) -> str:
    """The SMILES column among named ``columns``: ``requested`` if there, else one named
    smiles/smi/mol (any case), else the one column whose name contains "smiles", else the
    only column. Errors name the columns there are and the option that fixes it.

    Examples
    --------
    >>> find_smiles_column(["id", "Canonical_SMILES", "y"], "x.csv")
    'Canonical_SMILES'
    """
    shown = shown_columns(columns)
    if requested is not None:
        if requested in columns:
            return requested
        near = [c for c in columns if c.lower() == requested.lower()]
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise DataError(
            f"column {requested!r} not found in {label}{hint} (columns: {shown})",
            f"pass the right name with {SMILES_HINT}",
        )
    for wanted in _SMILES_NAMES:
        for column in columns:
            if column.lower() == wanted:
                return column
    containing = [c for c in columns if "smiles" in c.lower()]
    if len(containing) == 1:
        return containing[0]
    if len(columns) == 1 and not _is_molecule(columns[0]):
        return columns[0]
    raise DataError(
        f"no SMILES column found in {label} (columns: {shown})", f"{fix}name it with {SMILES_HINT}"
    )


class MoleculeFile:
    """A file (or uploaded bytes) of molecules, checked and ready to read row by row.

    Use :func:`open_molecules`. ``columns`` are the table's column names (for an SD file:
    ``smiles`` and the properties found so far); ``molecules`` streams SMILES and ids;
    ``table`` reads everything into a DataFrame.
    """

    def __init__(
        self,
        *,
        path: Path | None,
        data: bytes | None,
        name: str,
        label: str,
        header: bool | None,
        limits: ReadLimits,
    ) -> None:
        self.path = path
        self._data = data
        self.name = name
        self.label = label
        self.limits = limits
        self.ext, named_gz = _format_of(name)
        self.format = self.ext.lstrip(".")
        self.position = 0
        """Bytes of the file read so far (rows, for Parquet): progress."""
        size = len(data) if data is not None else path.stat().st_size if path else 0
        self.size = size
        if size == 0:
            raise DataError(
                f"{label} is empty (0 bytes)", "give a file with a header row and data rows"
            )
        self.gzipped = named_gz or (self.ext != ".parquet" and self._head(2) == b"\x1f\x8b")
        self.requested_header = header
        self.header = True
        self.delimiter = ","
        self.columns: list[str] = []
        self._header_fields: list[str] = []  # the first line as split, named or not
        if self.ext == ".parquet":
            if header is False:
                raise DataError(
                    f"{label} is a Parquet file: its columns always have names",
                    f"drop {HEADER_OPTION}",
                )
            self._open_parquet_schema()
        elif self.ext == ".sdf":
            if header is False:
                raise DataError(
                    f"{label} is an SD file: it has no header row", f"drop {HEADER_OPTION}"
                )
            self.columns = ["smiles"]
        else:
            self._prepare_text(header)

    # -- opening -------------------------------------------------------------------------

    @property
    def total(self) -> int:
        """The size of the input for progress: bytes, or rows for Parquet."""
        return self._parquet_rows if self.ext == ".parquet" else self.size

    @property
    def unit(self) -> str:
        """``bytes``, or ``rows`` for Parquet."""
        return "rows" if self.ext == ".parquet" else "bytes"

    def _head(self, n: int) -> bytes:
        if self._data is not None:
            return self._data[:n]
        assert self.path is not None
        with self.path.open("rb") as file:
            return file.read(n)

    def _raw_stream(self) -> tuple[IO[bytes], _CountingReader | None]:
        if self._data is not None:
            return io.BytesIO(self._data), None
        assert self.path is not None
        counter = _CountingReader(self.path.open("rb", buffering=0))
        return io.BufferedReader(counter, buffer_size=1 << 20), counter

    def _lines(self) -> tuple[_Lines, IO[bytes], _CountingReader | None]:
        raw, counter = self._raw_stream()
        stream: IO[bytes] = raw
        if self.gzipped:
            import gzip

            stream = gzip.GzipFile(fileobj=raw)  # type: ignore[assignment]
        return _Lines(stream, self.limits, self.label, self.gzipped), stream, counter

    def _prepare_text(self, header: bool | None) -> None:
        lines, stream, _ = self._lines()
        try:
            sample_raw: list[bytes] = []
            size = 0
            while len(sample_raw) < _SNIFF_LINES and size < _SNIFF_BYTES:
                raw = lines.next_raw()
                if raw is None:
                    break
                sample_raw.append(raw)
                size += len(raw)
        finally:
            stream.close()
        if _looks_binary(b"".join(r for r in sample_raw if r is not _LONG)):
            raise DataError(
                f"{self.label} is not a text table (it contains binary data)",
                "give a CSV, TSV, SMILES, SD or Parquet file",
            )
        texts = [_Lines.decode(r, i == 0) for i, r in enumerate(sample_raw)]
        nonblank = [t for t in texts if t.strip() and t != _TOO_LONG]
        if not nonblank:
            raise DataError(f"{self.label} is empty", "give a file with a header row and data rows")
        leading = next(t for t in texts if t.strip())
        if leading == _TOO_LONG and header is not False and self.ext != ".smi":
            raise DataError(
                f"the first line of {self.label} is over {self.limits.max_field_bytes:,} bytes",
                "give a file whose first line is a header row",
            )
        self.delimiter = _sniff_delimiter(nonblank, _DELIMITERS[self.ext])
        first = self._split(nonblank[0])
        if self.ext == ".smi" and header is None:
            header = not _is_molecule_text(first[0] if first else "") and any(
                _names_smiles(f, None) for f in first
            )
        self.header = header is not False
        if not self.header:
            if self.ext == ".smi":
                self.columns = ["smiles", "name"]
            else:
                self.columns = [str(i) for i in range(1, len(first) + 1)]
        else:
            bad = _bad_text(nonblank[0])
            if bad:
                raise DataError(f"the header of {self.label} {bad}", "save the file as UTF-8")
            self.columns = _mangle(first)
        self._header_fields = first

    def _split(self, line: str) -> list[str]:
        return _split_line(line, self.delimiter)

    def with_header_names(self, requested: str | None) -> None:
        """Decide a ``.smi`` header when the requested column is on its first line."""
        if (
            self.ext == ".smi"
            and self.requested_header is None
            and not self.header
            and requested is not None
            and requested in self._header_fields
            and not _is_molecule_text(requested)
        ):
            self.header = True
            self.columns = _mangle(self._header_fields)

    # -- columns -------------------------------------------------------------------------

    def smiles_column(self, requested: str | None = None) -> str:
        """The SMILES column: ``requested`` (a name, or a number when headerless), else
        found by name, else the only column. Errors name the option that fixes them."""
        self.with_header_names(requested)
        columns = self.columns
        if requested is not None:
            shown = shown_columns(columns)
            found = self._column(requested)
            if found is None:
                near = [c for c in columns if c.lower() == requested.lower()]
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise DataError(
                    f"column {requested!r} not found in {self.label}{hint} (columns: {shown})",
                    f"pass the right name with {SMILES_HINT}",
                )
            if (
                self.header
                and self.requested_header is None
                and self.ext != ".parquet"
                and _is_molecule(requested)
            ):
                raise DataError(
                    f"the SMILES column {requested!r} given with {SMILES_OPTION} is a molecule: "
                    f"{self.label} seems to have no header row, and reading one would drop "
                    "that row",
                    f"pass {HEADER_OPTION} / header=False (columns are then numbered: "
                    f"{SMILES_OPTION} 1), or {SMILES_OPTION} for a column that exists",
                )
            return found
        if not self.header:
            return columns[0]
        fix = ""
        if self.ext not in (".parquet", ".sdf") and _is_molecule(self._header_fields[0]):
            fix = f"its first line looks like a molecule: pass {HEADER_OPTION} / header=False, or "
        return find_smiles_column(columns, self.label, None, fix)

    def id_column(self, requested: str | None) -> str | None:
        """The id column: ``requested`` (checked), the name of a headerless ``.smi``, or
        None (ids are then row numbers)."""
        if requested is None:
            return "name" if self.ext == ".smi" and not self.header else None
        if self.ext == ".sdf":
            return requested  # a property: records without it get their row number
        found = self._column(requested)
        if found is None:
            raise DataError(
                f"no column {requested!r} in {self.label} (columns: {shown_columns(self.columns)})",
                f"name the id column with {ID_OPTION}",
            )
        return found

    def _column(self, requested: str) -> str | None:
        if requested in self.columns:
            return requested
        if not self.header and requested.isdigit() and 1 <= int(requested) <= len(self.columns):
            return self.columns[int(requested) - 1]
        return None

    # -- rows ----------------------------------------------------------------------------

    def _records(self) -> Iterator[_Record]:
        if self.ext == ".sdf":
            raise AssertionError("SD files are read by _sdf_records")
        lines, stream, counter = self._lines()
        try:
            if self.ext == ".smi" and not self.header:
                yield from self._smi_records(lines, counter)
            else:
                yield from self._table_records(lines, counter)
        finally:
            stream.close()

    def _check_rows(self, count: int) -> None:
        limit = self.limits.max_rows
        if limit is not None and count > limit:
            raise _too_large(
                f"{self.label} has more than {limit:,} rows",
                limit,
                "max_batch",
                "split the molecules over several requests",
            )

    def _smi_records(self, lines: _Lines, counter: _CountingReader | None) -> Iterator[_Record]:
        split = None if self.delimiter in "\t " else self.delimiter
        count = 0
        while (raw := lines.next_raw()) is not None:
            text = _Lines.decode(raw, lines.number == 1)
            count += 1
            self._check_rows(count)
            self.position = counter.count if counter else lines.total
            if text == _TOO_LONG:
                yield _too_long_record(lines.number, self.limits)
                continue
            bad = _bad_text(text) or ("contains a NUL byte" if "\x00" in text else "")
            if bad:
                yield _Record(lines.number, [], "unreadable_row", f"line {lines.number} {bad}")
                continue
            parts = text.split(split, 1) if split else text.split(None, 1)
            smiles = parts[0].strip() if parts else ""
            name = parts[1].strip() if len(parts) > 1 else None
            yield _Record(lines.number, [smiles, name or None])

    def _table_records(self, lines: _Lines, counter: _CountingReader | None) -> Iterator[_Record]:
        # Rows are bounded by max_field_bytes already; csv's own limit must not be lower.
        csv.field_size_limit(max(csv.field_size_limit(), self.limits.max_field_bytes + 1))
        feed = _Feed(lines, self.limits, self.label)
        reader = csv.reader(
            feed, delimiter=self.delimiter, skipinitialspace=self.delimiter == " ", strict=False
        )
        width = len(self.columns)
        header_pending = self.header
        count = 0
        while True:
            feed.begin()
            try:
                fields = next(reader, None)
            except csv.Error as exc:
                fields = None
                problem = str(exc).strip() or "cannot split it into fields"
                error: tuple[str, str] | None = ("unreadable_row", problem)
            else:
                if fields is None:
                    return
                error = None
            self.position = counter.count if counter else lines.total
            if feed.ended_inside:
                raise DataError(
                    f"{self.label}: line {feed.start} opens a quoted field that is never closed",
                    f"check the quotes on line {feed.start}",
                )
            if error is None and feed.blank:
                if feed.too_long:
                    error = ("row_too_large", "")
                else:
                    continue  # a blank line is not a row of a table
            if header_pending:
                header_pending = False
                continue
            count += 1
            self._check_rows(count)
            number = feed.start
            if feed.too_long:
                yield _too_long_record(number, self.limits)
            elif error is not None:
                yield _Record(number, [], error[0], f"line {number}: {error[1]}")
            elif feed.bad:
                yield _Record(number, [], "unreadable_row", f"line {feed.bad_line} {feed.bad}")
            elif len(fields or []) > width and any(f.strip() for f in (fields or [])[width:]):
                yield _Record(number, [], "too_many_fields", self._ragged(number, fields or []))
            else:
                values: list[str | None] = list((fields or [])[:width])
                values += [None] * (width - len(values))
                yield _Record(number, values)

    def _ragged(self, number: int, fields: list[str]) -> str:
        """The detail of a row with more fields than the columns: the count, the fix, and
        the fields as read (a Python list, one line), so that the rejected row keeps its
        content where its values cannot be trusted to sit in their columns."""
        first = "the header" if self.header else "the first line"
        shown = "tab" if self.delimiter == "\t" else repr(self.delimiter)
        return (
            f"line {number} has {len(fields)} fields but {first} has {len(self.columns)} "
            f"(quote a value that contains the delimiter {shown}); fields as read: {fields!r}"
        )

    def _sdf_records(self) -> Iterator[tuple[int, Any]]:
        """(record number, SdfRecord) for every SD record, bounded like text rows."""
        from qemlflow.chem.molecule import Reason
        from qemlflow.chem.sdf import SdfRecord, _record

        lines, stream, counter = self._lines()
        limit = self.limits.max_field_bytes
        first = True
        try:
            current: list[str] = []
            size = 0
            oversized = False
            number = 0
            while True:
                raw = lines.next_raw()
                if raw is not None:
                    if first and raw is not _LONG and _looks_binary(raw[:_SNIFF_BYTES]):
                        raise DataError(
                            f"{self.label} is not a text table (it contains binary data)",
                            "give a CSV, TSV, SMILES, SD or Parquet file",
                        )
                    text = _Lines.decode(raw, first)
                    first = False
                if raw is None or text.strip() == "$$$$":
                    if raw is None and not any(line.strip() for line in current):
                        return
                    number += 1
                    self._check_rows(number)
                    self.position = counter.count if counter else lines.total
                    if oversized:
                        detail = f"SD record {number} is over {limit:,} bytes"
                        yield number, SdfRecord("", "", {}, "row_too_large", detail)
                    else:
                        bad = next((_bad_text(line) for line in current if _bad_text(line)), "")
                        if bad:
                            detail = f"SD record {number} {bad}"
                            yield number, SdfRecord("", "", {}, Reason.UNPARSABLE.value, detail)
                        else:
                            yield number, _record(current, number)
                    if raw is None:
                        return
                    current, size, oversized = [], 0, False
                    continue
                size += len(raw)
                if text == _TOO_LONG or size > limit:
                    oversized, current = True, []
                elif not oversized:
                    current.append(text)
        finally:
            stream.close()

    def molecules(
        self, smiles_column: str | None = None, id_column: str | None = None
    ) -> Iterator[Molecule]:
        """Stream every row as a Molecule, in order; ids default to 1-based row numbers."""
        if self.ext == ".parquet":
            yield from self._parquet_molecules(smiles_column, id_column)
            return
        if self.ext == ".sdf":
            if smiles_column not in (None, "smiles"):
                raise DataError(
                    f"{self.label} is an SD file: its SMILES come from the molecule blocks",
                    f"drop {SMILES_OPTION}",
                )
            for number, rec in self._sdf_records():
                ident = rec.properties.get(id_column) if id_column else rec.title
                error = f"{rec.reason}: {rec.detail}" if rec.reason else ""
                yield Molecule(rec.smiles, ident or str(number), error)
            return
        smiles_at = self.columns.index(self.smiles_column(smiles_column))
        ident = self.id_column(id_column)
        id_at = self.columns.index(ident) if ident is not None else None
        for row, rec in enumerate(self._records(), start=1):
            if rec.reason:
                yield Molecule("", str(row), f"{rec.reason}: {rec.detail}")
                continue
            smiles = rec.values[smiles_at]
            name = rec.values[id_at] if id_at is not None else None
            yield Molecule(smiles or "", name if name else str(row))

    # -- Parquet -------------------------------------------------------------------------

    def _parquet_file(self) -> Any:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DataError(
                f"reading {self.label} needs pyarrow",
                "install it with: pip install 'qemlflow[parquet]'",
            ) from None
        source: Any = io.BytesIO(self._data) if self._data is not None else self.path
        try:
            return pq.ParquetFile(source)
        except Exception as exc:  # pyarrow raises its own error types for corrupt files
            raise self._parquet_error(exc) from None

    def _parquet_error(self, exc: Exception) -> DataError:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return DataError(
            f"{self.label} is not a readable Parquet file ({detail})",
            "check that the file is Parquet, or give a CSV file",
        )

    def _open_parquet_schema(self) -> None:
        file = self._parquet_file()
        with file:
            self.columns = [str(c) for c in file.schema_arrow.names]
            self._parquet_rows = int(file.metadata.num_rows)
        self._check_rows(self._parquet_rows)
        self._header_fields = self.columns

    def _parquet_molecules(
        self, smiles_column: str | None, id_column: str | None
    ) -> Iterator[Molecule]:
        import pyarrow as pa

        smiles_name = self.smiles_column(smiles_column)
        ident = self.id_column(id_column)
        wanted = [smiles_name] + ([ident] if ident is not None and ident != smiles_name else [])
        file = self._parquet_file()
        with file:
            meta = file.metadata
            at = [file.schema_arrow.get_field_index(c) for c in wanted]
            largest, total = 1, 0
            for g in range(meta.num_row_groups):
                group = meta.row_group(g)
                for i in at:
                    size = int(group.column(i).total_uncompressed_size)
                    largest, total = max(largest, size), total + size
            if self.limits.max_bytes is not None and total > self.limits.max_bytes:
                raise self._bytes_error()
            # A value is never larger than its column chunk: size batches so that one
            # batch of even the largest values stays small, whatever the footer claims.
            batch = max(1, min(65_536, _PARQUET_BATCH_BYTES // largest))
            decoded = row = 0
            try:
                batches = file.iter_batches(batch_size=batch, columns=wanted)
                for record_batch in batches:
                    columns = []
                    for k in range(len(wanted)):
                        array = record_batch.column(k)
                        if pa.types.is_dictionary(array.type):
                            array = array.cast(array.type.value_type)
                        columns.append(array.to_pylist())
                    for k in range(record_batch.num_rows):
                        row += 1
                        self._check_rows(row)
                        values = [_text(column[k]) for column in columns]
                        decoded += sum(len(v) for v in values)
                        if self.limits.max_bytes is not None and decoded > self.limits.max_bytes:
                            raise self._bytes_error()
                        name = values[wanted.index(ident)] if ident is not None else ""
                        ident_text = name or str(row)
                        if max(len(v) for v in values) > self.limits.max_field_bytes:
                            limit = self.limits.max_field_bytes
                            detail = f"row {row} has a value over {limit:,} bytes"
                            yield Molecule("", ident_text, f"row_too_large: {detail}")
                        else:
                            yield Molecule(values[0], ident_text)
                    self.position = row
            except (DataError, GeneratorExit):
                raise
            except Exception as exc:  # pyarrow's own errors on a corrupt file
                raise self._parquet_error(exc) from None

    def _bytes_error(self) -> InputTooLargeError:
        limit = self.limits.max_bytes or 0
        return _too_large(
            f"{self.label} is over {limit:,} bytes decompressed",
            limit,
            "max_upload_bytes",
            "send a smaller file, or split it over several requests",
        )

    # -- whole tables --------------------------------------------------------------------

    def table(self) -> pd.DataFrame:
        """Read every row into a DataFrame, typed as pandas types a CSV.

        A row that could not be read keeps its place with empty values; its reason and
        detail are in ``frame.attrs[RECORD_ERRORS_ATTR]`` keyed by row position.
        """

        from qemlflow.chem.sdf import RECORD_ERRORS_ATTR

        frame: pd.DataFrame
        if self.ext == ".parquet":
            file = self._parquet_file()
            with file:
                try:
                    frame = file.read().to_pandas()
                except Exception as exc:  # pyarrow's own errors on a corrupt file
                    raise self._parquet_error(exc) from None
        elif self.ext == ".sdf":
            frame = self._sdf_table()
            if frame.empty:
                raise DataError(
                    f"{self.label} has no SD records", "give an SD file with at least one molecule"
                )
        else:
            frame = self._text_table()
        if len(frame) == 0:
            raise DataError(
                f"{self.label} has a header ({shown_columns(frame.columns)}) but no data rows",
                "add at least one row of data",
            )
        frame.attrs.setdefault(RECORD_ERRORS_ATTR, {})
        return frame

    def _text_table(self) -> pd.DataFrame:
        import pandas as pd

        from qemlflow.chem.sdf import RECORD_ERRORS_ATTR

        # The rows, checked here, are written out again as a plain CSV and typed by
        # pandas: the same values get exactly the types (and floats) they always had.
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        if self.header:
            writer.writerow(self._header_fields)
        errors: dict[int, tuple[str, str]] = {}
        width = len(self.columns)
        for i, rec in enumerate(self._records()):
            if rec.reason:
                errors[i] = (rec.reason, rec.detail)
                writer.writerow([""] * width)
            else:
                writer.writerow(["" if v is None else v for v in rec.values])
        buffer.seek(0)
        try:
            frame = pd.read_csv(
                buffer,
                header=0 if self.header else None,
                names=None if self.header else self.columns,
                skip_blank_lines=False,
            )
        except pd.errors.EmptyDataError:
            raise DataError(
                f"{self.label} is empty", "give a file with a header row and data rows"
            ) from None
        frame.attrs[RECORD_ERRORS_ATTR] = errors
        return frame

    def _sdf_table(self) -> pd.DataFrame:
        import pandas as pd

        from qemlflow.chem.sdf import RECORD_ERRORS_ATTR

        # As qemlflow.chem.sdf.sdf_to_frame: smiles, then every property (numbers where
        # every given value is one); a property called smiles becomes smiles_property.
        records = [rec for _, rec in self._sdf_records()]
        names: dict[str, None] = {}
        for rec in records:
            names.update(dict.fromkeys(rec.properties))
        data: dict[str, list[object]] = {"smiles": [rec.smiles for rec in records]}
        for name in names:
            column = "smiles_property" if name == "smiles" else name
            data[column] = [rec.properties.get(name) for rec in records]
        frame = pd.DataFrame(data)
        for column in frame.columns[1:]:
            values = frame[column]
            numeric = pd.to_numeric(values, errors="coerce")
            given = values.notna() & (values.astype(str).str.strip() != "")
            if given.any() and bool(numeric[given].notna().all()):
                frame[column] = numeric.where(given)
        frame.attrs[RECORD_ERRORS_ATTR] = {
            i: (rec.reason, rec.detail) for i, rec in enumerate(records) if rec.reason
        }
        return frame


class _Feed:
    """The lines handed to csv.reader for one record at a time, bounded per record."""

    def __init__(self, lines: _Lines, limits: ReadLimits, label: str) -> None:
        self.lines = lines
        self.limit = limits.max_field_bytes
        self.label = label
        self.begin()

    def begin(self) -> None:
        self.blank = True
        self.ended_inside = False
        self.start = 0
        self.size = 0
        self.too_long = False
        self.bad = ""
        self.bad_line = 0

    def __iter__(self) -> _Feed:
        return self

    def __next__(self) -> str:
        raw = self.lines.next_raw()
        if raw is None:
            self.ended_inside = self.start != 0
            raise StopIteration
        number = self.lines.number
        text = _Lines.decode(raw, number == 1)
        continuing = self.start != 0
        if not continuing:
            self.start = number
        if text == _TOO_LONG:
            if continuing:
                raise self._runaway()
            self.too_long = True
            return ""
        self.size += len(raw)
        if self.size > self.limit:
            raise self._runaway()
        if not self.bad:
            self.bad = _bad_text(text)
            self.bad_line = number
        self.blank = self.blank and not text.strip()
        return text + "\n"  # csv joins the lines of a quoted field with it

    def _runaway(self) -> DataError:
        return DataError(
            f"{self.label}: the row starting on line {self.start} runs over "
            f"{self.limit:,} bytes (a quoted field that is never closed?)",
            f"check the quotes on line {self.start}",
        )


def _too_long_record(number: int, limits: ReadLimits) -> _Record:
    detail = f"line {number} is over {limits.max_field_bytes:,} bytes"
    return _Record(number, [], "row_too_large", detail)


def _is_molecule_text(text: str) -> bool:
    """Whether ``text`` parses as a SMILES (any size): the first field of a .smi line."""
    if not text or len(text) > 300 or _bad_text(text):
        return bool(text)
    from qemlflow.chem import parse_smiles

    return parse_smiles(text).ok


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def open_molecules(
    source: str | os.PathLike[str] | bytes,
    *,
    name: str | None = None,
    label: str | None = None,
    header: bool | None = None,
    limits: ReadLimits | None = None,
) -> MoleculeFile:
    """Open a file (a path, or raw bytes with its file ``name``) of molecules.

    The format comes from the name; the delimiter and (for ``.smi``) the header are
    found from the first lines. ``header=False`` reads a table without a header row
    (columns ``1``, ``2``, ...); ``header=True`` takes the first line as the header even
    when it looks like a molecule. See the module docstring for all the rules.

    Examples
    --------
    >>> mols = open_molecules(b"smiles,y\\nCCO,1\\nC,2,extra\\n", name="x.csv")
    >>> [(m.smiles, m.id, m.error) for m in mols.molecules()]  # doctest: +NORMALIZE_WHITESPACE
    [('CCO', '1', ''),
     ('', '2', "too_many_fields: line 3 has 3 fields but the header has 2 (quote a value
      that contains the delimiter ','); fields as read: ['C', '2', 'extra']")]
    """
    limits = limits or ReadLimits()
    if isinstance(source, bytes):
        file_name = name or "upload.csv"
        return MoleculeFile(
            path=None,
            data=source,
            name=file_name,
            label=label or repr(file_name),
            header=header,
            limits=limits,
        )
    path = Path(source)
    if path.is_dir():
        raise DataError(f"'{path}' is a directory, not a file", "give the path of a data file")
    _format_of(name or path.name)
    if not path.exists():
        raise DataError(f"file not found: '{path}'", "check the path")
    return MoleculeFile(
        path=path,
        data=None,
        name=name or path.name,
        label=label or f"'{path.name}'",
        header=header,
        limits=limits,
    )
