"""Atom attributions: how much each atom of a molecule moves a fitted model's output.

Three methods, each deterministic (the same model and molecule give the same numbers):

``treeshap-ecfp-atoms``
    LightGBM's own TreeSHAP values (``predict(X, pred_contrib=True)``) of the Morgan
    (ECFP/FCFP) bits, mapped to atoms. The values add up, with LightGBM's base value, to
    the model's raw output: the prediction for regression, the log-odds of the
    uncalibrated classifier for classification.
``bit-occlusion-ecfp-atoms``
    For any estimator on Morgan bits: each bit that is set is switched off (a count set to
    0) alone, and its contribution is the output of the molecule minus the output without
    it (the prediction, or the calibrated probability for classification).
``atom-masking``
    For any model, the D-MPNN included: each heavy atom in turn is replaced by a dummy
    atom (``*``, atomic number 0, no charge, isotope or hydrogens; its bonds kept, its
    hydrogens gone with it) and its weight is the output of the molecule minus the output
    of the masked molecule. A positive weight: the atom raises the output.

The two fingerprint methods map a bit's contribution to atoms through the environments
that set the bit in this molecule (RDKit's bit-info map: (centre atom, radius) pairs): the
contribution is split equally over those environments, and each environment's share
equally over its atoms (the centre and every atom within ``radius`` bonds of it along
the environment's bonds). So the atom weights add up to the contributions of the bits
that are set. What cannot be mapped to atoms (bits that are off, other fingerprints,
descriptors) is reported as a share of the total attribution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from qemlflow.errors import ConfigError, ModelError

if TYPE_CHECKING:
    from rdkit import Chem

    from qemlflow.features.base import Featurizer
    from qemlflow.pipeline.predictor import Predictor

__all__ = [
    "AUTO",
    "METHODS",
    "METHOD_DEFINITIONS",
    "AtomAttribution",
    "attribute",
    "choose_method",
    "masked_smiles",
]

Method = Literal["treeshap-ecfp-atoms", "bit-occlusion-ecfp-atoms", "atom-masking"]
AUTO = "auto"
METHODS: tuple[Method, ...] = ("treeshap-ecfp-atoms", "bit-occlusion-ecfp-atoms", "atom-masking")
METHOD_DEFINITIONS: dict[str, str] = {
    "treeshap-ecfp-atoms": (
        "LightGBM TreeSHAP contributions (pred_contrib=True) of the Morgan bits set in the "
        "molecule, each split equally over the bit's atom environments and each "
        "environment's share equally over its atoms; base_value + all contributions = the "
        "raw model output"
    ),
    "bit-occlusion-ecfp-atoms": (
        "per Morgan bit set in the molecule: output(molecule) - output(molecule with that "
        "bit off, a count set to 0), split equally over the bit's atom environments and "
        "each environment's share equally over its atoms"
    ),
    "atom-masking": (
        "per heavy atom: output(molecule) - output(molecule with that atom replaced by a "
        "dummy atom *, atomic number 0, no charge/isotope/hydrogens, bonds kept)"
    ),
}


@dataclass(frozen=True)
class AtomAttribution:
    """One molecule's explanation: a weight per atom, or the reason there is none."""

    smiles: str
    """The SMILES as given."""
    standardized_smiles: str | None
    """The molecule the model saw; ``atom_weights`` follow RDKit's atom order of it."""
    atom_weights: list[float] | None
    method: str
    output: str
    """What the weights are differences of (``prediction``, ``probability``, ``raw score``)."""
    value: float | None
    """That output for the molecule itself."""
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    """Method-specific numbers: base value, shares of attribution not on atoms, ..."""

    @property
    def ok(self) -> bool:
        """Whether the molecule was explained."""
        return self.error is None


@dataclass(frozen=True)
class _MorganColumns:
    """Where one Morgan block's bits are in the feature row, and how they were made."""

    start: int
    size: int
    radius: int
    counts: bool
    features: bool
    chirality: bool


def _morgan_columns(featurizer: Featurizer) -> tuple[list[_MorganColumns], int]:
    """The Morgan blocks of ``featurizer`` (ECFP/FCFP) and the total number of columns."""
    from qemlflow.features._engine import FingerprintBlock

    columns, start = [], 0
    for block in featurizer._blocks():
        if isinstance(block, FingerprintBlock) and block.kind == "morgan":
            columns.append(
                _MorganColumns(
                    start,
                    block.size,
                    block.radius,
                    block.counts,
                    block.features,
                    block.chirality,
                )
            )
        start += block.width
    return columns, start


