"""`qemlflow reproduce` explains itself: IDENTICAL, IDENTICAL CONTENT or DIFFERENT at STEP.

Every run here is recorded for real, through the store's API, by a separate Python
process; where a recorded run must differ from a rerun, that process is changed the way a
real difference would change it (another scikit-learn version pickled with the model,
another seed under the same step key, a module the model needs that is missing here).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import qemlflow as qm
from qemlflow.cli.main import main
from qemlflow.models.content import content_differences, content_digest, model_content
from qemlflow.pipeline.reproduce import _unpickle_model, reproduce
from qemlflow.store import Store

# Runs a real experiment into a store and prints its run id; PATCH changes the process
# first, the way another environment would differ.
_RECORD = """
import json, sys
{patch}
import qemlflow as qm
from qemlflow.store import Store
with Store.open(sys.argv[2]) as store:
    print(qm.run(json.loads(sys.argv[1]), store=store).run_id)
"""

# The forest fits with another seed while the step key (config, versions) is unchanged:
# a model that came out otherwise in the recording environment.
_RESEEDED_FOREST = """
from sklearn.ensemble import RandomForestRegressor
fit = RandomForestRegressor.fit
def reseeded(self, X, y, **kwargs):
    self.random_state = 12345
    return fit(self, X, y, **kwargs)
