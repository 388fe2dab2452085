"""``qemlflow screen``: real files, real worker processes, a real Dask cluster, SIGKILL.

One small model (ECFP4 bits, a 30-tree random forest on 200 ESOL molecules) is trained
once for the module, into a store, so that the applicability domain is known.
"""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from tests.bundled import bundled_csv
from tests.extras import require_extra

import qemlflow as qm
from qemlflow import registry
from qemlflow.cli.main import main
from qemlflow.errors import ConfigError
from qemlflow.pipeline.predictor import load_model
from qemlflow.screen import screen
from qemlflow.store import Store

CONFIG: dict[str, Any] = {
    "name": "screened",
    "dataset": {"source": "PLACEHOLDER", "smiles_column": "smiles", "target_columns": ["logp"]},
    "features": [{"type": "ecfp"}],
    "model": {"estimator": "random_forest", "params": {"n_estimators": 30}},
    "evaluation": {"n_bootstrap": 20, "plots": False},
}
pytestmark = pytest.mark.filterwarnings("ignore:the training molecules:UserWarning")
INVALID = ["C1CC(nosmiles", "", "c1cccc1", "Xx"]


@dataclass
class Trained:
    store_path: Path
    model: Path
    library: list[str]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    folder = tmp_path_factory.mktemp("screen")
    esol = pd.read_csv(bundled_csv("esol"))
    esol.head(200).to_csv(folder / "train.csv", index=False)
    config = {**CONFIG, "dataset": {**CONFIG["dataset"], "source": str(folder / "train.csv")}}
    with Store.open(folder / "store") as store:
        result = qm.run(config, folder / "run", store=store)
        assert result.run_id is not None
        registry.register(store, result.run_id, "sol")
    # A library to screen: unseen ESOL molecules with invalid lines interleaved.
    library = esol["smiles"].iloc[200:500].tolist()
    for k, bad in enumerate(INVALID):
        library.insert(37 * (k + 1), bad)
    yield Trained(folder / "store", folder / "run" / "model.joblib", library)


def _write_smi(path: Path, smiles: list[str], gz: bool = False) -> Path:
    text = "".join(f"{s}\n" for s in smiles)
    if gz:
        path.write_bytes(gzip.compress(text.encode(), mtime=0))
    else:
        path.write_text(text)
    return path


def _cli(*args: str) -> int:
    return main([*args])


def test_invalid_lines_stay_in_place_with_their_error(trained: Trained, tmp_path: Path) -> None:
    source = _write_smi(tmp_path / "library.smi.gz", trained.library, gz=True)
    out = tmp_path / "scores.parquet"
    code = _cli(
        "screen",
        str(trained.model),
        str(source),
        "-o",
        str(out),
        "--chunk-size",
        "64",
        "--store",
        str(trained.store_path),
    )
    assert code == 0
    table = pq.read_table(out).to_pandas()
    assert len(table) == len(trained.library)
    assert table["smiles"].tolist() == trained.library
    assert table["id"].tolist() == [str(i) for i in range(1, len(trained.library) + 1)]
    bad = table["smiles"].isin(INVALID)
    assert table.loc[bad, "error"].notna().all()
    assert table.loc[bad, "prediction"].isna().all()
    assert table.loc[~bad, "error"].isna().all()
    # The numbers are Predictor.predict's for the same molecules.
    expected = load_model(trained.model).predict(trained.library)
    for column in ("prediction", "lower", "upper"):
        np.testing.assert_allclose(table[column], expected[column], rtol=0, atol=1e-12)
    assert (table["error"].fillna("") == expected["error"]).all()
    # Every row says what was scored: predict's standardized SMILES, null for errors.
    assert list(table.columns[:3]) == ["id", "smiles", "standardized_smiles"]
    scored = table["standardized_smiles"]
    assert (scored[~bad] == expected["standardized_smiles"][~bad]).all()
    assert scored[bad].isna().all()
    # The training run was found in the store: the domain is there for valid rows.
    assert table.loc[~bad, "domain_similarity"].between(0, 1).all()
    assert table.loc[bad, "domain_similarity"].isna().all()