def _reads_smiles(featurizer: Featurizer) -> bool:
    from qemlflow.features.structure import SmilesColumn

    return isinstance(featurizer, SmilesColumn)


def _lightgbm_tasks(predictor: Predictor) -> bool:
    """Whether every modelled task of the predictor is a LightGBM booster."""
    from lightgbm import LGBMModel

    bases = getattr(predictor.model, "base_estimators_", None)
    if getattr(predictor.model, "joint_", False) or not bases:
        return False
    modelled = [b for b in bases if b is not None]
    return bool(modelled) and all(isinstance(b, LGBMModel) for b in modelled)


def choose_method(predictor: Predictor, requested: str = AUTO) -> Method:
    """The method to explain ``predictor`` with: ``requested``, checked, or the best one.

    ``auto``: TreeSHAP for LightGBM on Morgan bits, bit occlusion for other estimators on
    Morgan bits, atom masking otherwise (the D-MPNN, descriptor-only features).
    """
    from qemlflow.features import make_featurizer

    featurizer = make_featurizer(predictor.feature_spec)
    morgan = [] if _reads_smiles(featurizer) else _morgan_columns(featurizer)[0]
    if requested == AUTO:
        if not morgan:
            return "atom-masking"
        return "treeshap-ecfp-atoms" if _lightgbm_tasks(predictor) else "bit-occlusion-ecfp-atoms"
    if requested not in METHODS:
        raise ConfigError(
            f"unknown explanation method {requested!r}",
            f"use one of: {AUTO}, {', '.join(METHODS)}",
        )
    if requested != "atom-masking" and not morgan:
        raise ConfigError(
            f"{requested} maps Morgan (ECFP/FCFP) bits to atoms, and this model's features "
            "have none",
            "use --method atom-masking (works for any model)",
        )
    if requested == "treeshap-ecfp-atoms" and not _lightgbm_tasks(predictor):
        raise ConfigError(
            "treeshap-ecfp-atoms needs a LightGBM model",
            "use --method bit-occlusion-ecfp-atoms or atom-masking",
        )
    return requested


def attribute(
    predictor: Predictor,
    smiles: Sequence[str],
    *,
    method: str = AUTO,
    target: str | None = None,
) -> list[AtomAttribution]:
    """Explain each molecule of ``smiles`` with ``method``; one result per input, in order.

    A molecule that cannot be read (or that the model's admission limits refuse) gets an
    ``error`` and no weights; the others are explained all the same.

    Parameters
    ----------
    predictor
        The fitted model (a loaded model file).
    smiles
        The molecules, as given: they are standardized as ``predict`` would.
    method
        ``auto`` or one of :data:`METHODS`.
    target
        The task to explain, by name; default the first.
    """
    from qemlflow.features import make_featurizer

    chosen = choose_method(predictor, method)
    task = _task_index(predictor, target)
    featurizer = make_featurizer(predictor.feature_spec)
    results = []
    for given in smiles:
        parsed = _standardize(predictor, given)
        if not parsed.ok or not parsed.smiles:
            reason = f"{parsed.reason}: {parsed.detail}" if parsed.detail else str(parsed.reason)
            results.append(
                AtomAttribution(
                    given, None, None, chosen, _output_name(predictor, chosen), None, error=reason
                )
            )
            continue
        explain_one = {
            "treeshap-ecfp-atoms": _treeshap,
            "bit-occlusion-ecfp-atoms": _bit_occlusion,
            "atom-masking": _atom_masking,
        }[chosen]
        result = explain_one(predictor, featurizer, given, parsed.smiles, task)
        if result.ok and (result.value is None or not np.isfinite(result.value)):
            result = AtomAttribution(
                given,
                parsed.smiles,
                None,
                chosen,
                result.output,
                None,
                error="the model gives no score for this molecule",
            )
        results.append(result)
    return results


def _task_index(predictor: Predictor, target: str | None) -> int:
    if target is None:
        return 0
    if target not in predictor.target_names:
        raise ConfigError(
            f"the model has no target {target!r}",
            f"use one of: {', '.join(predictor.target_names)}",
        )
    return predictor.target_names.index(target)


