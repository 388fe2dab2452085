"""The chemistry policy: what standardization does with chemistry a model cannot represent.

Kept free of RDKit so that configs, model files and the service can name a policy without
importing it; :mod:`qemlflow.chem.parent` applies it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

__all__ = ["DEFAULT_POLICY", "UNSUPPORTED_POLICIES", "ChemistryPolicy"]

UnsupportedPolicy = Literal["reject", "largest_fragment"]
#: Allowed values of ``ChemistryPolicy.unsupported``.
UNSUPPORTED_POLICIES: tuple[str, ...] = get_args(UnsupportedPolicy)


@dataclass(frozen=True)
class ChemistryPolicy:
    """What standardization does with chemistry a model cannot represent.

    Parameters
    ----------
    unsupported
        ``"reject"`` (default): metal-containing molecules (other than alkali and
        alkaline-earth counter-ions), inorganics and mixtures of organic components are
        refused as ``unsupported_chemistry``. ``"largest_fragment"``: keep the largest
        organic fragment of anything (metals disconnected), the behaviour before the policy existed.
    min_heavy_atoms
        A parent with fewer heavy atoms is refused as ``parent_too_small`` (1 admits all).

    Examples
    --------
    >>> ChemistryPolicy().to_dict()
    {'unsupported': 'reject', 'min_heavy_atoms': 3}
    """

    unsupported: UnsupportedPolicy = "reject"
    min_heavy_atoms: int = 3

    def __post_init__(self) -> None:
        if self.unsupported not in UNSUPPORTED_POLICIES:
            raise ValueError(f"unsupported must be one of {', '.join(UNSUPPORTED_POLICIES)}")
        if self.min_heavy_atoms < 1:
            raise ValueError("min_heavy_atoms must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        """The policy as a plain dict (recorded in step keys and model files)."""
        return asdict(self)


DEFAULT_POLICY = ChemistryPolicy()
"""The policy of every model and dataset that does not set its own."""