def test_outputs_are_byte_identical_across_engines(trained: Trained, tmp_path: Path) -> None:
    distributed = require_extra("distributed")
    source = tmp_path / "library.csv"
    pd.DataFrame(
        {"name": [f"m{i}" for i in range(len(trained.library))], "SMILES": trained.library}
    ).to_csv(source, index=False)
    outputs = {
        workers: screen(
            trained.model,
            source,
            tmp_path / f"w{workers}.parquet",
            workers=workers,
            id_column="name",
            chunk_size=50,
            trust_file=True,
        )
        for workers in (1, 2)
    }
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        code = _cli(
            "screen",
            str(trained.model),
            str(source),
            "-o",
            str(tmp_path / "dask.parquet"),
            "--engine",
            "dask",
            "--address",
            cluster.scheduler_address,
            "--id-column",
            "name",
            "--chunk-size",
            "50",
            "--trust-file",
        )
    assert code == 0
    one = (tmp_path / "w1.parquet").read_bytes()
    assert (tmp_path / "w2.parquet").read_bytes() == one
    assert (tmp_path / "dask.parquet").read_bytes() == one
    assert outputs[1].output_digest == outputs[2].output_digest
    table = pq.read_table(tmp_path / "w1.parquet")
    assert table.num_rows == len(trained.library)
    assert table.column("id").to_pylist()[:2] == ["m0", "m1"]
    assert pq.ParquetFile(tmp_path / "w1.parquet").num_row_groups == -(-table.num_rows // 50)


def test_a_chunk_scored_in_batches_is_the_same_table(
    trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk is featurized and predicted BATCH_ROWS rows at a time and joined: the output
    (invalid lines in place, one row group per chunk) must not depend on the batch size."""
    import qemlflow.screen.scoring as scoring

    source = _write_smi(tmp_path / "library.smi", trained.library)
    outputs = {}
    for batch in (scoring.BATCH_ROWS, 37):
        monkeypatch.setattr(scoring, "BATCH_ROWS", batch)
        out = tmp_path / f"batch{batch}.parquet"
        screen(trained.model, source, out, chunk_size=150, trust_file=True)
        outputs[batch] = out.read_bytes()
    assert len(set(outputs.values())) == 1
    table = pq.read_table(tmp_path / "batch37.parquet")
    assert table.num_rows == len(trained.library)
    assert table.column("error").null_count == len(trained.library) - len(INVALID)


def test_dask_without_an_address_is_one_clear_error(
    trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    source = _write_smi(tmp_path / "x.smi", ["CCO"])
    with pytest.raises(ConfigError, match="DASK_SCHEDULER_ADDRESS"):
        screen(trained.model, source, tmp_path / "x.parquet", engine="dask")


def _interrupt_midway(
    trained: Trained, tmp_path: Path, sig: signal.Signals
) -> tuple[Path, Path, Path, int, int, str]:
    """Start a CLI screen of ~6,000 molecules, send `sig` once 5 of 60 parts exist."""
    library = trained.library * 20  # ~6,000 molecules, 60 chunks
    source = _write_smi(tmp_path / "big.smi", library)
    reference = tmp_path / "reference.parquet"
    screen(trained.model, source, reference, chunk_size=100, trust_file=True)

    out = tmp_path / "stopped.parquet"
    parts = out.with_name(out.name + ".parts")
    command = [sys.executable, "-m", "qemlflow", "screen", str(trained.model), str(source)]
    command += ["-o", str(out), "--chunk-size", "100", "--trust-file"]
    # A shell without job control starts background jobs with SIGINT ignored, and the
    # child would inherit that: give it the default disposition, as a terminal would.
    child = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while len(list(parts.glob("part-*.arrow"))) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(child.pid, sig)
    _, err = child.communicate(timeout=60)
    done = len(list(parts.glob("part-*.arrow")))
    assert 5 <= done < 60, "the screen was not stopped midway"
    assert not out.exists()
    return source, reference, out, child.returncode, done, err.decode()


def test_killed_screen_resumes_to_identical_bytes(trained: Trained, tmp_path: Path) -> None:
    source, reference, out, _, done, _ = _interrupt_midway(trained, tmp_path, signal.SIGKILL)
    with pytest.raises(ConfigError, match="--resume"):
        screen(trained.model, source, out, chunk_size=100, trust_file=True)
    with pytest.raises(ConfigError, match="chunk_size"):
        screen(trained.model, source, out, chunk_size=50, resume=True, trust_file=True)
    result = screen(trained.model, source, out, chunk_size=100, resume=True, trust_file=True)
    assert result.resumed_chunks == done
    assert out.read_bytes() == reference.read_bytes()
    assert not out.with_name(out.name + ".parts").exists()


def test_ctrl_c_stops_cleanly_and_the_cli_resumes(trained: Trained, tmp_path: Path) -> None:
    source, reference, out, code, done, err = _interrupt_midway(trained, tmp_path, signal.SIGINT)
    assert code == 130
    assert "--resume" in err and "Traceback" not in err
    parts = sorted(out.with_name(out.name + ".parts").glob("part-*.arrow"))
    assert len(parts) >= done  # every finished part kept, none half-written
    args = [str(trained.model), str(source), "-o", str(out), "--chunk-size", "100", "--trust-file"]
    assert _cli("screen", *args, "--resume") == 0
    assert out.read_bytes() == reference.read_bytes()


def test_top_k_keeps_the_best_rows_deterministically(trained: Trained, tmp_path: Path) -> None:
    source = _write_smi(tmp_path / "lib.smi", trained.library * 2)  # every score twice: ties
    full = screen(trained.model, source, tmp_path / "all.csv", chunk_size=70, trust_file=True)
    table = pd.read_csv(full.output, keep_default_na=False, dtype={"id": str})
    scored = table[table["error"] == ""].copy()
    scored["row"] = scored["id"].astype(int)
    scored["prediction"] = scored["prediction"].astype(float)

    best = screen(
        trained.model, source, tmp_path / "best.parquet", chunk_size=70, top=25, trust_file=True
    )
    low = screen(
        trained.model,
        source,
        tmp_path / "low.parquet",
        chunk_size=33,
        top=25,
        ascending=True,
        trust_file=True,
    )
    got_best = pq.read_table(best.output).to_pandas()
    got_low = pq.read_table(low.output).to_pandas()
    want_best = scored.sort_values(["prediction", "row"], ascending=[False, True]).head(25)
    want_low = scored.sort_values(["prediction", "row"], ascending=[True, True]).head(25)
    assert got_best["id"].tolist() == want_best["id"].tolist()
    assert got_low["id"].tolist() == want_low["id"].tolist()
    assert best.written == 25 and best.rows == len(trained.library) * 2


def test_registry_spec_is_recorded_in_the_audit_trail(trained: Trained, tmp_path: Path) -> None:
    frame = pd.DataFrame({"smiles": trained.library[:120]})
    source = tmp_path / "lib.parquet"
    frame.to_parquet(source)
    with Store.open(trained.store_path) as store:
        result = screen("sol@1", source, tmp_path / "out.csv", store=store, chunk_size=40)
        event = store.audit_events(action="screen.completed")[-1]
        assert event.seq == result.audit_seq
        assert store.verify_audit().ok
    assert event.objects["input"] == result.input_digest
    assert event.objects["output"] == result.output_digest
    assert event.objects["model"] == result.model_digest
    assert event.details["rows"] == 120
    assert event.details["errors"] == sum(s in INVALID for s in trained.library[:120])
    assert event.details["model_version"] == "sol@1"
    assert len(pd.read_csv(result.output)) == 120


def test_model_file_without_its_store_leaves_the_domain_empty(
    trained: Trained, tmp_path: Path
) -> None:
    source = _write_smi(tmp_path / "lib.smi", ["CCO", "c1ccccc1 benzene"])
    with Store.open(tmp_path / "other-store") as store, pytest.warns(UserWarning, match="domain"):
        result = screen(
            trained.model, source, tmp_path / "out.parquet", store=store, trust_file=True
        )
        assert store.has_blob(result.model_digest)  # recorded: the model is kept
    table = pq.read_table(result.output).to_pandas()
    assert table["id"].tolist() == ["1", "benzene"]
    assert table["domain_similarity"].isna().all()
    assert table["prediction"].notna().all()