def _standardize(predictor: Predictor, smiles: str) -> Any:
    """The molecule as ``Predictor.predict`` reads it (the same standardization)."""
    from qemlflow.chem import parse_smiles, standardize_smiles

    if predictor.standardize:
        return standardize_smiles(
            smiles,
            tautomer=predictor.tautomer,
            limits=predictor.limits,
            policy=predictor.chemistry,
        )
    return parse_smiles(smiles, limits=predictor.limits)


def _output_name(predictor: Predictor, method: str) -> str:
    if predictor.task == "regression":
        return "prediction"
    if method == "treeshap-ecfp-atoms":
        return "raw score (log-odds of the uncalibrated classifier)"
    return "probability"


def _model_outputs(predictor: Predictor, X: npt.NDArray[Any], task: int) -> npt.NDArray[np.float64]:
    """The explained output of each row of ``X``: prediction, or calibrated probability."""
    outputs = predictor.outputs(X)
    key = "prediction" if predictor.task == "regression" else "probability"
    return np.asarray(outputs[key][:, task], dtype=np.float64)


def _mol(smiles: str) -> Chem.Mol:
    """The molecule as the featurizers parse it: its atom order is the weights' order."""
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:  # a standardized SMILES always parses; kept as a clear error
        raise ModelError(f"RDKit cannot parse the standardized SMILES {smiles!r}", None)
    return mol


# ------------------------------------------------------------------ bits to atoms
def _environments(mol: Chem.Mol, block: _MorganColumns) -> dict[int, tuple[tuple[int, int], ...]]:
    """Bit (within the block) -> the (centre, radius) environments that set it."""
    from rdkit.Chem import rdFingerprintGenerator

    from qemlflow.chem.fingerprints import morgan_generator

    generator = morgan_generator(
        block.radius, block.size, features=block.features, chirality=block.chirality
    )
    extra = rdFingerprintGenerator.AdditionalOutput()
    extra.AllocateBitInfoMap()
    if block.counts:
        generator.GetCountFingerprint(mol, additionalOutput=extra)
    else:
        generator.GetFingerprint(mol, additionalOutput=extra)
    info: dict[int, tuple[tuple[int, int], ...]] = extra.GetBitInfoMap()
    return info


def _environment_atoms(mol: Chem.Mol, centre: int, radius: int) -> list[int]:
    """The atoms of one Morgan environment: the centre and the ends of its bonds."""
    from rdkit import Chem

    atoms = {centre}
    if radius > 0:
        for bond_index in Chem.FindAtomEnvironmentOfRadiusN(mol, radius, centre):
            bond = mol.GetBondWithIdx(bond_index)
            atoms.update((bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()))
    return sorted(atoms)


def _bits_to_atoms(
    mol: Chem.Mol,
    blocks: list[_MorganColumns],
    contributions: dict[int, float],
) -> tuple[npt.NDArray[np.float64], float]:
    """Spread column contributions over atoms; return the weights and what stayed unmapped.

    ``contributions`` maps a feature column (a Morgan bit set in the molecule) to its
    contribution; a column without an environment in this molecule stays unmapped.
    """
    weights = np.zeros(mol.GetNumAtoms(), dtype=np.float64)
    unmapped = 0.0
    for block in blocks:
        for bit, environments in sorted(_environments(mol, block).items()):
            column = block.start + bit
            value = contributions.pop(column, None)
            if value is None or not environments:
                continue
            share = value / len(environments)
            for centre, radius in environments:
                atoms = _environment_atoms(mol, centre, radius)
                weights[atoms] += share / len(atoms)
    for value in contributions.values():
        unmapped += abs(value)
    return weights, unmapped


def _set_morgan_columns(blocks: list[_MorganColumns], row: npt.NDArray[Any]) -> list[int]:
    """The Morgan columns set (non-zero) in one feature row, in column order."""
    return [
        block.start + int(bit)
        for block in blocks
        for bit in np.flatnonzero(np.nan_to_num(row[block.start : block.start + block.size]))
    ]


def _shares(parts: dict[str, float]) -> dict[str, float]:
    total = sum(parts.values())
    return {name: (value / total if total > 0 else 0.0) for name, value in parts.items()}


