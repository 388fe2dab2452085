"""``qemlflow tune``: seeded search on the training part, recorded trials, resume, best.yaml."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from qemlflow.cli.main import main
from qemlflow.pipeline.config import parse_config
from qemlflow.store import Store

SPACE = {
    "model.params.max_features": {"type": "float", "low": 0.05, "high": 0.8, "log": True},
    "model.params.min_samples_leaf": {"type": "int", "low": 1, "high": 8},
}


def _config(source: Path, **changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": "tiny",
        "dataset": {"source": str(source), "smiles_column": "smiles", "target_columns": ["logp"]},
        "features": [{"type": "ecfp", "size": 512}],
        "model": {"estimator": "random_forest", "params": {"n_estimators": 20}},
        "evaluation": {"n_bootstrap": 50, "plots": False},
        "tune": {"space": SPACE},
    }
    config.update(changes)
    return config


def _write(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def _tune(config: Path, out: Path, store: Path, trials: int, *more: str) -> dict[str, Any]:
    args = ["tune", str(config), "--trials", str(trials), "--out", str(out)]
    assert main([*args, "--store", str(store), *more]) == 0
    study: dict[str, Any] = json.loads((out / "study.json").read_text())
    return study


def _trial_runs(store_path: Path, study: str) -> list[Any]:
    with Store.open(store_path) as store:
        runs = [store.runs.get(s.id) for s in store.runs.summaries()]
    return sorted(
        (r for r in runs if (r.config.get("tune") or {}).get("study") == study),
        key=lambda r: r.config["tune"]["trial"],
    )


def test_tune_writes_a_best_config_that_runs_and_reproduces(
    tmp_path: Path, small_esol_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _write(tmp_path / "exp.yaml", _config(small_esol_csv))
    out, store = tmp_path / "tuned", tmp_path / "store"
    study = _tune(config, out, store, 3)

    assert study["direction"] == "minimize" and study["metric"] == "rmse"
    assert study["seed"] == 0 and study["scored_on"] == "validation part"
    assert [t["number"] for t in study["trials"]] == [0, 1, 2]
    assert all(t["state"] == "complete" and t["score"] > 0 for t in study["trials"])
    assert all(set(t["params"]) == set(SPACE) for t in study["trials"])
    best = min(study["trials"], key=lambda t: t["score"])
    assert study["best"]["number"] == best["number"]

    # Every trial is a recorded run linked to its study, scored on the validation part.
    runs = _trial_runs(store, study["study"])
    assert [r.id for r in runs] == [t["run_id"] for t in study["trials"]]
    assert all(r.status == "finished" and "test" not in r.metrics for r in runs)
    assert [r.metrics["tune"]["score"] for r in runs] == [t["score"] for t in study["trials"]]
    # Featurization is computed once, by the first trial.
    hits = [{s.step: s.cache_hit for s in r.steps} for r in runs]
    assert not hits[0]["featurize"] and all(h["featurize"] for h in hits[1:])

    # best.yaml is a plain experiment holding the best point; its final run is recorded.
    best_yaml = parse_config(yaml.safe_load((out / "best.yaml").read_text()))
    assert best_yaml.tune is None
    for path, value in best["params"].items():
        assert best_yaml.model.params[path.rsplit(".", 1)[-1]] == value
    final = json.loads((out / "best-run" / "run.json").read_text())
    assert final["run_id"] == study["final_run"]["run_id"]
    assert {s["step"]: s["cache_hit"] for s in final["steps"]}["fit"]  # the best trial's model
    assert study["final_run"]["test"]["rmse"] > 0

    capsys.readouterr()
    assert (
        main(["run", str(out / "best.yaml"), "--store", str(store), "-o", str(tmp_path / "r")]) == 0
    )
    run_id = json.loads((tmp_path / "r" / "run.json").read_text())["run_id"]
    again = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert again["test"] == study["final_run"]["test"]
    capsys.readouterr()
    assert main(["reproduce", run_id, "--store", str(store)]) == 0
    assert "IDENTICAL" in capsys.readouterr().out


def test_trials_never_see_the_test_part(
    tmp_path: Path, small_esol_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The same data with the test part's labels wrecked: if any trial looked at the test
    # part, its scores (and so TPE's next points) would change.
    clean = _tune(
        _write(tmp_path / "a.yaml", _config(small_esol_csv)), tmp_path / "a", tmp_path / "sa", 3
    )
    table = pd.read_csv(tmp_path / "a" / "best-run" / "predictions.csv", keep_default_na=False)
    test_rows = table.loc[table["split"] == "test", "row"].to_numpy()
    assert len(test_rows) > 10
    frame = pd.read_csv(small_esol_csv)
    frame.loc[test_rows, "logp"] = frame.loc[test_rows, "logp"] * 10.0 + 50.0
    other = tmp_path / "other"  # the same file name, which the dataset step records
    other.mkdir()
    frame.to_csv(other / "small_esol.csv", index=False)
    wrecked = _tune(
        _write(tmp_path / "b.yaml", _config(other / "small_esol.csv")),
        tmp_path / "b",
        tmp_path / "sb",
        3,
    )
    assert [t["params"] for t in wrecked["trials"]] == [t["params"] for t in clean["trials"]]
    assert [t["score"] for t in wrecked["trials"]] == [t["score"] for t in clean["trials"]]
    # ... while the final run, the one evaluation on the test part, sees the wreck.
    assert wrecked["final_run"]["test"]["rmse"] > 10 * clean["final_run"]["test"]["rmse"]


def test_resume_runs_only_the_missing_trials_and_matches_a_fresh_study(
    tmp_path: Path, small_esol_csv: Path
) -> None:
    config = _write(tmp_path / "exp.yaml", _config(small_esol_csv))
    first = _tune(config, tmp_path / "t", tmp_path / "s1", 2)
    resumed = _tune(config, tmp_path / "t", tmp_path / "s1", 4)
    assert resumed["study"] == first["study"]
    assert resumed["new_trials"] == 2 and len(resumed["trials"]) == 4
    assert resumed["trials"][:2] == first["trials"]
    assert len(_trial_runs(tmp_path / "s1", first["study"])) == 4
    # Past --timeout no trial starts: the study is reported (and its best run) as it is.
    stopped = _tune(config, tmp_path / "t", tmp_path / "s1", 10, "--timeout", "0")
    assert stopped["new_trials"] == 0 and stopped["trials"] == resumed["trials"]

    # A fresh store, all four trials at once: the same points and scores (seeded TPE,
    # and a resumed study draws what an uninterrupted one draws).
    fresh = _tune(config, tmp_path / "f", tmp_path / "s2", 4)
    assert fresh["study"] == resumed["study"]
    assert [t["params"] for t in fresh["trials"]] == [t["params"] for t in resumed["trials"]]
    assert [t["score"] for t in fresh["trials"]] == [t["score"] for t in resumed["trials"]]
    assert {t["run_id"] for t in fresh["trials"]}.isdisjoint(t["run_id"] for t in resumed["trials"])


def test_an_interrupted_trial_is_drawn_again(tmp_path: Path, small_esol_csv: Path) -> None:
    config = _write(tmp_path / "exp.yaml", _config(small_esol_csv))
    study = _tune(config, tmp_path / "t", tmp_path / "s", 2)
    # What an interrupted call leaves: a third trial run that failed on Ctrl-C.
    with Store.open(tmp_path / "s") as store:
        done = store.runs.get(study["trials"][1]["run_id"])
        cut = {**done.config, "tune": {**done.config["tune"], "trial": 2}}
        run_id = store.runs.create(f"{study['study']}/trial-0002", cut, 0, done.environment)
        store.runs.fail(run_id, "KeyboardInterrupt")
    resumed = _tune(config, tmp_path / "t", tmp_path / "s", 3)
    assert resumed["new_trials"] == 1
    assert resumed["trials"][2]["run_id"] != run_id
    assert resumed["trials"][2]["state"] == "complete"


@pytest.mark.parametrize(("sizes", "scoring"), [([0.9, 0.0, 0.1], "auto"), ([0.8, 0.1, 0.1], "cv")])
def test_inner_folds_score_trials_without_a_validation_part_or_when_asked(
    tmp_path: Path, small_esol_csv: Path, sizes: list[float], scoring: str
) -> None:
    config = _config(small_esol_csv, split={"method": "random", "sizes": sizes})
    config["tune"].update(folds=3, scoring=scoring)
    study = _tune(_write(tmp_path / "exp.yaml", config), tmp_path / "t", tmp_path / "s", 3)
    assert study["scored_on"] == "inner 3-fold CV"
    for trial in study["trials"]:
        assert len(trial["intermediate"]) == 3
        assert trial["score"] == pytest.approx(trial["intermediate"][-1])
    runs = _trial_runs(tmp_path / "s", study["study"])
    assert all(len(r.metrics["folds"]) == 3 for r in runs)
    assert all("fit" not in {s.step for s in r.steps} for r in runs)


def test_default_space_and_metric_for_a_classifier_direction_maximize(
    tmp_path: Path, small_esol_csv: Path
) -> None:
    frame = pd.read_csv(small_esol_csv)
    frame["soluble"] = (frame["logp"] > frame["logp"].median()).astype(float)
    frame = frame.drop(columns="logp")
    source = tmp_path / "classes.csv"
    frame.to_csv(source, index=False)
    config = _config(source, model={"estimator": "knn"})
    config["dataset"]["target_columns"] = ["soluble"]
    del config["tune"]
    study = _tune(_write(tmp_path / "exp.yaml", config), tmp_path / "t", tmp_path / "s", 3)
    assert study["metric"] == "roc_auc" and study["direction"] == "maximize"
    assert set(study["space"]) == {"model.params.n_neighbors", "model.params.weights"}
    assert study["best"]["score"] == max(t["score"] for t in study["trials"])


def test_a_tune_section_changes_no_step_key(tmp_path: Path, small_esol_csv: Path) -> None:
    plain = {k: v for k, v in _config(small_esol_csv).items() if k != "tune"}
    assert "tune" not in parse_config(plain).resolved()
    keys = []
    for name, config in (("plain", plain), ("tuned", _config(small_esol_csv))):
        path = _write(tmp_path / f"{name}.yaml", config)
        assert (
            main(
                [
                    "run",
                    str(path),
                    "--store",
                    str(tmp_path / name),
                    "-o",
                    str(tmp_path / f"o{name}"),
                ]
            )
            == 0
        )
        steps = json.loads((tmp_path / f"o{name}" / "run.json").read_text())["steps"]
        keys.append([(s["step"], s["key"], s["output"]) for s in steps])
    assert keys[0] == keys[1]


def test_trials_default_to_the_config_and_are_required(
    tmp_path: Path, small_esol_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(small_esol_csv)
    path = _write(tmp_path / "exp.yaml", config)
    args = ["tune", str(path), "--out", str(tmp_path / "t"), "--store", str(tmp_path / "s")]
    assert main(args) == 2
    assert "--trials" in capsys.readouterr().err
    config["tune"]["trials"] = 2
    _write(path, config)
    assert main(args) == 0
    assert len(json.loads((tmp_path / "t" / "study.json").read_text())["trials"]) == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"split": {"method": "kfold", "k": 3}}, "held-out test part"),
        (
            {"tune": {"space": {"model.parms.x": {"type": "int", "low": 1, "high": 3}}}},
            "does not lead",
        ),
        (
            {"tune": {"space": {"model.params.bogus": {"type": "int", "low": 1, "high": 3}}}},
            "bogus",
        ),
        ({"tune": {"metric": "accuracy_of_vibes"}}, "not a metric"),
        (
            {"split": {"sizes": [0.9, 0.0, 0.1]}, "tune": {"scoring": "validation"}},
            "no validation part",
        ),
        (
            {
                "tune": {
                    "space": {"model.params.n_estimators": {"type": "int", "low": 5, "high": 2}}
                }
            },
            "low must be below high",
        ),
    ],
)
def test_bad_tuning_setups_fail_in_one_line(
    tmp_path: Path,
    small_esol_csv: Path,
    capsys: pytest.CaptureFixture[str],
    change: dict[str, Any],
    message: str,
) -> None:
    config = _write(tmp_path / "exp.yaml", _config(small_esol_csv, **change))
    args = ["tune", str(config), "--trials", "2", "--out", str(tmp_path / "t")]
    assert main([*args, "--store", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "t").exists()


def test_scores_are_the_validation_metric_of_each_trial_model(
    tmp_path: Path, small_esol_csv: Path
) -> None:
    from qemlflow.evaluation import evaluate
    from qemlflow.pipeline.steps import ArrayCodec, DatasetCodec, PredictorCodec, SplitCodec

    study = _tune(
        _write(tmp_path / "exp.yaml", _config(small_esol_csv)), tmp_path / "t", tmp_path / "s", 2
    )
    with Store.open(tmp_path / "s") as store:
        for trial in study["trials"]:
            run = store.runs.get(trial["run_id"])
            out = {s.step: store.blobs.get_bytes(s.output) for s in run.steps if s.output}
            assert "predict" not in out and "evaluate" not in out
            dataset = DatasetCodec().decode(out["standardize"])
            parts = SplitCodec().decode(out["split"])
            X = ArrayCodec().decode(out["featurize"])
            predictor = PredictorCodec().decode(out["fit"])
            predicted = predictor.outputs(X)["prediction"]

            scored = {
                name: float(
                    evaluate(dataset.y[rows], predicted[rows], "regression", n_bootstrap=0).metrics[
                        "rmse"
                    ]
                )
                for name, rows in (("valid", parts.valid), ("test", parts.test))
            }
            assert trial["score"] == pytest.approx(scored["valid"], rel=1e-12)
            assert trial["score"] != pytest.approx(scored["test"], rel=1e-6)
