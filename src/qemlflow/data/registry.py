"""The benchmark datasets shipped inside the package, and where to find them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any, Literal

__all__ = ["BUNDLED", "BundledDataset", "bundled_bytes", "list_datasets"]

CITATION = (
    "Wu et al., MoleculeNet: a benchmark for molecular machine learning, "
    "Chem. Sci. 9, 513-530 (2018); CSVs as distributed with Chemprop v1 (MIT License)"
)


@dataclass(frozen=True, slots=True)
class BundledDataset:
    """What QeMLflow knows about one bundled dataset: columns, task and how to evaluate it.

    ``n_rows`` counts the rows of the file; ``n_molecules`` the unique standardized
    molecules that :func:`qemlflow.data.load_dataset` returns with default settings;
    ``sha256`` is the digest of the uncompressed CSV (the upstream file).
    """

    name: str
    filename: str
    smiles_column: str
    target_columns: tuple[str, ...]
    task: Literal["regression", "classification"]
    split: Literal["random", "scaffold"]
    metric: Literal["rmse", "roc_auc"]
    n_rows: int
    n_molecules: int
    description: str
    sha256: str

    def info(self) -> dict[str, Any]:
        """Return the entry as a plain dict (lists instead of tuples), with the citation.

        Examples
        --------
        >>> BUNDLED["esol"].info()["target_columns"]
        ['logp']
        """
        info = asdict(self)
        info["target_columns"] = list(self.target_columns)
        info["citation"] = CITATION
        return info


_TOX21_TASKS = (
    "NR-AR",
    "NR-AR-LBD",
    "NR-AhR",
    "NR-Aromatase",
    "NR-ER",
    "NR-ER-LBD",
    "NR-PPAR-gamma",
    "SR-ARE",
    "SR-ATAD5",
    "SR-HSE",
    "SR-MMP",
    "SR-p53",
)

BUNDLED: dict[str, BundledDataset] = {
    entry.name: entry
    for entry in (
        BundledDataset(
            "esol",
            "esol.csv.gz",
            "smiles",
            ("logp",),
            "regression",
            "random",
            "rmse",
            1128,
            1110,
            "ESOL (Delaney): measured aqueous solubility, log10(mol/L); the column is "
            "called 'logp' upstream but holds log solubility",
            "887aa5930b0a7e7fcb76a2d25dc0ebe11c23878ca2d8d1e2204ca2c46b175140",
        ),
        BundledDataset(
            "freesolv",
            "freesolv.csv.gz",
            "smiles",
            ("freesolv",),
            "regression",
            "random",
            "rmse",
            642,
            628,
            "FreeSolv: experimental hydration free energy in water, kcal/mol",
            "97d74c86228d4c16c0fbbf063bb8280354d8152db09a85ade8517a2f43bd9824",
        ),
        BundledDataset(
            "lipophilicity",
            "lipophilicity.csv.gz",
            "smiles",
            ("lipo",),
            "regression",
            "random",
            "rmse",
            4200,
            4200,
            "Lipophilicity (AstraZeneca, ChEMBL): octanol/water logD at pH 7.4",
            "aa9bd9669188e35efd908758a75561bba402016d901fed2d0d949289abbcf31c",
        ),
        BundledDataset(
            "bbbp",
            "bbbp.csv.gz",
            "smiles",
            ("p_np",),
            "classification",
            "scaffold",
            "roc_auc",
            2039,
            1951,
            "BBBP: blood-brain barrier penetration (1 = penetrates)",
            "a61e17872cbec0743a6147dc802a1f7550acfe8dc1053f881f4c42a3ce2dc597",
        ),
        BundledDataset(
            "bace",
            "bace.csv.gz",
            "mol",
            ("Class",),
            "classification",
            "scaffold",
            "roc_auc",
            1513,
            1512,
            "BACE: inhibition of human beta-secretase 1 (1 = inhibitor)",
            "847be1e38d3798c60df03e1aaf2ccd0f09f9ed89407de78e80463aa637088532",
        ),
        BundledDataset(
            "clintox",
            "clintox.csv.gz",
            "smiles",
            ("FDA_APPROVED", "CT_TOX"),
            "classification",
            "random",
            "roc_auc",
            1478,
            1353,
            "ClinTox: FDA approval and failure in clinical trials for toxicity (2 tasks)",
            "cc561402d058a0d996a9f5e5d02bc20f6652b7003525b32c3598b8da4b24e9b7",
        ),
        BundledDataset(
            "tox21",
            "tox21.csv.gz",
            "smiles",
            _TOX21_TASKS,
            "classification",
            "random",
            "roc_auc",
            7831,
            7484,
            "Tox21: 12 nuclear-receptor and stress-response assays, with missing labels",
            "b58cc1f683e78e3c7a1bf7116e9aac0119804018d100f7b8cdb0857941c31aca",
        ),
    )
}


def bundled_bytes(name: str) -> bytes:
    """Return the gzipped CSV bytes of a bundled dataset, read from the installed package.

    Examples
    --------
    >>> bundled_bytes("esol")[:2]
    b'\\x1f\\x8b'
    """
    entry = BUNDLED[name]
    return (
        resources.files("qemlflow.data").joinpath("bundled").joinpath(entry.filename).read_bytes()
    )


def list_datasets() -> list[dict[str, Any]]:
    """Return the bundled datasets, one dict each, in a fixed order.

    Examples
    --------
    >>> [d["name"] for d in list_datasets()]
    ['esol', 'freesolv', 'lipophilicity', 'bbbp', 'bace', 'clintox', 'tox21']
    >>> list_datasets()[0]["task"], list_datasets()[0]["metric"]
    ('regression', 'rmse')
    """
    return [entry.info() for entry in BUNDLED.values()]
