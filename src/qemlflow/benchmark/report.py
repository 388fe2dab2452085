"""The benchmark report: a Markdown table beside the literature, a plot, and the environment."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qemlflow.benchmark.literature import literature_sources, literature_values, reference_value

if TYPE_CHECKING:
    from qemlflow.benchmark.runner import BenchmarkResult

__all__ = [
    "BARS",
    "Bar",
    "bar_outcomes",
    "environment",
    "literature_verdict",
    "render_markdown",
    "write_report",
]

# How far from a published value still counts as reproducing it.
RMSE_FACTOR = 1.10  # our RMSE <= published RMSE x 1.10
AUC_MARGIN = 0.05  # our ROC-AUC >= published ROC-AUC - 0.05
TOLERANCE_TEXT = (
    f"pass = RMSE <= published x {RMSE_FACTOR:.2f} (at most 10 % worse), "
    f"ROC-AUC >= published - {AUC_MARGIN:.2f}"
)
_VERSIONED = ("qemlflow", "rdkit", "scikit-learn", "lightgbm", "numpy", "torch", "chemprop")


@dataclass(frozen=True)
class Bar:
    """An acceptance bar of issue 7: ``model``'s mean on ``dataset`` against a limit.

    ``relative`` bars are a factor of the Chemprop paper's value instead of a number.
    """

    dataset: str
    model: str
    metric: str
    limit: float
    relative: bool = False

    def describe(self) -> str:
        """The bar as a sentence fragment, e.g. ``rmse <= 0.60``."""
        if self.relative:
            return f"{self.metric} <= Chemprop D-MPNN x {self.limit:.2f}"
        op = "<=" if self.metric == "rmse" else ">="
        return f"{self.metric} {op} {self.limit:.2f}"


BARS: tuple[Bar, ...] = (
    Bar("esol", "default", "rmse", 0.60),
    Bar("lipophilicity", "default", "rmse", 0.70),
    Bar("freesolv", "default", "rmse", 1.30),
    Bar("bbbp", "default", "roc_auc", 0.70),
    Bar("esol", "dmpnn", "rmse", 1.10, relative=True),
    Bar("freesolv", "dmpnn", "rmse", 1.10, relative=True),
    Bar("lipophilicity", "dmpnn", "rmse", 1.10, relative=True),
)


def literature_verdict(metric: str, ours: float, published: float | None) -> str:
    """``pass``/``fail`` against a published value under the stated tolerance.

    Examples
    --------
    >>> literature_verdict("rmse", 0.63, 0.58), literature_verdict("rmse", 0.65, 0.58)
    ('pass', 'fail')
    >>> literature_verdict("roc_auc", 0.69, 0.729), literature_verdict("roc_auc", 0.9, None)
    ('pass', 'n/a')
    """
    if published is None:
        return "n/a"
    if metric == "rmse":
        return "pass" if ours <= published * RMSE_FACTOR else "fail"
    return "pass" if ours >= published - AUC_MARGIN else "fail"


def bar_outcomes(results: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each acceptance bar with our mean, its seeds and ``pass``/``fail``/``not run``."""
    rows = []
    for bar in BARS:
        entry = results.get(bar.dataset, {}).get(bar.model)
        row: dict[str, Any] = {
            "dataset": bar.dataset,
            "model": bar.model,
            "bar": bar.describe(),
            "mean": None,
            "n_seeds": 0,
        }
        limit: float | None = bar.limit
        if bar.relative:
            published = reference_value(bar.dataset, bar.model)
            limit = (
                None
                if published is None or published.value is None
                else (published.value * bar.limit)
            )
        if entry is None:
            row["outcome"] = "not run"
        elif limit is None:
            row["outcome"] = "no published value"
            row["mean"], row["n_seeds"] = entry["mean"], entry["n_seeds"]
        else:
            mean = float(entry["mean"])
            ok = mean <= limit if bar.metric == "rmse" else mean >= limit
            row.update(mean=mean, n_seeds=entry["n_seeds"], outcome="pass" if ok else "fail")
            row["limit"] = limit
        rows.append(row)
    return rows


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _accelerator() -> str:
    torch = sys.modules.get("torch")  # only when a model already loaded it: never import it here
    if torch is not None and torch.cuda.is_available():
        return str(torch.cuda.get_device_name(0))
    return "none used"