# ------------------------------------------------------------------ the methods
def _treeshap(
    predictor: Predictor, featurizer: Featurizer, given: str, standardized: str, task: int
) -> AtomAttribution:
    method = "treeshap-ecfp-atoms"
    output = _output_name(predictor, method)
    base = predictor.model.base_estimators_[task]
    not_modelled = getattr(predictor.model, "tasks_not_modelled_", {})
    if base is None or task in not_modelled:
        return AtomAttribution(
            given,
            standardized,
            None,
            method,
            output,
            None,
            error=f"task {predictor.target_names[task]!r} is not modelled "
            f"({not_modelled.get(task, 'no model')}): it predicts a constant",
        )
    blocks, _ = _morgan_columns(featurizer)
    X = featurizer.transform([standardized])
    contrib = np.asarray(base.predict(X, pred_contrib=True), dtype=np.float64)[0]
    phi, base_value = contrib[:-1], float(contrib[-1])
    on = set(_set_morgan_columns(blocks, X[0]))
    morgan = {c for b in blocks for c in range(b.start, b.start + b.size)}
    mol = _mol(standardized)
    weights, unmapped = _bits_to_atoms(mol, blocks, {c: float(phi[c]) for c in sorted(on)})
    absent = float(sum(abs(phi[c]) for c in morgan - on)) + unmapped
    other = float(sum(abs(phi[c]) for c in range(len(phi)) if c not in morgan))
    details = {
        "base_value": base_value,
        "attribution_share": _shares(
            {
                "atoms": float(sum(abs(phi[c]) for c in on)) - unmapped,
                "bits_not_set": absent,
                "non_atom_features": other,
            }
        ),
        "non_atom_contribution": float(phi.sum() - weights.sum()),
    }
    return AtomAttribution(
        given,
        standardized,
        weights.tolist(),
        method,
        output,
        base_value + float(phi.sum()),
        details=details,
    )


def _bit_occlusion(
    predictor: Predictor, featurizer: Featurizer, given: str, standardized: str, task: int
) -> AtomAttribution:
    method = "bit-occlusion-ecfp-atoms"
    blocks, width = _morgan_columns(featurizer)
    X = featurizer.transform([standardized])
    columns = _set_morgan_columns(blocks, X[0])
    # The molecule and every one-bit-off variant in one call: one batch, one answer.
    rows = np.repeat(X, len(columns) + 1, axis=0)
    for k, column in enumerate(columns, start=1):
        rows[k, column] = 0
    scores = _model_outputs(predictor, rows, task)
    effects = {column: float(scores[0] - scores[k]) for k, column in enumerate(columns, start=1)}
    mol = _mol(standardized)
    weights, _ = _bits_to_atoms(mol, blocks, dict(effects))
    morgan_width = sum(b.size for b in blocks)
    details = {
        "bits_occluded": len(columns),
        "non_atom_features": width - morgan_width,
        "note": "only Morgan bits set in the molecule are occluded; other features "
        "(bits that are off, other fingerprints, descriptors) get no attribution",
    }
    return AtomAttribution(
        given,
        standardized,
        weights.tolist(),
        method,
        _output_name(predictor, method),
        float(scores[0]),
        details=details,
    )


def masked_smiles(standardized: str) -> list[str]:
    """The molecule with each heavy atom in turn replaced by a dummy atom, as SMILES."""
    from rdkit import Chem

    mol = _mol(standardized)
    variants = []
    for index in range(mol.GetNumAtoms()):
        editable = Chem.RWMol(mol)
        atom = editable.GetAtomWithIdx(index)
        atom.SetAtomicNum(0)
        atom.SetFormalCharge(0)
        atom.SetIsotope(0)
        atom.SetNumExplicitHs(0)
        atom.SetNoImplicit(True)
        atom.SetChiralTag(Chem.ChiralType.CHI_UNSPECIFIED)
        variants.append(Chem.MolToSmiles(editable.GetMol()))
    return variants


def _atom_masking(
    predictor: Predictor, featurizer: Featurizer, given: str, standardized: str, task: int
) -> AtomAttribution:
    method = "atom-masking"
    variants = masked_smiles(standardized)
    # The molecule and all its masked variants in one call: one batch, one answer.
    scores = _model_outputs(predictor, featurizer.transform([standardized, *variants]), task)
    effects = scores[0] - scores[1:]
    unreadable = [int(i) for i in np.flatnonzero(~np.isfinite(effects))]
    weights = np.where(np.isfinite(effects), effects, 0.0)
    details: dict[str, Any] = {"dummy_atom": "*"}
    if unreadable:
        details["atoms_not_masked"] = unreadable  # the model could not read the variant
    return AtomAttribution(
        given,
        standardized,
        weights.tolist(),
        method,
        _output_name(predictor, method),
        float(scores[0]),
        details=details,
    )
