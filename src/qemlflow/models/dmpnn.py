"""The D-MPNN (Chemprop's directed message passing network) as a scikit-learn estimator.

Built on chemprop v2's parts (graph featurizer, bond message passing, aggregation, FFN,
Noam-like learning-rate schedule) with QeMLflow's own short training loop, so that a fit
is bit-for-bit repeatable on CPU, writes nothing to disk and needs no logger. torch and
chemprop are imported on first use only: this module is cheap to import without them.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator

from qemlflow.errors import ConfigError, DataError

if TYPE_CHECKING:
    import torch

__all__ = ["DMPNN", "dmpnn_runtime", "gnn_available"]

FloatArray = npt.NDArray[np.float64]
Descriptors = Literal["none", "rdkit2d"]

_GNN_PACKAGES = ("torch", "chemprop")
_INSTALL_FIX = "install them with `pip install torch && pip install 'qemlflow[gnn]'`"
# Scaled descriptors are clipped: a test molecule far outside the training range (some
# RDKit descriptors are heavy-tailed) must not dominate the network's input.
_DESCRIPTOR_CLIP = 10.0
_PREDICT_BATCH = 512


def gnn_available() -> bool:
    """Whether torch and chemprop can be imported (checked without importing them)."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in _GNN_PACKAGES)


def require_gnn() -> None:
    """Raise ConfigError when torch or chemprop is missing."""
    if not gnn_available():
        raise ConfigError("the D-MPNN needs chemprop and torch", _INSTALL_FIX)


def dmpnn_runtime(params: Mapping[str, Any], n_jobs: int | None) -> dict[str, str]:
    """Return what, beyond its parameters, changes a D-MPNN's bits: device and CPU threads.

    These go into the fit and predict step keys (``runtime:`` entries of the libraries map):

    - ``runtime:device``: ``cpu``, or ``cuda`` with the GPU's name and the CUDA and cuDNN
      versions. CPU and GPU kernels sum in different orders, and GPU kernels differ between
      GPU models and CUDA releases (and are not bit-repeatable at all for some operations).
    - ``runtime:torch-threads`` (CPU only): torch's CPU matrix products and reductions
      (oneDNN, MKL, OpenMP) split the work by thread count, and a different split can sum
      in a different order, which changes the last bits of the weights. On a GPU the
      count no longer touches the network's arithmetic, so it is left out.

    Deterministic algorithms are always switched on by the fit (``_torch_session``): that
    is part of the code, covered by the step version, and not repeated here. Without torch
    the map is empty (the fit then stops with the missing-package error).

    Examples
    --------
    >>> dmpnn_runtime({"device": "cpu"}, 2)
    {'runtime:device': 'cpu', 'runtime:torch-threads': '2'}
    """
    device = str(params.get("device", "auto"))
    if not gnn_available():
        return {}
    import torch

    threads = DMPNN(n_jobs=n_jobs)._threads()
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return {"runtime:device": "cpu", "runtime:torch-threads": str(threads)}
    if not torch.cuda.is_available():  # device "cuda" without a GPU: the fit will refuse
        return {"runtime:device": "cuda (none available)"}
    name = torch.cuda.get_device_name(torch.cuda.current_device())
    cudnn = torch.backends.cudnn
    cudnn_version = cudnn.version() if cudnn.is_available() else None  # type: ignore[no-untyped-call]
    return {"runtime:device": f"cuda {name} (CUDA {torch.version.cuda}, cuDNN {cudnn_version})"}


def as_smiles_column(X: Any, name: str = "X") -> list[str]:
    """The SMILES in ``X`` (a sequence, or an (n, 1) array as the ``smiles`` featurizer gives)."""
    array = np.asarray(X, dtype=object)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise DataError(
            f"{name} has shape {np.shape(X)} but the D-MPNN reads one column of SMILES",
            "featurize with features: smiles (an (n, 1) array of SMILES strings)",
        )
    bad = [i for i, s in enumerate(array) if not isinstance(s, str | np.str_)]
    if bad:
        raise DataError(
            f"{name} row {bad[0]} is not a SMILES string ({array[bad[0]]!r})",
            "featurize with features: smiles (an (n, 1) array of SMILES strings)",
        )
    return [str(s) for s in array]