def environment() -> dict[str, Any]:
    """The machine, OS, Python, library versions and git commit of this process.

    A summary of the store's environment snapshot (``capture_environment``), plus memory
    and the accelerator a model used.
    """
    from qemlflow.store.environment import capture_environment, normalize_package_name

    snapshot = capture_environment()
    packages = snapshot["packages"]
    versions = {"python": snapshot["python"]["version"]}
    for name in _VERSIONED:
        versions[name] = packages.get(normalize_package_name(name), "not installed")
    git = snapshot["git"]
    if git is None:
        commit = "unknown (not a git checkout)"
    else:
        commit = f"{git['commit']} (with uncommitted changes)" if git["dirty"] else git["commit"]
    return {
        "cpu": snapshot["cpu"]["model"],
        "cores": snapshot["cpu"]["count"],
        "memory_gib": _memory_gib(),
        "accelerator": _accelerator(),
        "os": snapshot["os"]["platform"],
        "versions": versions,
        "git_commit": commit,
    }


def _fmt(value: float | None, metric: str) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}"


def _literature_cell(dataset: str) -> str:
    parts = []
    for row in literature_values(dataset):
        if row.value is None:  # listed in the data file as not found; not shown here
            continue
        shown = f"{row.value:.3f}"
        if row.sd is not None:
            shown += f" ± {row.sd:.3f}"
        mark = "" if row.checked else "*"
        parts.append(f"{row.model} ({row.source}{mark}): {shown}")
    return "; ".join(parts) or "-"


def _verdict_cell(dataset: str, family: str, metric: str, mean: float) -> str:
    published = reference_value(dataset, family)
    if published is None:
        return "n/a"
    verdict = literature_verdict(metric, mean, published.value)
    return f"{verdict} vs {published.model}" if published.value is not None else "n/a"


def render_markdown(
    results: dict[str, dict[str, dict[str, Any]]], invocations: list[dict[str, Any]]
) -> str:
    """The Markdown report: results beside the literature, bars, sources, environment."""
    from qemlflow.benchmark.suite import MODELS

    lines = [
        "# MoleculeNet benchmark",
        "",
        "Every cell is a normal QeMLflow experiment (`qemlflow.pipeline.runner.run`) on a "
        "bundled dataset with its MoleculeNet-recommended split (80/10/10) and metric, "
        "over seeds 0..n-1 (the seed drives the split and the model). Written by "
        "`qemlflow benchmark`; the per-seed values and config digests are in the JSON "
        "next to this file.",
        "",
        f"Tolerance against the literature: {TOLERANCE_TEXT}. The model a row is judged "
        "against: the MoleculeNet paper's best model for the classical pipelines, the "
        "Chemprop authors' D-MPNN table for `dmpnn` (see the sources below). `*` = a value "
        "that could not be checked against a published table when it was entered.",
        "",
        "## Results",
        "",
        "| dataset | split | metric | model | mean ± sd | seeds | literature | vs literature |",
        "| --- | --- | --- | --- | --- | ---: | --- | --- |",
    ]
    for dataset, models in results.items():
        for name, entry in models.items():
            metric = str(entry["metric"])
            mean, sd = float(entry["mean"]), float(entry["sd"])
            family = str(entry.get("family", "classical"))
            lines.append(
                f"| {dataset} | {entry['split']} | {metric} | {name} | "
                f"{mean:.3f} ± {sd:.3f} | {entry['n_seeds']} | {_literature_cell(dataset)} | "
                f"{_verdict_cell(dataset, family, metric, mean)} |"
            )
    lines += [
        "",
        "Scaffold sets (BBBP, BACE) use QeMLflow's balanced scaffold split (Chemprop's, seeded "
        "order), not DeepChem's deterministic largest-first split behind the published "
        "numbers: their test sets differ, and ours are easier, so those two comparisons are "
        "indicative only.",
        "",
        "## Acceptance bars (issue 7)",
        "",
        "`default` is the experiment a config without `features` and `model` gets.",
        "",
        "| dataset | model | bar | mean | seeds | outcome |",
        "| --- | --- | --- | --- | ---: | --- |",
    ]
    for row in bar_outcomes(results):
        lines.append(
            f"| {row['dataset']} | {row['model']} | {row['bar']} | "
            f"{_fmt(row['mean'], '')} | {row['n_seeds']} | {row['outcome']} |"
        )
    lines += ["", "## Models", ""]
    shown = {name for models in results.values() for name in models}
    for name, model in MODELS.items():
        if name in shown:
            lines.append(f"- `{name}`: {model.description}")
    lines += ["", "## Literature sources", ""]
    for key, source in literature_sources().items():
        lines.append(f"- **{key}**: {source['citation']} {source.get('note', '')}".rstrip())
    lines.append(
        "- Values marked `*` are the widely quoted numbers; they could not be checked against "
        "a published table while the data file was written. `not found` means no exact "
        "number was available: none is made up. Each value's table or figure is in the data "
        "file, `src/qemlflow/benchmark/literature.yaml`."
    )
    lines += ["", "## Runs that produced these numbers", ""]
    for run in invocations:
        env = run["environment"]
        versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
        lines += [
            f"- `{run['command']}` — started {run['started']}, wall time "
            f"{run['wall_s']:.0f} s, {len(run['computed'])} cells computed, "
            f"{run['reused']} reused from the JSON",
            f"  - machine: {env['cpu']}, {env['cores']} cores, {env['memory_gib']} GiB RAM, "
            f"accelerator: {env['accelerator']}; {env['os']}",
            f"  - versions: {versions}",
            f"  - git commit: {env['git_commit']}",
        ]
    return "\n".join(lines) + "\n"


