"""Featurizers from plain, JSON-compatible specs, and the one-call ``featurize``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.base import clone

from qemlflow.errors import FeaturizerError
from qemlflow.features.base import Featurizer
from qemlflow.features.concat import Concat
from qemlflow.features.descriptors import PhysChemDescriptors, RDKitDescriptors
from qemlflow.features.fingerprints import ECFP, FCFP, MACCS, AtomPair, Avalon, ErG, Torsion
from qemlflow.features.structure import SmilesColumn

__all__ = [
    "FEATURIZERS",
    "PARAMETER_LIMITS",
    "FeaturizerSpec",
    "code_versions",
    "featurize",
    "make_featurizer",
]

FEATURIZERS: dict[str, type[Featurizer]] = {
    cls.type_name: cls
    for cls in (
        ECFP,
        FCFP,
        MACCS,
        AtomPair,
        Torsion,
        Avalon,
        ErG,
        RDKitDescriptors,
        PhysChemDescriptors,
        SmilesColumn,
        Concat,
    )
}
"""Spec type name -> featurizer class."""

_FINGERPRINT_LIMITS = {"size": (65_536, "1024 to 4096"), "radius": (10, "2 or 3")}
PARAMETER_LIMITS: dict[str, dict[str, tuple[int, str]]] = {
    "ecfp": _FINGERPRINT_LIMITS,
    "fcfp": _FINGERPRINT_LIMITS,
    "atompair": {"size": _FINGERPRINT_LIMITS["size"]},
    "torsion": {"size": _FINGERPRINT_LIMITS["size"]},
    "avalon": {"size": _FINGERPRINT_LIMITS["size"]},
    "*": {"n_jobs": (1024, "1, or -1 for all cores")},
}
"""Featurizer type -> parameter -> (largest value, typical values); ``*`` is every type.

Far beyond any useful setting, these stop a typo from asking for terabytes of features
or hours of hashing: a 10**11-bit fingerprint would fail deep inside NumPy instead.
"""

FeaturizerSpec = str | Mapping[str, Any] | Sequence[Any] | Featurizer
"""A type name, a dict with ``"type"`` and parameters, a list (concatenation), or a featurizer."""


def make_featurizer(spec: FeaturizerSpec) -> Featurizer:
    """Build a featurizer from a spec: a type name, a dict, or a list (= concatenation).

    ``make_featurizer(f.to_spec())`` rebuilds a featurizer equal to ``f``. A featurizer
    passed in is returned as an unfitted copy.

    Examples
    --------
    >>> make_featurizer("ecfp")
    ECFP()
    >>> make_featurizer({"type": "ecfp", "radius": 3, "counts": True})
    ECFP(counts=True, radius=3)
    >>> make_featurizer([{"type": "fcfp"}, "maccs"]).n_features_out
    2215
    >>> make_featurizer({"type": "ecfp", "radious": 3})
    Traceback (most recent call last):
    ...
    qemlflow.errors.FeaturizerError: unknown parameter 'radious' for featurizer 'ecfp'; \
