"""A model's content digest over the shapes a fitted object can hold, and what
``content_differences`` / ``metadata_differences`` say when two contents differ: the
sentences ``qemlflow reproduce`` prints for a model that did not come back the same."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from qemlflow.models.content import (
    content_differences,
    content_digest,
    metadata_differences,
    model_content,
)


class _Slotted:
    __slots__ = ("a", "b")

    def __init__(self, a: Any, b: Any) -> None:
        self.a, self.b = a, b


class _Plain:
    def __init__(self, **state: Any) -> None:
        self.__dict__.update(state)


class _Unpicklable:
    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError("no pickling")


class _Rebuilt:
    """An object rebuilt from constructor arguments, as scikit-learn's ``Tree`` is."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __reduce_ex__(self, protocol: Any) -> Any:
        return (_Rebuilt, (self.size,))


class _ByName:
    def __reduce_ex__(self, protocol: Any) -> str:
        return "a_global_name"


def test_each_primitive_is_hashed_by_type_and_exact_value() -> None:
    values = [None, True, 1, 1.0, 1 + 0j, "1", b"1", bytearray(b"1")]
    digests = [content_digest(v) for v in values]
    # 1, 1.0, "1", 1+0j and True all differ: the type is part of the digest.
    assert len(set(digests[:-1])) == len(values) - 1
    assert content_digest(b"1") == content_digest(bytearray(b"1"))
    assert content_digest(0.1) != content_digest(0.1 + 1e-17 * 10)


def test_numpy_scalars_arrays_and_records() -> None:
    assert content_digest(np.float32(1.5)) == content_digest(np.float32(1.5))
    assert content_digest(np.float32(1.5)) != content_digest(np.float64(1.5))
    record = np.zeros(2, dtype=[("x", "i1"), ("y", "f8")])  # padding bytes never count
    other = record.copy()
    other["y"][1] = 2.0
    assert content_digest(record) == content_digest(record.copy())
    assert content_digest(record) != content_digest(other)
    objects = np.array([1, "a", None], dtype=object)
    leaves = model_content(objects).leaves
    assert "model.<shape>" in leaves and "model[1]" in leaves


def test_containers_sets_callables_and_cycles() -> None:
    assert content_digest([1, 2]) != content_digest((1, 2))  # the sequence type counts
    assert content_digest({3, 1, 2}) == content_digest(frozenset({2, 3, 1}))
    assert content_digest({1: "a", "k": 2}) == content_digest({"k": 2, 1: "a"})
    assert content_digest(np.mean) == content_digest(np.mean)
    assert content_digest(np.mean) != content_digest(np.median)
    assert content_digest(int) != content_digest(float)
    loop: list[Any] = [1]
    loop.append(loop)  # a reference cycle ends the walk instead of recursing forever
    assert content_digest(loop) == content_digest(loop)


def test_objects_by_their_pickled_state() -> None:
    assert content_digest(_Slotted(1, [2])) == content_digest(_Slotted(1, [2]))
    assert content_digest(_Slotted(1, [2])) != content_digest(_Slotted(1, [3]))
    # Metadata is set aside, caches are skipped: neither changes the digest.
    a = _Plain(coef_=np.ones(2), _sklearn_version="1.5", _network_cache=object())
    b = _Plain(coef_=np.ones(2), _sklearn_version="1.6")
    assert content_digest(a) == content_digest(b)
    assert content_digest(_Unpicklable()) == content_digest(_Unpicklable())
    assert "model.<state>" in model_content(_ByName()).leaves
    assert content_digest(_Rebuilt(3)) != content_digest(_Rebuilt(4))
    assert "model.<args>[0]" in model_content(_Rebuilt(3)).leaves