def _plot(results: dict[str, dict[str, dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(results)
    ncols = min(4, max(1, len(datasets)))
    nrows = (len(datasets) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.6 * nrows), squeeze=False)
    for ax, dataset in zip(axes.flat, datasets, strict=False):
        models = results[dataset]
        names = list(models)
        means = [float(models[m]["mean"]) for m in names]
        sds = [float(models[m]["sd"]) for m in names]
        ax.bar(range(len(names)), means, yerr=sds, color="#4c72b0", capsize=3)
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
        metric = str(next(iter(models.values()))["metric"])
        for row, style in zip(literature_values(dataset), ("--", ":", "-."), strict=False):
            if row.value is not None:
                ax.axhline(row.value, linestyle=style, color="#c44e52", linewidth=1)
                ax.annotate(
                    f"{row.model} ({row.source})",
                    (0.02, row.value),
                    xycoords=("axes fraction", "data"),
                    fontsize=7,
                    color="#c44e52",
                    va="bottom",
                )
        arrow = "lower is better" if metric == "rmse" else "higher is better"
        ax.set_title(f"{dataset} ({next(iter(models.values()))['split']})", fontsize=10)
        ax.set_ylabel(f"test {metric} ({arrow})", fontsize=8)
    for ax in list(axes.flat)[len(datasets) :]:
        ax.axis("off")
    fig.suptitle("QeMLflow on MoleculeNet: mean ± sd over seeds; red lines: literature")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(outcome: BenchmarkResult, command: str | None = None) -> list[Path]:
    """Write ``<suite>.md``, ``<suite>.png`` and append this call to ``<suite>.runs.json``."""
    out = outcome.out_dir
    runs_path = out / f"{outcome.suite}.runs.json"
    invocations: list[dict[str, Any]] = []
    if runs_path.is_file():
        try:
            invocations = list(json.loads(runs_path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, TypeError):
            invocations = []
    if outcome.computed or not invocations:
        invocations.append(
            {
                "command": command or "qemlflow.benchmark.run_benchmark(...)",
                "started": outcome.started or datetime.now(UTC).isoformat(timespec="seconds"),
                "wall_s": round(outcome.wall_s, 1),
                "computed": [list(cell) for cell in outcome.computed],
                "reused": len(outcome.reused),
                "environment": environment(),
            }
        )
    runs_path.write_text(json.dumps(invocations, indent=2) + "\n", encoding="utf-8")
    md_path = out / f"{outcome.suite}.md"
    md_path.write_text(render_markdown(outcome.results, invocations), encoding="utf-8")
    png_path = out / f"{outcome.suite}.png"
    _plot(outcome.results, png_path)
    return [out / f"{outcome.suite}.json", md_path, png_path, runs_path]
