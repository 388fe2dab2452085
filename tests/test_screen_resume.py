"""``screen --resume`` trusts no leftover part: a SIGKILLed screen, parts swapped, truncated
or forged, then resumed; the output must equal an uninterrupted screen byte for byte.

One small model is trained into a store and one screen is killed midway for the module;
each test resumes its own copy of the killed screen's work folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from tests.bundled import bundled_csv

import qemlflow as qm
from qemlflow.cli.main import main
from qemlflow.screen import screen
from qemlflow.screen.parts import ScreenPartError
from qemlflow.store import Store

CONFIG: dict[str, Any] = {
    "name": "resumed",
    "dataset": {"source": "PLACEHOLDER", "smiles_column": "smiles", "target_columns": ["logp"]},
    "features": [{"type": "ecfp", "size": 512}],
    "model": {"estimator": "random_forest", "params": {"n_estimators": 10}},
    "evaluation": {"n_bootstrap": 0, "plots": False},
}
CHUNK = 100


@dataclass
class Killed:
    store: Path
    model: Path
    source: Path
    rows: int
    reference: bytes
    parts: Path
    done: int


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Killed]:
    folder = tmp_path_factory.mktemp("resume")
    esol = pd.read_csv(bundled_csv("esol"))
    esol.head(150).to_csv(folder / "train.csv", index=False)
    config = {**CONFIG, "dataset": {**CONFIG["dataset"], "source": str(folder / "train.csv")}}
    library = esol["smiles"].iloc[150:].tolist() * 3 + ["not a smiles"]  # ~2,900 rows
    source = folder / "library.smi"
    source.write_text("".join(f"{s}\n" for s in library))
    with Store.open(folder / "store") as store:
        qm.run(config, folder / "run", store=store)
        reference = screen(
            folder / "run", source, folder / "ref.parquet", store=store, chunk_size=CHUNK
        )

    out = folder / "killed.parquet"
    parts = out.with_name(out.name + ".parts")
    command = [sys.executable, "-m", "qemlflow", "screen", str(folder / "run"), str(source)]
    command += ["-o", str(out), "--chunk-size", str(CHUNK), "--store", str(folder / "store")]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list(parts.glob("part-*.arrow"))) < 6 and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=60)
    done = len(list(parts.glob("part-*.arrow")))
    total = -(-len(library) // CHUNK)
    assert 6 <= done < total, "the screen was not stopped midway"
    assert not out.exists()
    yield Killed(
        folder / "store",
        folder / "run",
        source,
        len(library),
        reference.output.read_bytes(),
        parts,
        done,
    )


def _copy_of_killed(killed: Killed, tmp_path: Path) -> Path:
    """An output path whose work folder is a copy of the killed screen's."""
    out = tmp_path / "resumed.parquet"
    shutil.copytree(killed.parts, out.with_name(out.name + ".parts"))
    return out


def _part(out: Path, index: int, suffix: str = ".arrow") -> Path:
    return out.with_name(out.name + ".parts") / f"part-{index:08d}{suffix}"


def _swap_part(out: Path) -> None:
    shutil.copyfile(_part(out, 1), _part(out, 2))  # part 2's record stays


def _swap_part_and_record(out: Path) -> None:
    for suffix in (".arrow", ".json"):
        shutil.copyfile(_part(out, 1, suffix), _part(out, 2, suffix))


def _truncate_part(out: Path) -> None:
    data = _part(out, 2).read_bytes()
    _part(out, 2).write_bytes(data[: len(data) // 2])


def _forge_record(out: Path) -> None:
    """Part 1's rows under a record rewritten to claim chunk 2: only the digest of the input
    rows it was scored from gives it away."""
    _swap_part_and_record(out)
    record = json.loads(_part(out, 2, ".json").read_text())
    record.update(index=2, first_row=2 * CHUNK)
    _part(out, 2, ".json").write_text(json.dumps(record))


TAMPERING = {
    "swapped": (_swap_part, "hashes to"),
    "swapped with its record": (_swap_part_and_record, "was written for index 1, not 2"),
    "truncated": (_truncate_part, "hashes to"),
    "forged record": (_forge_record, "was written for input_sha256"),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_a_tampered_part_is_scored_again_and_the_output_is_identical(
    case: str, killed: Killed, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _copy_of_killed(killed, tmp_path)
    tamper, why = TAMPERING[case]
    tamper(out)
    args = ["screen", str(killed.model), str(killed.source), "-o", str(out)]
    args += ["--chunk-size", str(CHUNK), "--store", str(killed.store), "--resume"]
    if case == "truncated":
        args += ["--workers", "2"]  # the same bytes from worker processes
    assert main(args) == 0
    err = capsys.readouterr().err
    said = " ".join(err.split())  # the console wraps long lines
    assert "warning: cannot reuse part 2 in" in said and why in said
    assert out.read_bytes() == killed.reference
    with Store.open(killed.store) as store:
        event = store.audit_events(action="screen.completed")[-1]
    assert event.details["output"] == str(out)
    assert event.details["rescored_chunks"] == 1
    assert event.details["resumed_chunks"] == killed.done - 1
    assert event.details["rows"] == killed.rows


def test_untouched_parts_are_all_reused(killed: Killed, tmp_path: Path) -> None:
    out = _copy_of_killed(killed, tmp_path)
    with Store.open(killed.store) as store:
        result = screen(
            killed.model, killed.source, out, store=store, chunk_size=CHUNK, resume=True
        )
    assert (result.resumed_chunks, result.rescored_chunks) == (killed.done, 0)
    assert out.read_bytes() == killed.reference


class _SwapBeforeAssembly:
    """A progress receiver that, once the last chunk is scored, copies part 0 over part 1:
    the moment between scoring and assembly."""

    def __init__(self, out: Path, rows: int) -> None:
        self.out, self.rows = out, rows

    def start(self, total: int, unit: str) -> None:
        pass

    def update(self, position: int, rows: int) -> None:
        if rows == self.rows:
            shutil.copyfile(_part(self.out, 0), _part(self.out, 1))


def test_assembly_checks_every_part_and_records_only_a_verified_output(
    killed: Killed, tmp_path: Path
) -> None:
    out = tmp_path / "assembled.parquet"
    with Store.open(killed.store) as store:
        before = len(store.audit_events(action="screen.completed"))
        with pytest.raises(ScreenPartError, match=r"part 1 .* hashes to .* --resume"):
            screen(
                killed.model,
                killed.source,
                out,
                store=store,
                chunk_size=CHUNK,
                progress=_SwapBeforeAssembly(out, killed.rows),
            )
        assert not out.exists()
        assert len(store.audit_events(action="screen.completed")) == before
        with pytest.warns(UserWarning, match="cannot reuse part 1"):
            result = screen(
                killed.model, killed.source, out, store=store, chunk_size=CHUNK, resume=True
            )
    assert result.rescored_chunks == 1
    assert out.read_bytes() == killed.reference