class DMPNN(BaseEstimator):  # type: ignore[misc]
    """Chemprop's D-MPNN on SMILES: regression or binary classification, one or many tasks.

    One network predicts every task; a missing label (NaN) is masked out of the loss, so
    molecules labelled for some tasks still train the others. Regression targets are
    standardized per task for training and predictions are returned in the original
    units. ``ensemble_size`` networks are trained from independent seeds; predictions are
    their mean, and ``predict(X, return_std=True)`` also gives their spread.

    Deterministic on CPU: the same ``random_state`` gives bit-identical predictions. A
    CUDA GPU is used when one is present (``device="auto"``); GPU kernels are not
    bit-repeatable. The fitted estimator keeps its weights as NumPy arrays, so it pickles
    without torch objects and loads on a machine without a GPU.

    Parameters
    ----------
    task : {"regression", "classification"}, default="regression"
        What ``y`` holds (classification: 0/1 labels).
    epochs : int, default=30
        Training epochs per network.
    hidden_size : int, default=300
        Width of the message passing layers.
    depth : int, default=3
        Message passing steps.
    dropout : float, default=0.1
        Dropout in message passing and the feed-forward network. The defaults (30 epochs,
        dropout 0.1) won a sweep over ESOL and Lipophilicity (docs/benchmarks.md, "D-MPNN").
    ffn_hidden_size : int, default=300
        Width of the feed-forward network's hidden layers.
    ffn_layers : int, default=2
        Hidden layers of the feed-forward network.
    aggregation : {"mean", "sum", "norm"}, default="mean"
        How atom states become one molecule vector ("norm": sum / 100).
    batch_size : int, default=50
        Molecules per training step.
    init_lr, max_lr, final_lr : float, default=1e-4, 1e-3, 1e-4
        Chemprop's Noam-like schedule: linear warm-up from ``init_lr`` to ``max_lr`` over
        ``warmup_epochs``, then exponential decay to ``final_lr`` at the last epoch.
    warmup_epochs : int, default=2
        Epochs of linear warm-up.
    ensemble_size : int, default=1
        Networks trained from different seeds and averaged.
    descriptors : {"none", "rdkit2d"} or bool, default="rdkit2d"
        Extra molecule features joined to the learned fingerprint: QeMLflow's RDKit 2D
        descriptors, median-imputed and standardized on the training set (``True`` means
        ``"rdkit2d"``, ``False`` means ``"none"``).
    select_epoch : bool, default=True
        With a validation set (``X_val``/``y_val`` in ``fit``), keep each network's
        weights from the epoch with the lowest validation loss, as Chemprop does.
    device : {"auto", "cpu", "cuda"}, default="auto"
        Where to train: ``"auto"`` uses a CUDA GPU when torch sees one.
    random_state : int or None, default=0
        Seed of the weights, dropout and batch order.
    n_jobs : int or None, default=1
        CPU threads for torch (and processes for the descriptors); -1 or None: all cores.

    Attributes
    ----------
    members_ : list of dict
        Per network, its weights: parameter name -> float32 array.
    best_epochs_ : list of int
        Per network, the epoch (1-based) whose weights were kept.
    n_tasks_ : int
        Outputs per molecule.
    y_mean_, y_scale_ : ndarray of shape (n_tasks,)
        Target standardization (regression; zeros and ones for classification).
    descriptor_center_, descriptor_scale_ : ndarray or None
        Descriptor imputation/standardization, when descriptors are used.

    Examples
    --------
    >>> from qemlflow.data import load_dataset
    >>> data = load_dataset("esol")
    >>> model = DMPNN(epochs=2, hidden_size=32, ffn_hidden_size=32, descriptors=False)
    >>> model = model.fit(data.smiles[:40], data.y[:40, 0])
    >>> model.predict(data.smiles[40:43]).shape
    (3,)
    """

    def __init__(
        self,
        task: Literal["regression", "classification"] = "regression",
        epochs: int = 30,
        hidden_size: int = 300,
        depth: int = 3,
        dropout: float = 0.1,
        ffn_hidden_size: int = 300,
        ffn_layers: int = 2,
        aggregation: Literal["mean", "sum", "norm"] = "mean",
        batch_size: int = 50,
        init_lr: float = 1e-4,
        max_lr: float = 1e-3,
        final_lr: float = 1e-4,
        warmup_epochs: int = 2,
        ensemble_size: int = 1,
        descriptors: Descriptors | bool = "rdkit2d",
        select_epoch: bool = True,
        device: Literal["auto", "cpu", "cuda"] = "auto",
        random_state: int | None = 0,
        n_jobs: int | None = 1,
    ) -> None:
        self.task = task
        self.epochs = epochs
        self.hidden_size = hidden_size
        self.depth = depth
        self.dropout = dropout
        self.ffn_hidden_size = ffn_hidden_size
        self.ffn_layers = ffn_layers
        self.aggregation = aggregation
        self.batch_size = batch_size
        self.init_lr = init_lr
        self.max_lr = max_lr
        self.final_lr = final_lr
        self.warmup_epochs = warmup_epochs
        self.ensemble_size = ensemble_size
        self.descriptors = descriptors
        self.select_epoch = select_epoch
        self.device = device
        self.random_state = random_state
        self.n_jobs = n_jobs

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        # Torch modules are a cache rebuilt from members_: never pickled.
        state = dict(super().__getstate__())
        state.pop("_network_cache", None)
        return state

    # ------------------------------------------------------------------ checks
    def _descriptor_kind(self) -> Descriptors:
        if self.descriptors is True or self.descriptors == "rdkit2d":
            return "rdkit2d"
        if self.descriptors is False or self.descriptors == "none":
            return "none"
        raise ConfigError(
            f"unknown descriptors {self.descriptors!r} for the D-MPNN",
            "use descriptors: rdkit2d, or none",
        )

    def _check_params(self) -> None:
        require_gnn()
        positive = {
            "epochs": self.epochs,
            "hidden_size": self.hidden_size,
            "depth": self.depth,
            "ffn_hidden_size": self.ffn_hidden_size,
            "batch_size": self.batch_size,
            "ensemble_size": self.ensemble_size,
        }
        for name, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"D-MPNN parameter {name!r} must be a whole number >= 1, got {value!r}",
                    f"set {name} to a positive whole number",
                )
        if isinstance(self.ffn_layers, bool) or not isinstance(self.ffn_layers, int):
            raise ConfigError(
                f"D-MPNN parameter 'ffn_layers' must be a whole number, got {self.ffn_layers!r}",
                "set ffn_layers to e.g. 2",
            )
        if not isinstance(self.dropout, float | int) or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(
                f"D-MPNN dropout must be in [0, 1), got {self.dropout!r}", "set e.g. dropout: 0.1"
            )
        if self.aggregation not in ("mean", "sum", "norm"):
            raise ConfigError(
                f"unknown D-MPNN aggregation {self.aggregation!r}", "use mean, sum or norm"
            )
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"unknown device {self.device!r}", "use auto, cpu or cuda")
        self._descriptor_kind()

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        X: Any,
        y: npt.ArrayLike,
        X_val: Any | None = None,
        y_val: npt.ArrayLike | None = None,
    ) -> DMPNN:
        """Train ``ensemble_size`` networks on SMILES ``X`` and targets ``y``.

        Parameters
        ----------
        X : sequence of str or array of shape (n, 1)
            SMILES.
        y : array-like of shape (n,) or (n, n_tasks)
            Targets (regression) or 0/1 labels (classification); NaN marks a missing label.
        X_val, y_val : optional
            A validation set; with ``select_epoch`` each network keeps its best epoch on it.

        Returns
        -------
        DMPNN
            This estimator, fitted.
        """
        self._check_params()
        smiles = as_smiles_column(X)
        Y = _as_matrix(y, len(smiles))
        val: tuple[list[str], FloatArray] | None = None
        if X_val is not None and y_val is not None and self.select_epoch:
            val_smiles = as_smiles_column(X_val, "X_val")
            val = (val_smiles, _as_matrix(y_val, len(val_smiles), "y_val"))
            if val[1].shape[1] != Y.shape[1]:
                raise DataError(
                    f"y_val has {val[1].shape[1]} tasks but y has {Y.shape[1]}",
                    "give validation labels for the same tasks",
                )
        self.n_tasks_ = Y.shape[1]
        self.multi_output_ = np.ndim(y) == 2
        if self.task == "regression":
            mean = np.nanmean(Y, axis=0)
            scale = np.nanstd(Y, axis=0)
            self.y_mean_ = np.nan_to_num(mean).astype(np.float64)
            self.y_scale_ = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
        else:
            self.y_mean_ = np.zeros(self.n_tasks_)
            self.y_scale_ = np.ones(self.n_tasks_)

        with _torch_session(self._threads()) as torch:
            device = self._torch_device(torch)
            X_d = self._fit_descriptors(smiles)
            train = _Encoded.build(smiles, (Y - self.y_mean_) / self.y_scale_, X_d)
            valid = None
            if val is not None:
                valid = _Encoded.build(
                    val[0], (val[1] - self.y_mean_) / self.y_scale_, self._descriptors(val[0])
                )
            self.members_: list[dict[str, npt.NDArray[np.float32]]] = []
            self.best_epochs_: list[int] = []
            for seed in self._member_seeds():
                weights, best = self._train_one(torch, device, seed, train, valid)
                self.members_.append(weights)
                self.best_epochs_.append(best)
        self.__dict__.pop("_network_cache", None)
        return self

    def _threads(self) -> int:
        if self.n_jobs is None or self.n_jobs < 0:
            return os.cpu_count() or 1
        return max(1, int(self.n_jobs))

    def _torch_device(self, torch: Any) -> torch.device:
        if self.device == "cuda" or (self.device == "auto" and torch.cuda.is_available()):
            if not torch.cuda.is_available():
                raise ConfigError("device 'cuda' was asked for but torch sees no GPU", "use auto")
            return torch.device("cuda")  # type: ignore[no-any-return]
        return torch.device("cpu")  # type: ignore[no-any-return]

    def _member_seeds(self) -> list[int]:
        root = np.random.SeedSequence(self.random_state)
        return [int(child.generate_state(1)[0]) for child in root.spawn(self.ensemble_size)]

    def _fit_descriptors(self, smiles: list[str]) -> npt.NDArray[np.float32] | None:
        self.descriptor_center_: FloatArray | None = None
        self.descriptor_scale_: FloatArray | None = None
        if self._descriptor_kind() == "none":
            return None
        raw = self._raw_descriptors(smiles)
        center = np.nanmedian(np.where(np.isfinite(raw), raw, np.nan), axis=0)
        center = np.where(np.isfinite(center), center, 0.0)
        filled = np.where(np.isfinite(raw), raw, center)
        scale = filled.std(axis=0)
        self.descriptor_center_ = center
        self.descriptor_scale_ = np.where(scale > 0, scale, 1.0)
        return self._descriptors(smiles)

    def _raw_descriptors(self, smiles: list[str]) -> FloatArray:
        from qemlflow.features import RDKitDescriptors

        n_jobs = -1 if self.n_jobs is None else int(self.n_jobs)
        return np.asarray(RDKitDescriptors(n_jobs=n_jobs).transform(smiles), dtype=np.float64)

    def _descriptors(self, smiles: list[str]) -> npt.NDArray[np.float32] | None:
        if self.descriptor_center_ is None or self.descriptor_scale_ is None:
            return None
        raw = self._raw_descriptors(smiles)
        filled = np.where(np.isfinite(raw), raw, self.descriptor_center_)
        scaled = (filled - self.descriptor_center_) / self.descriptor_scale_
        return np.clip(scaled, -_DESCRIPTOR_CLIP, _DESCRIPTOR_CLIP).astype(np.float32)

    def _build_network(self, torch: Any, d_xd: int) -> Any:
        from chemprop.models import MPNN
        from chemprop.nn import (
            BinaryClassificationFFN,
            BondMessagePassing,
            MeanAggregation,
            NormAggregation,
            RegressionFFN,
            SumAggregation,
        )

        featurizer = _graph_featurizer()
        message_passing = BondMessagePassing(
            d_v=featurizer.atom_fdim,
            d_e=featurizer.bond_fdim,
            d_h=self.hidden_size,
            depth=self.depth,
            dropout=float(self.dropout),
        )
        aggregation = {"mean": MeanAggregation, "sum": SumAggregation, "norm": NormAggregation}
        head = RegressionFFN if self.task == "regression" else BinaryClassificationFFN
        predictor = head(
            n_tasks=self.n_tasks_,
            input_dim=self.hidden_size + d_xd,
            hidden_dim=self.ffn_hidden_size,
            n_layers=self.ffn_layers,
            dropout=float(self.dropout),
        )
        return MPNN(message_passing, aggregation[self.aggregation](), predictor)

    def _train_one(
        self,
        torch: Any,
        device: torch.device,
        seed: int,
        train: _Encoded,
        valid: _Encoded | None,
    ) -> tuple[dict[str, npt.NDArray[np.float32]], int]:
        from chemprop.schedulers import build_NoamLike_LRSched

        torch.manual_seed(seed)
        network = self._build_network(torch, train.n_descriptors).to(device)
        optimizer = torch.optim.Adam(network.parameters(), lr=self.init_lr)
        steps_per_epoch = math.ceil(len(train) / self.batch_size)
        warmup = min(self.warmup_epochs, self.epochs) * steps_per_epoch
        schedule = build_NoamLike_LRSched(
            optimizer,
            max(warmup, 1),
            max(self.epochs * steps_per_epoch - warmup, 1),
            self.init_lr,
            self.max_lr,
            self.final_lr,
        )
        order_rng = np.random.default_rng(seed)
        best_loss, best_epoch, best_state = math.inf, self.epochs, None
        for epoch in range(1, self.epochs + 1):
            network.train()
            for rows in _batches(order_rng.permutation(len(train)), self.batch_size):
                graphs, X_d, targets = train.batch(torch, rows, device)
                outputs = network.predictor.train_step(network.fingerprint(graphs, None, X_d))
                loss = self._loss(torch, outputs, targets)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
            if valid is not None and len(valid):
                loss_value = self._validation_loss(torch, network, valid, device)
                if loss_value < best_loss:
                    best_loss, best_epoch = loss_value, epoch
                    best_state = copy.deepcopy(network.state_dict())
        if best_state is not None:
            network.load_state_dict(best_state)
        weights = {
            name: tensor.detach().cpu().numpy().copy()
            for name, tensor in network.state_dict().items()
        }
        return weights, best_epoch

    def _loss(self, torch: Any, outputs: Any, targets: Any) -> Any:
        """Mean loss over the labelled entries only (NaN labels are masked out)."""
        mask = torch.isfinite(targets)
        clean = torch.nan_to_num(targets, nan=0.0)
        if self.task == "regression":
            per_entry = (outputs - clean) ** 2
        else:
            per_entry = torch.nn.functional.binary_cross_entropy_with_logits(
                outputs, clean, reduction="none"
            )
        return (per_entry * mask).sum() / mask.sum().clamp(min=1)

    def _validation_loss(self, torch: Any, network: Any, valid: _Encoded, device: Any) -> float:
        network.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for rows in _batches(np.arange(len(valid)), _PREDICT_BATCH):
                graphs, X_d, targets = valid.batch(torch, rows, device)
                outputs = network.predictor.train_step(network.fingerprint(graphs, None, X_d))
                mask = torch.isfinite(targets)
                loss = self._loss(torch, outputs, targets)
                total += float(loss) * int(mask.sum())
                count += int(mask.sum())
        return total / count if count else math.inf

    # ------------------------------------------------------------------ prediction
    def _member_outputs(self, X: Any) -> FloatArray:
        """Per network, its predictions: shape (n_members, n_molecules, n_tasks)."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "members_")
        require_gnn()
        smiles = as_smiles_column(X)
        if not smiles:
            return np.empty((len(self.members_), 0, self.n_tasks_))
        with _torch_session(self._threads()) as torch:
            device = self._torch_device(torch)
            data = _Encoded.build(smiles, None, self._descriptors(smiles))
            outputs = []
            for network in self._networks(torch, device, data.n_descriptors):
                network.eval()
                chunks = []
                with torch.no_grad():
                    for rows in _batches(np.arange(len(data)), _PREDICT_BATCH):
                        graphs, X_d, _ = data.batch(torch, rows, device)
                        chunks.append(network(graphs, None, X_d).detach().cpu().numpy())
                outputs.append(np.concatenate(chunks).astype(np.float64))
        stacked = np.stack(outputs)
        if self.task == "regression":
            stacked = stacked * self.y_scale_ + self.y_mean_
        return stacked

    def _networks(self, torch: Any, device: Any, d_xd: int) -> list[Any]:
        cached = self.__dict__.get("_network_cache")
        if cached is not None and cached[0] == str(device):
            return list(cached[1])
        networks = []
        for weights in self.members_:
            network = self._build_network(torch, d_xd)
            network.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.items()})
            networks.append(network.to(device))
        self.__dict__["_network_cache"] = (str(device), networks)
        return networks

    def _shape(self, values: FloatArray) -> FloatArray:
        return values if self.multi_output_ else values[:, 0]

    def predict(self, X: Any, return_std: bool = False) -> Any:
        """Return the ensemble mean: values (regression) or 0/1 labels (classification).

        Parameters
        ----------
        X : sequence of str or array of shape (n, 1)
            SMILES.
        return_std : bool, default=False
            Also return the spread (standard deviation) of the networks' predictions
            (regression values, classification probabilities); zeros for one network.

        Returns
        -------
        ndarray of shape (n,) or (n, n_tasks), or a (mean, std) pair
        """
        members = self._member_outputs(X)
        mean = members.mean(axis=0)
        std = members.std(axis=0)
        if self.task == "classification":
            mean = (mean >= 0.5).astype(np.float64)
        if return_std:
            return self._shape(mean), self._shape(std)
        return self._shape(mean)

    def predict_proba(self, X: Any) -> FloatArray:
        """Return the probability of each class, scikit-learn style: shape (n, 2) for one task.

        For several tasks, shape (n, n_tasks) of positive-class probabilities.
        """
        if self.task != "classification":
            raise AttributeError("predict_proba is only available for classification")
        positive: FloatArray = self._member_outputs(X).mean(axis=0)
        if self.multi_output_:
            return positive
        return np.column_stack([1.0 - positive[:, 0], positive[:, 0]])

    def predict_tasks(self, X: Any) -> tuple[FloatArray, FloatArray]:
        """Return the (n, n_tasks) ensemble mean and spread of the networks' outputs.

        Regression values or positive-class probabilities, always two-dimensional.
        """
        members = self._member_outputs(X)
        return members.mean(axis=0), members.std(axis=0)


class _Encoded:
    """Molecular graphs, descriptors and scaled targets of a set of molecules, ready to batch."""

    def __init__(
        self,
        graphs: list[Any],
        targets: npt.NDArray[np.float32] | None,
        descriptors: npt.NDArray[np.float32] | None,
    ) -> None:
        self.graphs = graphs
        self.targets = targets
        self.descriptors = descriptors

    @classmethod
    def build(
        cls,
        smiles: list[str],
        targets: FloatArray | None,
        descriptors: npt.NDArray[np.float32] | None,
    ) -> _Encoded:
        from chemprop.utils import make_mol

        featurizer = _graph_featurizer()
        graphs = []
        for i, text in enumerate(smiles):
            try:
                mol = make_mol(text, keep_h=False, add_h=False)
            except RuntimeError:
                mol = None
            if mol is None or mol.GetNumAtoms() == 0:
                raise DataError(
                    f"molecule {i} ({text!r}) cannot be read as a molecular graph",
                    "remove it or fix its SMILES (the pipeline rejects such rows itself)",
                )
            graphs.append(featurizer(mol))
        y = None if targets is None else np.asarray(targets, dtype=np.float32)
        return cls(graphs, y, descriptors)

    def __len__(self) -> int:
        return len(self.graphs)

    @property
    def n_descriptors(self) -> int:
        return 0 if self.descriptors is None else int(self.descriptors.shape[1])

    def batch(self, torch: Any, rows: npt.NDArray[np.int64], device: Any) -> tuple[Any, Any, Any]:
        from chemprop.data import BatchMolGraph

        graphs = BatchMolGraph([self.graphs[i] for i in rows])
        graphs.to(device)
        X_d = None
        if self.descriptors is not None:
            X_d = torch.from_numpy(self.descriptors[rows]).to(device)
        targets = None
        if self.targets is not None:
            targets = torch.from_numpy(self.targets[rows]).to(device)
        return graphs, X_d, targets


def _graph_featurizer() -> Any:
    from chemprop.featurizers import SimpleMoleculeMolGraphFeaturizer

    return SimpleMoleculeMolGraphFeaturizer()


def _batches(order: npt.NDArray[np.int64], size: int) -> Iterator[npt.NDArray[np.int64]]:
    for start in range(0, len(order), size):
        yield order[start : start + size]


def _as_matrix(y: npt.ArrayLike, n_rows: int, name: str = "y") -> FloatArray:
    Y = np.asarray(y, dtype=np.float64)
    if Y.ndim == 1:
        Y = Y[:, None]
    if Y.ndim != 2 or Y.shape[0] != n_rows:
        raise DataError(
            f"{name} has shape {np.shape(y)} but needs ({n_rows},) or ({n_rows}, n_tasks)",
            "give one row of labels per molecule",
        )
    return Y


@contextlib.contextmanager
def _torch_session(threads: int) -> Iterator[Any]:
    """torch with ``threads`` CPU threads, deterministic kernels, and the caller's RNG intact."""
    import torch

    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    previous_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    # warn_only: a CUDA kernel without a deterministic version must not stop a GPU run.
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with torch.random.fork_rng(devices=[]):
            yield torch
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_deterministic, warn_only=previous_warn_only)
