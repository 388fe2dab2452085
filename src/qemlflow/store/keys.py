"""Canonical JSON and content keys: the identity of every step in QeMLflow.

``canonical_json`` is the one serialization used wherever a hash is taken over
structured data, so that the same content always yields the same bytes:

- mapping keys are sorted and must be strings (``{1: ...}`` is refused rather than
  silently turned into ``{"1": ...}``, which would collide);
- no whitespace, UTF-8 (non-ASCII characters are kept, not ``\\u``-escaped);
- floats are written as Python's shortest round-trip ``repr`` (``0.1`` -> ``0.1``,
  ``1.0`` -> ``1.0``); ``1`` and ``1.0`` are therefore different content;
- NaN and infinities are **refused** (:class:`~qemlflow.store.errors.StoreError`): they
  have no JSON form and ``nan != nan`` makes them useless as identity; callers encode
  "missing" as ``None``;
- tuples become lists; sets and frozensets become lists sorted by their canonical form;
  NumPy scalars and arrays become Python numbers and lists; paths become strings;
  dataclasses and pydantic models become their field dicts. Anything else is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

from qemlflow.store.errors import StoreError

__all__ = ["canonical_json", "content_key", "plain_json", "sha256_hex"]


def sha256_hex(data: bytes) -> str:
    """Return the lowercase hex SHA-256 digest of ``data``.

    Examples
    --------
    >>> sha256_hex(b"")[:16]
    'e3b0c44298fc1c14'
    """
    return hashlib.sha256(data).hexdigest()


def _normalize(obj: Any, where: str, nan_as_none: bool = False) -> Any:
    if obj is None or isinstance(obj, bool | str):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        if not math.isfinite(obj):
            if nan_as_none:
                return None
            raise StoreError(
                f"{where} is {obj!r}, which has no canonical JSON form",
                "encode missing values as None and keep numbers finite",
            )
        return float(obj)
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            if not isinstance(key, str):
                raise StoreError(
                    f"{where} has a non-string key {key!r}",
                    "use string keys in content that is hashed",
                )
            out[key] = _normalize(value, f"{where}[{key!r}]", nan_as_none)
        return out
    if isinstance(obj, list | tuple):
        return [_normalize(v, f"{where}[{i}]", nan_as_none) for i, v in enumerate(obj)]
    if isinstance(obj, set | frozenset):
        items = [_normalize(v, f"{where} item", nan_as_none) for v in obj]
        return sorted(items, key=lambda v: _dumps(v))
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _normalize(dataclasses.asdict(obj), where, nan_as_none)
    model_dump = getattr(obj, "model_dump", None)
    if callable(model_dump):
        return _normalize(model_dump(mode="json"), where, nan_as_none)
    tolist = getattr(obj, "tolist", None)  # NumPy arrays and scalars
    if callable(tolist):
        return _normalize(tolist(), where, nan_as_none)
    raise StoreError(
        f"{where} is a {type(obj).__name__}, which has no canonical JSON form",
        "pass plain data (dict, list, str, int, float, bool, None)",
    )


def _dumps(obj: Any) -> str:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def canonical_json(obj: Any) -> bytes:
    """Return the canonical JSON encoding of ``obj`` as UTF-8 bytes.

    Equal content gives equal bytes, whatever the key order or container type.

    Raises
    ------
    StoreError
        If ``obj`` holds NaN or an infinity, a non-string mapping key, or a value of a
        type with no canonical form.

    Examples
    --------
    >>> canonical_json({"b": 1, "a": [1.0, 0.1, "é"]})
    b'{"a":[1.0,0.1,"\\xc3\\xa9"],"b":1}'
    >>> canonical_json({"x": (1, 2)}) == canonical_json({"x": [1, 2]})
    True
    """
    return _dumps(_normalize(obj, "value")).encode("utf-8")


def plain_json(obj: Any) -> Any:
    """Return ``obj`` as plain JSON data, the way JSON columns of the store hold it.

    Same conversions as :func:`canonical_json`, except that NaN and infinities become
    ``None`` (a metric can be undefined; JSON has no NaN).

    Examples
    --------
    >>> plain_json({"r2": float("nan"), "folds": (1, 2)})
    {'r2': None, 'folds': [1, 2]}
    """
    return _normalize(obj, "value", nan_as_none=True)


def content_key(
    step: str,
    version: str | int,
    params: Mapping[str, Any],
    inputs: Iterable[str],
    libraries: Mapping[str, str],
) -> str:
    """Return the content key of a step: sha256 of its canonical description.

    Parameters
    ----------
    step, version
        The step's name and the version of its implementation; bump the version when the
        code changes what it computes.
    params
        The step's parameters (canonicalized, so key order does not matter).
    inputs
        The keys of the step's inputs, in order (the order is part of the identity).
    libraries
        Versions of the libraries whose behaviour the output depends on.

    Examples
    --------
    >>> k = content_key("featurize", 1, {"radius": 2}, ["ab" * 32], {"rdkit": "2024.9.6"})
    >>> len(k), k == content_key("featurize", 1, {"radius": 2}, ["ab" * 32],
    ...                          {"rdkit": "2024.9.6"})
    (64, True)
    >>> k == content_key("featurize", 1, {"radius": 3}, ["ab" * 32], {"rdkit": "2024.9.6"})
    False
    """
    description = {
        "step": step,
        "version": version,
        "params": dict(params),
        "inputs": list(inputs),
        "libraries": dict(libraries),
    }
    return sha256_hex(canonical_json(description))
