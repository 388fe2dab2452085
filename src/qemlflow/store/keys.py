"""Canonical JSON and content keys: the identity of every step in QeMLflow.

``canonical_json`` is the one serialization used wherever a hash is taken over
structured data, so that the same content always yields the same bytes, in any language.
It is the JSON Canonicalization Scheme (RFC 8785, "JCS"), written by Trail of Bits'
``rfc8785`` library, applied to the content once normalized:

- mapping keys must be strings (``{1: ...}`` is refused rather than silently turned into
  ``{"1": ...}``, which would collide); JCS sorts them by UTF-16 code units;
- no whitespace, UTF-8 (non-ASCII characters are kept, not ``\\u``-escaped);
- numbers are written as ECMAScript writes them (JCS section 3.2.2.3): shortest
  round-trip digits, and **an integral float loses its fraction**: ``1.0`` is written
  ``1``, so ``1`` and ``1.0`` are the same content (as they are to JavaScript, Go's
  ``float64`` or any JSON reader), ``1e21`` is written ``1e+21`` and ``-0.0`` is ``0``;
- integers must lie within +-(2**53 - 1), the range a JSON number holds exactly
  everywhere; a larger one is refused (pass it as a string);
- NaN and infinities are **refused** (:class:`~qemlflow.store.errors.StoreError`): they
  have no JSON form and ``nan != nan`` makes them useless as identity; callers encode
  "missing" as ``None``;
- tuples become lists; sets and frozensets become lists sorted by their canonical form;
  NumPy scalars and arrays become Python numbers and lists; paths become strings;
  dataclasses and pydantic models become their field dicts. Anything else is refused.

Before RFC 8785, hashes were taken over Python's ``json.dumps`` (sorted keys, compact,
``1.0`` kept as ``1.0``): :func:`legacy_canonical_json` keeps that encoder, only so that
audit events written with it still verify. docs/keys.md gives every key formula.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

import rfc8785

from qemlflow.store.errors import StoreError

__all__ = [
    "HASH_SCHEME",
    "LEGACY_HASH_SCHEME",
    "canonical_json",
    "content_key",
    "integral_float_paths",
    "legacy_canonical_json",
    "plain_json",
    "sha256_hex",
]

HASH_SCHEME = "jcs"
"""The name recorded with hashes taken over :func:`canonical_json` (RFC 8785)."""
LEGACY_HASH_SCHEME = "legacy-json"
"""Hashes over Python's ``json.dumps`` (QeMLflow before RFC 8785): verified, never written."""


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
    # Only orders set members (any total order will do) and backs the legacy encoder.
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def canonical_json(obj: Any) -> bytes:
    """Return the RFC 8785 (JCS) encoding of ``obj``, normalized, as UTF-8 bytes.

    Equal content gives equal bytes, whatever the key order or container type, and any
    JCS implementation (JavaScript, Go, Java, Rust) gives the same bytes for the same
    JSON value. Note that JCS writes an integral float without its fraction: ``1.0``
    becomes ``1``.

    Raises
    ------
    StoreError
        If ``obj`` holds NaN or an infinity, an integer beyond +-(2**53 - 1), a
        non-string mapping key, or a value of a type with no canonical form.

    Examples
    --------
    >>> canonical_json({"b": 1, "a": [1.0, 0.1, "é"]})
    b'{"a":[1,0.1,"\\xc3\\xa9"],"b":1}'
    >>> canonical_json({"x": (1, 2)}) == canonical_json({"x": [1, 2]})
    True
    >>> canonical_json({"alpha": 1.0}) == canonical_json({"alpha": 1})
    True
    """
    normalized = _normalize(obj, "value")
    try:
        return rfc8785.dumps(normalized)
    except rfc8785.IntegerDomainError as exc:
        raise StoreError(
            f"value holds the integer {exc.args[0] if exc.args else ''} beyond +-(2**53 - 1), "
            "which JSON numbers do not hold exactly",
            "pass such a number as a string",
        ) from None
    except rfc8785.CanonicalizationError as exc:  # pragma: no cover - normalized first
        raise StoreError(f"value has no RFC 8785 form ({exc})", "pass plain JSON data") from None


def legacy_canonical_json(obj: Any) -> bytes:
    """Return the pre-RFC 8785 encoding (Python ``json.dumps``, sorted, compact).

    Kept **only** to verify audit events hashed before QeMLflow moved to JCS (their
    ``hash_scheme`` is ``"legacy-json"``); nothing new is hashed with it. It differs from
    :func:`canonical_json` in numbers (``1.0`` stays ``1.0``, ``1e-07`` vs ``1e-7``) and in
    the order of keys outside the Basic Multilingual Plane.

    Examples
    --------
    >>> legacy_canonical_json({"b": 1, "a": [1.0, 0.1]})
    b'{"a":[1.0,0.1],"b":1}'
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


def integral_float_paths(obj: Any) -> list[list[str | int]]:
    """Return where ``obj`` holds a float with an integral value (``1.0``), in document order.

    JCS writes ``1.0`` as ``1``, but for scikit-learn ``max_features=1`` is one feature
    and ``max_features=1.0`` all of them: :func:`content_key` hashes these paths next to
    the parameters, so the two stay different keys. A path lists the keys and indices
    from the top (``["params", "max_features"]``); mapping keys are visited in sorted
    order.

    Examples
    --------
    >>> integral_float_paths({"b": [0.5, 2.0], "a": 1, "c": {"max_features": 1.0}})
    [['b', 1], ['c', 'max_features']]
    """
    found: list[list[str | int]] = []

    def visit(value: Any, path: list[str | int]) -> None:
        if isinstance(value, float) and value.is_integer():
            found.append(path)
        elif isinstance(value, dict):
            for key in sorted(value):
                visit(value[key], [*path, key])
        elif isinstance(value, list):
            for index, item in enumerate(value):
                visit(item, [*path, index])

    visit(_normalize(obj, "value"), [])
    return found


def content_key(
    step: str,
    version: str | int,
    params: Mapping[str, Any],
    inputs: Iterable[str],
    libraries: Mapping[str, str],
) -> str:
    """Return the content key of a step: sha256 hex of the JCS bytes of its description.

    The description is ``{"step", "version", "params", "inputs", "libraries"}``, plus
    ``"integral_floats"`` (:func:`integral_float_paths` of ``params``) when the parameters
    hold a float such as ``1.0``, which JCS would otherwise not tell from the integer
    ``1``. docs/keys.md states the formula with a worked example.

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
        Versions of the libraries whose behaviour the output depends on (and
        ``runtime:`` settings that change the bits).

    Examples
    --------
    >>> k = content_key("featurize", 1, {"radius": 2}, ["ab" * 32], {"rdkit": "2024.9.6"})
    >>> len(k), k == content_key("featurize", 1, {"radius": 2}, ["ab" * 32],
    ...                          {"rdkit": "2024.9.6"})
    (64, True)
    >>> k == content_key("featurize", 1, {"radius": 3}, ["ab" * 32], {"rdkit": "2024.9.6"})
    False
    >>> content_key("fit", 1, {"max_features": 1}, [], {}) == content_key(
    ...     "fit", 1, {"max_features": 1.0}, [], {})
    False
    """
    description: dict[str, Any] = {
        "step": step,
        "version": version,
        "params": dict(params),
        "inputs": list(inputs),
        "libraries": dict(libraries),
    }
    floats = integral_float_paths(description["params"])
    if floats:
        description["integral_floats"] = floats
    return sha256_hex(canonical_json(description))