allowed: chirality, counts, features, n_jobs, radius, size
    """
    featurizer = _build(spec)
    featurizer._validate()
    _check_limits(featurizer)
    return featurizer


def _check_limits(featurizer: Featurizer) -> None:
    """Raise FeaturizerError when a parameter is above its :data:`PARAMETER_LIMITS` bound."""
    if isinstance(featurizer, Concat):
        for part in featurizer.featurizers:
            _check_limits(part)
    name = featurizer.type_name
    params = featurizer.get_params(deep=False)
    limits = {**PARAMETER_LIMITS["*"], **PARAMETER_LIMITS.get(name, {})}
    for key, (top, typical) in limits.items():
        value = params.get(key)
        if isinstance(value, int | np.integer) and not isinstance(value, bool) and value > top:
            raise FeaturizerError(
                f"{name} parameter {key!r} is {value}, above the limit of {top}",
                f"set {key} to at most {top} (typical: {typical})",
            )


def _build(spec: FeaturizerSpec) -> Featurizer:
    if isinstance(spec, Featurizer):
        built: Featurizer = clone(spec)
        return built
    if isinstance(spec, str):
        return _featurizer_class(spec)()
    if isinstance(spec, Mapping):
        return _build_from_mapping(spec)
    if isinstance(spec, Sequence) and not isinstance(spec, bytes):
        return _concat([_build(part) for part in spec])
    raise FeaturizerError(
        f"a featurizer spec must be a name, dict or list, got {type(spec).__name__}",
        'write e.g. "ecfp", {"type": "ecfp", "radius": 2} or ["ecfp", "rdkit2d"]',
    )


def _featurizer_class(name: object) -> type[Featurizer]:
    cls = FEATURIZERS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise FeaturizerError(
            f"unknown featurizer type {name!r}",
            f"use one of: {', '.join(sorted(FEATURIZERS))}",
        )
    return cls


def _build_from_mapping(spec: Mapping[str, Any]) -> Featurizer:
    if "type" not in spec:
        raise FeaturizerError(
            f"featurizer spec {dict(spec)!r} has no 'type' key",
            f"add 'type': one of {', '.join(sorted(FEATURIZERS))}",
        )
    name = spec["type"]
    cls = _featurizer_class(name)
    params = {key: value for key, value in spec.items() if key != "type"}
    allowed = sorted(cls._get_param_names())
    for key in params:
        if key not in allowed:
            raise FeaturizerError(
                f"unknown parameter {key!r} for featurizer {name!r}",
                f"allowed: {', '.join(allowed)}",
            )
    if cls is Concat and "featurizers" in params:
        parts = params["featurizers"]
        if isinstance(parts, str | Mapping) or not isinstance(parts, Sequence):
            raise FeaturizerError(
                f"concat 'featurizers' must be a list of specs, got {parts!r}",
                'write e.g. {"type": "concat", "featurizers": ["ecfp", "rdkit2d"]}',
            )
        params["featurizers"] = [_build(part) for part in parts]
        return _concat(**params)
    return cls(**params)


def _concat(featurizers: list[Featurizer], n_jobs: int = 1) -> Concat:
    """A concatenation of numeric featurizers; the SMILES column cannot join one."""
    if any(isinstance(part, SmilesColumn) for part in featurizers):
        raise FeaturizerError(
            "the 'smiles' featurizer cannot be combined with other featurizers",
            "use features: smiles on its own (the D-MPNN adds RDKit descriptors itself "
            "with params: {descriptors: rdkit2d})",
        )
    return Concat(featurizers=featurizers, n_jobs=n_jobs)


def featurize(
    smiles: Any, spec: FeaturizerSpec = "ecfp", n_jobs: int = 1
) -> NDArray[np.floating[Any]]:
    """Return the feature matrix of ``smiles`` for ``spec``: one row per input, NaN rows if invalid.

    Examples
    --------
    >>> import numpy as np
    >>> x = featurize(["CCO", "c1ccccc1", "C1CC"], "maccs")
    >>> x.shape, bool(np.isnan(x[2]).all())
    ((3, 167), True)
    """
    featurizer = make_featurizer(spec).set_params(n_jobs=n_jobs)
    return featurizer.fit_transform(smiles)  # type: ignore[no-any-return]


def code_versions(*specs: FeaturizerSpec | None) -> dict[str, str]:
    """The code versions above 1 of the featurizers in ``specs`` (``None`` is skipped).

    What a key names for them (:attr:`Featurizer.code_version`); empty while none of them
    was ever fixed.

    Examples
    --------
    >>> code_versions("ecfp", None, [{"type": "maccs"}, "rdkit2d"])
    {}
    """
    versions: dict[str, str] = {}
    for spec in specs:
        if spec is not None:
            versions.update(make_featurizer(spec).code_versions())
    return dict(sorted(versions.items()))