def test_lightgbm_boosters_by_their_trees() -> None:
    lightgbm = pytest.importorskip("lightgbm")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 3)), rng.normal(size=60)

    def fit(rounds: int) -> Any:
        data = lightgbm.Dataset(x, y, params={"verbose": -1})
        return lightgbm.train({"verbose": -1, "seed": 1}, data, num_boost_round=rounds)

    first, again, longer = fit(3), fit(3), fit(5)
    assert content_digest(first) == content_digest(again)
    said = content_differences(model_content(first), model_content(longer))
    assert said == ["model: 3 -> 5 trees"]
    ours, theirs = model_content({"b": fit(3)}), model_content({"b": fit(3)})
    ours.leaves["model.b"] = model_content(fit(3)).leaves["model"]
    deeper = lightgbm.train(
        {"verbose": -1, "seed": 1, "learning_rate": 0.5},
        lightgbm.Dataset(x, y, params={"verbose": -1}),
        num_boost_round=3,
    )
    theirs.leaves["model.b"] = model_content(deeper).leaves["model"]
    assert content_differences(ours, theirs) == ["model.b: 3 of 3 trees differ"]


def test_torch_tensors_and_modules_by_value() -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    layer = torch.nn.Linear(2, 1)
    same = torch.nn.Linear(2, 1)
    same.load_state_dict(layer.state_dict())
    assert content_digest(layer) == content_digest(same)
    with torch.no_grad():
        same.bias.add_(1.0)
    said = content_differences(model_content(layer), model_content(same))
    assert said == ["model.bias: 1 of 1 entries differ (largest difference 1)"]
    assert content_digest(torch.tensor([1.0])) != content_digest(torch.tensor([2.0]))
    assert content_digest(torch.float32) != content_digest(torch.float64)


def test_differences_name_parameters_first_then_arrays() -> None:
    old = model_content({"seed": 1, "w": np.array([1.0, 2.0, np.nan]), "gone": 1})
    new = model_content({"seed": 2, "w": np.array([1.0, 2.5, np.nan]), "new": "x"})
    said = content_differences(old, new)
    assert said[0] == "model.seed: 1 -> 2"
    assert "model.w: 1 of 3 entries differ (largest difference 0.5)" in said
    assert "model.gone only in the recorded model" in said
    assert "model.new only in the recomputed model" in said


def test_differences_of_shapes_records_and_other_leaves() -> None:
    record = np.zeros(2, dtype=[("x", "i4"), ("y", "f8")])
    changed = record.copy()
    changed["y"][0] = 1.0
    strings = np.array(["a", "b"])
    old = model_content(
        {"m": np.ones((2, 2)), "r": record, "s": strings, "f": np.mean, "o": {1, 2}}
    )
    new = model_content(
        {"m": np.ones(3, dtype=np.float32), "r": changed, "s": np.array(["a", "c"]),
         "f": np.median, "o": {1, 3}}
    )  # fmt: skip
    said = content_differences(old, new)
    assert "model.m: float64[2, 2] -> float32[3]" in said
    assert "model.r: fields y differ" in said
    assert "model.s: values differ" in said
    assert "model.f: 'numpy.mean' -> 'numpy.median'" in said
    assert "model.o differs" in said


def test_at_most_five_differences_then_a_count() -> None:
    old = model_content({f"p{i}": i for i in range(8)})
    new = model_content({f"p{i}": i + 1 for i in range(8)})
    said = content_differences(old, new)
    assert len(said) == 6 and said[-1] == "3 more parameters or arrays differ"


def test_metadata_differences_group_library_versions() -> None:
    # The predictor records its library versions as an attribute (``versions``).
    old = model_content(
        _Plain(versions={"rdkit": "2024.3", "lightgbm": "4.3"}, est={"_sklearn_version": "1.5"})
    )
    new = model_content(
        _Plain(versions={"rdkit": "2024.9", "numpy": "2.0"}, est={"_sklearn_version": "1.6"})
    )
    said = metadata_differences(old, new)
    assert "lightgbm 4.3 -> absent (library versions recorded in the model)" in said
    assert "numpy absent -> 2.0 (library versions recorded in the model)" in said
    assert "rdkit 2024.3 -> 2024.9 (library versions recorded in the model)" in said
    assert "_sklearn_version 1.5 -> 1.6" in said
    assert metadata_differences(old, old) == []
