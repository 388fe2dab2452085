"""A fitted model's content digest: parameters, learned arrays and weights, never metadata.

A model file is a pickle, and a pickle carries more than the model: the scikit-learn
version each estimator was saved with, the library versions QeMLflow records, the pickle
protocol. Two files can therefore differ byte for byte while holding the same weights.
:func:`model_content` walks the fitted object instead, in a fixed order, and hashes what
the model computes with:

- NumPy arrays by dtype, shape and bytes (structured arrays field by field, so padding
  bytes never count); NumPy scalars and Python primitives by exact value (floats in hex);
- mappings by sorted key, sequences in order, sets sorted by their members' digests;
- LightGBM boosters by their model dump without the version line and the training
  parameters block (the same trees, leaf values and feature information);
- torch tensors and modules by their values (``state_dict``);
- any other object by the state it pickles (``__getstate__`` or ``__reduce_ex__``) and its
  class name.

Known metadata is set aside rather than hashed (``_sklearn_version``, the predictor's
recorded library ``versions``); it is kept, so that two models can say how their metadata
differs. Nothing depends on object identity or hash randomization, so the digest is the
same in every process.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "METADATA_ATTRIBUTES",
    "ModelContent",
    "content_differences",
    "content_digest",
    "metadata_differences",
    "model_content",
]

# Attributes that describe how an object was saved, not what it computes.
METADATA_ATTRIBUTES = frozenset({"_sklearn_version", "versions"})
# Attributes that only exist as caches rebuilt on demand (never part of a model's content).
_CACHE_ATTRIBUTES = frozenset({"_network_cache"})
_MAX_SHOWN = 5


@dataclass(frozen=True)
class _Leaf:
    digest: str
    value: Any = field(repr=False, compare=False)


@dataclass
class ModelContent:
    """What a fitted object holds: one digest per leaf (by path), and its metadata.

    ``digest`` is the sha256 of every ``path, leaf digest`` in walk order; ``metadata``
    maps each set-aside attribute's path to its value (as text).
    """

    digest: str
    leaves: dict[str, _Leaf]
    metadata: dict[str, str]


def content_digest(obj: Any) -> str:
    """Return the sha256 of a fitted object's content, independent of pickle metadata.

    Examples
    --------
    >>> import numpy as np
    >>> a = {"coef_": np.array([1.0, 2.0]), "_sklearn_version": "1.5.0"}
    >>> b = {"coef_": np.array([1.0, 2.0]), "_sklearn_version": "1.6.1"}
    >>> content_digest(a) == content_digest(b)
    True
    >>> content_digest(a) == content_digest({**a, "coef_": np.array([1.0, 2.5])})
    False
    """
    return model_content(obj).digest


def model_content(obj: Any) -> ModelContent:
    """Walk ``obj`` deterministically; return its content digest, leaves and metadata."""
    walker = _Walker()
    walker.walk(obj, "model")
    total = hashlib.sha256()
    for path, leaf in walker.leaves.items():
        total.update(f"{path}\t{leaf.digest}\n".encode())
    return ModelContent(total.hexdigest(), walker.leaves, walker.metadata)


def _sha(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()


def _primitive(value: Any) -> str | None:
    """The digest of a primitive value, or None when ``value`` is no primitive."""
    if value is None or isinstance(value, bool):
        return _sha(b"const", repr(value).encode())
    if isinstance(value, int):
        return _sha(b"int", str(value).encode())
    if isinstance(value, float):
        return _sha(b"float", value.hex().encode())
    if isinstance(value, complex):
        return _sha(b"complex", value.real.hex().encode(), value.imag.hex().encode())
    if isinstance(value, str):
        return _sha(b"str", value.encode("utf-8", "surrogatepass"))
    if isinstance(value, bytes | bytearray):
        return _sha(b"bytes", bytes(value))
    return None


def _array_digest(array: np.ndarray) -> str:
    if array.dtype.names:
        # Field by field: the padding bytes of a structured array are never initialized.
        parts = [_array_digest(np.ascontiguousarray(array[name])) for name in array.dtype.names]
        return _sha(b"record", repr(array.shape).encode(), *(p.encode() for p in parts))
    contiguous = np.ascontiguousarray(array)
    return _sha(
        b"array",
        contiguous.dtype.str.encode(),
        repr(contiguous.shape).encode(),
        contiguous.tobytes(),
    )


def _lightgbm_dump(booster: Any) -> str:
    """A booster's model text without the lines that name the LightGBM version or the
    training parameters (a newer LightGBM lists more of them for the same trees)."""
    kept: list[str] = []
    in_parameters = False
    for line in str(booster.model_to_string(num_iteration=-1)).splitlines():
        if line.startswith("version="):
            continue
        if line == "parameters:":
            in_parameters = True
            continue
        if in_parameters:
            in_parameters = line != "end of parameters"
            continue
        kept.append(line)
    return "\n".join(kept)


@dataclass(frozen=True)
class _BoosterDump:
    """A LightGBM model dump, kept to say how many trees differ."""

    text: str

    def trees(self) -> list[str]:
        return self.text.split("\nTree=")[1:]


def _class_name(obj: Any) -> str:
    # The qualified name, not the module: a class that moves between private modules in a
    # library release computes the same thing.
    return str(getattr(type(obj), "__qualname__", type(obj).__name__))


class _Walker:
    def __init__(self) -> None:
        self.leaves: dict[str, _Leaf] = {}
        self.metadata: dict[str, str] = {}
        # Objects on the current path, to stop at reference cycles (compared by identity,
        # which never reaches the digest).
        self._open: dict[int, str] = {}

    def leaf(self, path: str, digest: str, value: Any) -> None:
        self.leaves[path] = _Leaf(digest, value)

    def walk(self, obj: Any, path: str) -> None:
        digest = _primitive(obj)
        if digest is not None:
            self.leaf(path, digest, obj)
            return
        if isinstance(obj, np.ndarray) and obj.dtype != object:
            self.leaf(path, _array_digest(obj), obj)
            return
        if isinstance(obj, np.generic):
            self.leaf(path, _array_digest(np.asarray(obj)), obj)
            return
        if isinstance(obj, type) or (callable(obj) and hasattr(obj, "__qualname__")):
            name = f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"
            self.leaf(path, _sha(b"callable", name.encode()), name)
            return
        if id(obj) in self._open:
            self.leaf(path, _sha(b"cycle", self._open[id(obj)].encode()), None)
            return
        self._open[id(obj)] = path
        try:
            self._walk_container(obj, path)
        finally:
            del self._open[id(obj)]

    def _walk_container(self, obj: Any, path: str) -> None:
        if isinstance(obj, np.ndarray):  # dtype object: walk its members
            self.leaf(f"{path}.<shape>", _sha(b"shape", repr(obj.shape).encode()), obj.shape)
            for i, item in enumerate(obj.ravel().tolist()):
                self.walk(item, f"{path}[{i}]")
            return
        if isinstance(obj, Mapping):
            self._walk_mapping(obj, path)
            return
        if isinstance(obj, list | tuple):
            self.leaf(f"{path}.<type>", _sha(b"type", _class_name(obj).encode()), None)
            for i, item in enumerate(obj):
                self.walk(item, f"{path}[{i}]")
            return
        if isinstance(obj, set | frozenset):
            members = sorted(content_digest(item) for item in obj)
            self.leaf(path, _sha(b"set", *(m.encode() for m in members)), sorted(members))
            return
        if self._walk_library_object(obj, path):
            return
        self._walk_object(obj, path)

    def _walk_mapping(self, obj: Mapping[Any, Any], path: str, *, attributes: bool = False) -> None:
        labelled = []
        for key, value in obj.items():
            label = key if isinstance(key, str) else f"<{content_digest(key)[:16]}>"
            labelled.append((label, key, value))
        for label, key, value in sorted(labelled, key=lambda item: item[0]):
            child = f"{path}.{label}"
            if attributes and key in _CACHE_ATTRIBUTES:
                continue
            if key in METADATA_ATTRIBUTES and (attributes or key == "_sklearn_version"):
                self.metadata[child] = _describe(value)
                continue
            self.walk(value, child)

    def _walk_library_object(self, obj: Any, path: str) -> bool:
        """Objects whose pickled state is no good as content: LightGBM boosters, torch."""
        module = type(obj).__module__ or ""
        if module.startswith("lightgbm") and _class_name(obj) == "Booster":
            text = _lightgbm_dump(obj)
            self.leaf(path, _sha(b"lightgbm", text.encode()), _BoosterDump(text))
            return True
        torch = sys.modules.get("torch")
        # Only once torch is imported can an object be a tensor (a model of a subclass of
        # torch.nn.Module lives in another module, so the module name does not say).
        if torch is not None and hasattr(torch, "Tensor"):
            if isinstance(obj, torch.Tensor):
                array = obj.detach().cpu().numpy()
                self.leaf(path, _array_digest(array), array)
                return True
            if isinstance(obj, torch.nn.Module):
                self.leaf(f"{path}.<type>", _sha(b"type", _class_name(obj).encode()), None)
                self._walk_mapping(dict(obj.state_dict()), path)
                return True
            if isinstance(obj, torch.device | torch.dtype):
                self.leaf(path, _sha(b"torch", str(obj).encode()), str(obj))
                return True
        return False

    def _walk_object(self, obj: Any, path: str) -> None:
        self.leaf(f"{path}.<type>", _sha(b"type", _class_name(obj).encode()), _class_name(obj))
        args, state = _state(obj)
        if args:
            self.walk(args, f"{path}.<args>")
        if (
            isinstance(state, tuple)
            and len(state) == 2
            and all(isinstance(part, dict | None) for part in state)
        ):
            # (dict, slots), as object.__getstate__ gives for classes with __slots__.
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, Mapping):
            self._walk_mapping(state, path, attributes=True)
        elif state is not None:
            self.walk(state, f"{path}.<state>")


def _state(obj: Any) -> tuple[tuple[Any, ...], Any]:
    """The constructor arguments and the state ``obj`` pickles (``__reduce_ex__``): for a
    plain object its ``__getstate__``; for an extension type such as scikit-learn's
    ``Tree`` also the arguments it is rebuilt from."""
    try:
        reduced = obj.__reduce_ex__(4)
    except Exception:  # an object that cannot be pickled has no state to compare
        return (), None
    if isinstance(reduced, str):
        return (), reduced
    args = tuple(reduced[1]) if len(reduced) > 1 and reduced[1] else ()
    if args and isinstance(args[0], type):
        args = args[1:]  # copyreg.__newobj__(cls, *args): the class is already hashed
    return args, reduced[2] if len(reduced) > 2 else None


def _describe(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {v}" for k, v in sorted(value.items(), key=lambda kv: str(kv[0])))
    return str(value)


def content_differences(old: ModelContent, new: ModelContent) -> list[str]:
    """Say which parameters and arrays differ between two models' contents.

    Arrays say how many entries differ and the largest absolute difference; parameters
    give both values; at most five are listed, then a count of the rest.
    """
    paths = list(dict.fromkeys([*old.leaves, *new.leaves]))
    changed = [p for p in paths if old.leaves.get(p) != new.leaves.get(p)]
    # Parameters first, the outermost first: a changed seed or setting of the model
    # explains the changes in the parts it made.
    changed.sort(
        key=lambda p: (
            not _is_parameter(old.leaves.get(p), new.leaves.get(p)),
            p.count(".") + p.count("["),
        )
    )
    said = [_leaf_difference(p, old.leaves.get(p), new.leaves.get(p)) for p in changed[:_MAX_SHOWN]]
    if len(changed) > _MAX_SHOWN:
        said.append(f"{len(changed) - _MAX_SHOWN} more parameters or arrays differ")
    return said


def _is_parameter(old: _Leaf | None, new: _Leaf | None) -> bool:
    return all(leaf is not None and _primitive(leaf.value) is not None for leaf in (old, new))


def _leaf_difference(path: str, old: _Leaf | None, new: _Leaf | None) -> str:
    if old is None:
        return f"{path} only in the recomputed model"
    if new is None:
        return f"{path} only in the recorded model"
    before, after = old.value, new.value
    if isinstance(before, _BoosterDump) and isinstance(after, _BoosterDump):
        old_trees, new_trees = before.trees(), after.trees()
        if len(old_trees) != len(new_trees):
            return f"{path}: {len(old_trees)} -> {len(new_trees)} trees"
        differ = sum(a != b for a, b in zip(old_trees, new_trees, strict=True))
        return f"{path}: {differ} of {len(old_trees)} trees differ"
    if isinstance(before, np.ndarray) and isinstance(after, np.ndarray):
        return f"{path}: {_array_change(before, after)}"
    if _primitive(before) is not None and _primitive(after) is not None:
        return f"{path}: {before!r} -> {after!r}"
    return f"{path} differs"


def _array_change(old: np.ndarray, new: np.ndarray) -> str:
    if old.shape != new.shape or old.dtype != new.dtype:
        return f"{old.dtype}{list(old.shape)} -> {new.dtype}{list(new.shape)}"
    if old.dtype.names or old.dtype.kind not in "biuf":
        fields = old.dtype.names or ()
        differing = [n for n in fields if not np.array_equal(old[n], new[n], equal_nan=True)]
        return f"fields {', '.join(differing)} differ" if differing else "values differ"
    a, b = old.astype(np.float64), new.astype(np.float64)
    differs = ~((a == b) | (np.isnan(a) & np.isnan(b)))
    count = int(np.count_nonzero(differs))
    delta = float(np.nanmax(np.abs(a[differs] - b[differs]))) if count else 0.0
    return f"{count} of {old.size} entries differ (largest difference {delta:.3g})"


def metadata_differences(old: ModelContent, new: ModelContent) -> list[str]:
    """Say how the set-aside metadata differs, one line per attribute and change.

    Examples
    --------
    >>> old = model_content([{"_sklearn_version": "1.5.0"}, {"_sklearn_version": "1.5.0"}])
    >>> new = model_content([{"_sklearn_version": "1.5.2"}, {"_sklearn_version": "1.5.2"}])
    >>> metadata_differences(old, new)
    ['_sklearn_version 1.5.0 -> 1.5.2 (2 objects)']
    """
    grouped: dict[tuple[str, str, str], int] = {}
    for path in dict.fromkeys([*old.metadata, *new.metadata]):
        before, after = old.metadata.get(path, "absent"), new.metadata.get(path, "absent")
        if before == after:
            continue
        name = path.rsplit(".", 1)[-1]
        if name == "versions":
            for change in _version_changes(before, after):
                grouped[(name, *change)] = grouped.get((name, *change), 0) + 1
            continue
        grouped[(name, before, after)] = grouped.get((name, before, after), 0) + 1
    lines = []
    for (name, before, after), count in grouped.items():
        if name == "versions":
            lines.append(f"{before} -> {after} (library versions recorded in the model)")
        else:
            plural = f" ({count} objects)" if count > 1 else ""
            lines.append(f"{name} {before} -> {after}{plural}")
    return lines


def _version_changes(before: str, after: str) -> list[tuple[str, str]]:
    def parse(text: str) -> dict[str, str]:
        pairs = (item.rsplit(" ", 1) for item in text.split(", ") if " " in item)
        return {pair[0]: pair[1] for pair in pairs}

    old, new = parse(before), parse(after)
    return [
        (f"{name} {old.get(name, 'absent')}", new.get(name, "absent"))
        for name in sorted(set(old) | set(new))
        if old.get(name) != new.get(name)
    ]