RandomForestRegressor.fit = reseeded
"""


def _config(source: Path) -> dict[str, Any]:
    return {
        "name": "verdicts",
        "seed": 0,
        "dataset": {"source": str(source), "smiles_column": "smiles", "target_columns": ["logp"]},
        "features": [{"type": "ecfp", "radius": 2, "size": 256, "counts": True}],
        "model": {"estimator": "random_forest", "params": {"n_estimators": 8}},
        "evaluation": {"n_bootstrap": 20},
    }


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, **extra}


def _record(
    folder: Path, patch: str = "", *, env: dict[str, str] | None = None
) -> tuple[Path, str]:
    """Record one run of the small experiment in a fresh interpreter; return (store, id)."""
    store = folder / "store"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _RECORD.format(patch=textwrap.dedent(patch)),
            json.dumps(_config(folder / "data.csv")),
            str(store),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return store, done.stdout.split()[-1]


def _reproduce(
    run_id: str, store: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qemlflow", "reproduce", run_id, "--store", str(store), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


def _folder(root: Path, esol_frame: pd.DataFrame) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    esol_frame.head(60).to_csv(root / "data.csv", index=False)
    return root


@pytest.fixture(scope="module")
def recorded(
    tmp_path_factory: pytest.TempPathFactory, esol_frame: pd.DataFrame
) -> tuple[Path, str]:
    """One run recorded in an unchanged environment: (store, run id)."""
    return _record(_folder(tmp_path_factory.mktemp("unchanged"), esol_frame))


def _report(store: Path, run_id: str) -> dict[str, Any]:
    """The reproduce report as ``--json`` prints it, computed in this process."""
    with Store.open(store) as opened:
        return reproduce(opened, run_id).to_dict()


def _fit_blob(store: Path, run_id: str) -> bytes:
    with Store.open(store) as opened:
        run = opened.get_run(run_id)
        fit = next(s for s in run.steps if s.step == "fit")
        return opened.get_bytes(fit.output or "")


def test_an_unchanged_run_is_identical(recorded: tuple[Path, str]) -> None:
    store, run_id = recorded
    done = _reproduce(run_id, store)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[0].startswith("IDENTICAL: ")

    as_json = _reproduce(run_id, store, "--json")
    assert as_json.returncode == 0
    report = json.loads(as_json.stdout)
    assert report["verdict"] == "IDENTICAL" and report["exit_code"] == 0


def test_a_damaged_model_blob_is_different_and_named(
    tmp_path: Path, esol_frame: pd.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _folder(tmp_path, esol_frame)
    with Store.open(folder / "store") as store:
        run_id = qm.run(_config(folder / "data.csv"), store=store).run_id or ""
        fit = next(s for s in store.get_run(run_id).steps if s.step == "fit")
        path = store.open_blob_path(fit.output or "")
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["reproduce", run_id, "--store", str(folder / "store")]) == 1
    first = capsys.readouterr().out.splitlines()[0]
    assert first == (
        "DIFFERENT: the recorded fit output (also artifact model.joblib) is altered on disk "
        "(its content hash differs)"
    )


def test_a_model_pickled_with_other_versions_has_identical_content(
    tmp_path: Path, esol_frame: pd.DataFrame
) -> None:
    # The same weights, pickled by a process that calls itself scikit-learn 1.5.0 on
    # Python 3.11.0: what a run recorded before a library or Python patch release holds.
    store, run_id = _record(
        _folder(tmp_path, esol_frame),
        """
        import sklearn.base
        sklearn.base.__version__ = "1.5.0"
        import qemlflow.pipeline.versions as versions
        recorded = versions._library_versions
        versions._library_versions = lambda: {**recorded(), "python": "3.11.0"}
        """,
    )
    done = _reproduce(run_id, store)
    lines = done.stdout.splitlines()
    assert done.returncode == 3, done.stdout + done.stderr
    assert lines[0].startswith("IDENTICAL CONTENT: ") and "fit" in lines[0]
    import sklearn

    assert f"scikit-learn 1.5.0 -> {sklearn.__version__}" in done.stdout
    assert "python 3.11.0 -> " in done.stdout

    report = _report(store, run_id)
    assert report["verdict"] == "IDENTICAL CONTENT" and report["exit_code"] == 3
    by_step = {s["step"]: s for s in report["steps"]}
    assert not by_step["fit"]["identical"] and by_step["fit"]["content_identical"]
    assert all(s["identical"] for name, s in by_step.items() if name != "fit")
    assert report["blob_problems"] == []


def test_a_model_fitted_with_another_seed_is_different_at_fit(
    tmp_path: Path, esol_frame: pd.DataFrame
) -> None:
    # The forest fits with another seed while the step key (config, versions) is unchanged.
    store, run_id = _record(
        _folder(tmp_path, esol_frame),
        _RESEEDED_FOREST,
    )
    done = _reproduce(run_id, store)
    first = done.stdout.splitlines()[0]
    assert done.returncode == 1, done.stdout + done.stderr
    assert first.startswith("DIFFERENT at fit: the model differs: ")
    assert "random_state: 12345 -> 0" in first
    report = _report(store, run_id)
    assert report["verdict"] == "DIFFERENT"
    steps = {s["step"]: s for s in report["steps"]}
    assert [n for n, s in steps.items() if not s["content_identical"]] == [
        "fit",
        "predict",
        "evaluate",
    ]
    assert "values differ" in steps["predict"]["detail"]
    assert "->" in steps["evaluate"]["detail"]  # metric names, recorded -> now


def test_a_run_recorded_on_another_processor_names_it(
    tmp_path: Path, esol_frame: pd.DataFrame
) -> None:
    # The recording process reports another CPU; once with the same model (IDENTICAL, the
    # CPU listed as drift), once with a model that came out otherwise there (as the
    # D-MPNN's float sums can on another processor): DIFFERENT, and the processor named.
    other_cpu = textwrap.dedent(
        """
        import qemlflow.store.environment as environment
        environment._cpu_model = lambda: "Recording CPU 9000"
        """
    )
    same_store, same_id = _record(_folder(tmp_path / "same", esol_frame), other_cpu)
    done = _reproduce(same_id, same_store)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cpu Recording CPU 9000 (" in done.stdout
    assert "the processor differs" not in done.stdout

    store, run_id = _record(
        _folder(tmp_path / "other", esol_frame),
        other_cpu + _RESEEDED_FOREST,
    )
    done = _reproduce(run_id, store)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith("DIFFERENT at fit")
    assert "cpu Recording CPU 9000 (" in done.stdout
    assert "the processor differs" in done.stdout
    drift = _report(store, run_id)["environment_drift"]
    assert drift["cpu"]["recorded"]["model"] == "Recording CPU 9000"


def test_metrics_computed_differently_are_different_at_evaluate(
    tmp_path: Path, esol_frame: pd.DataFrame
) -> None:
    # The same model and predictions; the recording process drew its bootstrap resamples
    # with another seed (as an evaluation library whose resampling changed would).
    store, run_id = _record(
        _folder(tmp_path, esol_frame),
        """
        import qemlflow.evaluation as evaluation
        bootstrap = evaluation._bootstrap
        def reseeded(t, p, scorer, names, n_bootstrap, seed, *rest):
            return bootstrap(t, p, scorer, names, n_bootstrap, seed + 1, *rest)
        evaluation._bootstrap = reseeded
        """,
    )
    done = _reproduce(run_id, store)
    first = done.stdout.splitlines()[0]
    assert done.returncode == 1, done.stdout + done.stderr
    assert first.startswith("DIFFERENT at evaluate: ")
    assert "ci95.test.rmse: [" in first and "] -> [" in first  # metric: recorded -> now
    report = _report(store, run_id)
    assert [s["step"] for s in report["steps"] if not s["identical"]] == ["evaluate"]


def test_a_model_that_cannot_be_unpickled_here_is_different_with_the_reason(
    tmp_path: Path, esol_frame: pd.DataFrame
) -> None:
    # The recording process had a module (a plug-in) that this environment lacks.
    folder = _folder(tmp_path, esol_frame)
    plugins = folder / "plugins"
    plugins.mkdir()
    (plugins / "qmf_vanished_plugin.py").write_text("class Marker:\n    pass\n")
    pythonpath = os.pathsep.join([str(plugins), os.environ.get("PYTHONPATH", "")])
    store, run_id = _record(
        folder,
        """
        import qmf_vanished_plugin
        from sklearn.ensemble import RandomForestRegressor
        fit = RandomForestRegressor.fit
        def marked(self, X, y, **kwargs):
            fit(self, X, y, **kwargs)
            self.marker_ = qmf_vanished_plugin.Marker()
            return self
        RandomForestRegressor.fit = marked
        """,
        env=_env(PYTHONPATH=pythonpath),
    )
    done = _reproduce(run_id, store)
    assert done.returncode == 1
    first = done.stdout.splitlines()[0]
    assert first.startswith("DIFFERENT at fit: the recorded model cannot be unpickled")
    assert "qmf_vanished_plugin" in first


_DIGEST = """
import gzip, pickle, sys
import qemlflow as qm
from qemlflow.cli.main import main
from qemlflow.models.content import content_digest
print(content_digest(pickle.loads(gzip.decompress(open(sys.argv[1], "rb").read()))["predictor"]))
"""


def test_the_content_digest_is_the_same_in_fresh_interpreters_and_sees_every_weight(
    recorded: tuple[Path, str], tmp_path: Path
) -> None:
    store, run_id = recorded
    blob = tmp_path / "model.joblib"
    blob.write_bytes(_fit_blob(store, run_id))
    digests = {
        subprocess.run(
            [sys.executable, "-c", _DIGEST, str(blob)],
            capture_output=True,
            text=True,
            env=_env(PYTHONHASHSEED=seed),
            timeout=120,
            check=True,
        ).stdout.strip()
        for seed in ("1", "2")
    }
    predictor, _ = _unpickle_model(blob.read_bytes())
    assert digests == {content_digest(predictor)}

    # One leaf value of one tree, nudged by one unit in the last place: another digest,
    # and the difference names that array (where the model holds it: the fitted forest
    # is also referred to from a second attribute).
    nudged = copy.deepcopy(predictor)
    values = nudged.model.estimators_[0].estimators_[3].tree_.value
    values[0, 0, 0] = np.nextafter(values[0, 0, 0], np.inf)
    before, after = model_content(predictor), model_content(nudged)
    assert after.digest != before.digest
    said = content_differences(before, after)
    assert said and all(".estimators_[3].tree_.values: 1 of " in s for s in said)


def test_torch_weights_are_content_and_module_metadata_is_not() -> None:
    import torch

    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    twin = copy.deepcopy(network)
    twin.train(False)  # a mode flag, not a weight
    assert content_digest(network) == content_digest(twin)
    with torch.no_grad():
        twin[2].weight[0, 1] += 1e-6
    said = content_differences(model_content(network), model_content(twin))
    assert len(said) == 1 and said[0].startswith("model.2.weight: 1 of 3 entries differ")


def test_lightgbm_models_compare_by_their_trees() -> None:
    from lightgbm import LGBMRegressor

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(80, 5)), rng.normal(size=80)

    def fitted(seed: int) -> Any:
        params = {"n_estimators": 5, "subsample": 0.5, "subsample_freq": 1, "verbose": -1}
        return LGBMRegressor(random_state=seed, **params).fit(X, y)

    assert content_digest(fitted(1)) == content_digest(fitted(1))
    said = content_differences(model_content(fitted(1)), model_content(fitted(2)))
    assert said[0] == "model.random_state: 1 -> 2"
    assert said[1].startswith("model._Booster: ") and " trees" in said[1]
    assert len(said) == 2


def test_in_recorded_env_reruns_where_nothing_needs_installing(
    recorded: tuple[Path, str],
) -> None:
    store, run_id = recorded
    done = _reproduce(run_id, store, "--in-recorded-env")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[0].startswith("IDENTICAL: ")
    assert "in its recorded environment" in done.stderr
    assert "no package installed" in done.stderr


def _wheel(folder: Path, version: str) -> Path:
    """A tiny pure-Python wheel of the distribution ``qmf-probe``."""
    dist_info = f"qmf_probe-{version}.dist-info"
    files = {
        "qmf_probe/__init__.py": f'__version__ = "{version}"\n',
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: qmf-probe\nVersion: {version}\n",
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{name},sha256={digest.decode()},{len(text.encode())}")
    files[f"{dist_info}/RECORD"] = "\n".join([*record, f"{dist_info}/RECORD,,"]) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"qmf_probe-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)
    return path


def _installed(wheel: Path, folder: Path) -> Path:
    """The wheel unpacked into ``folder``: an import path where it is installed."""
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(folder)
    return folder


def test_in_recorded_env_installs_the_recorded_version_of_a_package_that_differs(
    tmp_path: Path, esol_frame: pd.DataFrame
) -> None:
    folder = _folder(tmp_path, esol_frame)
    wheels = folder / "wheels"
    old = _installed(_wheel(wheels, "1.0"), folder / "old")
    new = _installed(_wheel(folder / "newer-wheels", "2.0"), folder / "new")
    path = os.environ.get("PYTHONPATH", "")
    store, run_id = _record(folder, env=_env(PYTHONPATH=os.pathsep.join([str(old), path])))
    # Here qmf-probe is 2.0; pip may only use the local wheel folder.
    here = _env(
        PYTHONPATH=os.pathsep.join([str(new), path]),
        PIP_FIND_LINKS=str(wheels),
        PIP_NO_INDEX="1",
    )
    plain = _reproduce(run_id, store, env=here)
    assert plain.returncode == 0 and "qmf-probe 1.0 -> 2.0" in plain.stdout

    done = _reproduce(run_id, store, "--in-recorded-env", env=here)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[0].startswith("IDENTICAL: ")
    assert "qmf-probe==1.0 (here 2.0)" in done.stderr
    # Inside, the recorded version was the one installed: no drift in it is left.
    assert "qmf-probe" not in done.stdout


def test_in_recorded_env_says_in_one_line_when_the_recorded_qemlflow_cannot_be_had(
    tmp_path: Path, esol_frame: pd.DataFrame
) -> None:
    # The recording process saw qemlflow 0.0.1 installed; no index here has it.
    folder = _folder(tmp_path, esol_frame)
    metadata = folder / "older" / "qemlflow-0.0.1.dist-info"
    metadata.mkdir(parents=True)
    (metadata / "METADATA").write_text("Metadata-Version: 2.1\nName: qemlflow\nVersion: 0.0.1\n")
    path = os.pathsep.join([str(folder / "older"), os.environ.get("PYTHONPATH", "")])
    store, run_id = _record(folder, env=_env(PYTHONPATH=path))
    empty = folder / "no-wheels"
    empty.mkdir()
    done = _reproduce(
        run_id,
        store,
        "--in-recorded-env",
        env=_env(PIP_FIND_LINKS=str(empty), PIP_NO_INDEX="1"),
    )
    assert done.returncode == 2, done.stdout + done.stderr
    message = done.stderr.strip()
    assert len(message.splitlines()) == 1 and message.startswith("error: ")
    assert "recorded with qemlflow 0.0.1" in message and "qemlflow==0.0.1" in message
    assert done.stdout == ""


def test_in_recorded_env_refuses_another_python_in_one_line(
    tmp_path: Path, esol_frame: pd.DataFrame
) -> None:
    store, run_id = _record(
        _folder(tmp_path, esol_frame),
        """
        import platform
        platform.python_version = lambda: "3.99.1"
        """,
    )
    done = _reproduce(run_id, store, "--in-recorded-env")
    assert done.returncode == 2
    message = done.stderr.strip()
    assert len(message.splitlines()) == 1
    assert "Python 3.99.1" in message and "python3.99" in message
