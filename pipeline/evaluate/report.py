"""Results -> per-seed CSV, summary CSV (mean ± std over seeds), markdown table and bar chart PNG."""
from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from matplotlib.figure import Figure  # without pyplot: rendered by Agg, the user's backend left alone

RUNS_CSV = "geobench_runs.csv"
SUMMARY_CSV = "geobench_results.csv"
TABLE_MD = "geobench_results.md"
CHART_PNG = "geobench_results.png"


@dataclass
class RunResult:
    """One (checkpoint, task, seed) evaluation."""

    checkpoint: str     # label shown in tables ("random", "s2-only", ...)
    task: str
    kind: str           # classification | multilabel | segmentation
    protocol: str       # linear | finetune
    metric: str         # accuracy | f1_micro | miou
    seed: int
    value: float        # in [0, 1]
    seconds: float = 0.0
    partition: str = "default"
    missing_bands: str = ""   # model bands zero-filled, "modality:B01+B09;..."


@dataclass
class Summary:
    checkpoint: str
    task: str
    kind: str
    protocol: str
    metric: str
    mean: float
    std: float
    n_seeds: int


def summarise(results: list[RunResult]) -> list[Summary]:
    """Mean and sample standard deviation over seeds, per (checkpoint, task, protocol)."""
    groups: dict[tuple[str, str, str], list[RunResult]] = {}
    for r in results:
        groups.setdefault((r.checkpoint, r.task, r.protocol), []).append(r)
    out = []
    for (ckpt, task, protocol), rs in groups.items():
        vals = [r.value for r in rs]
        mean = sum(vals) / len(vals)
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
        out.append(Summary(ckpt, task, rs[0].kind, protocol, rs[0].metric, mean, std, len(vals)))
    return out


def _write_csv(path: Path, rows: list) -> None:
    with open(path, "w", newline="") as fd:
        if not rows:
            return
        writer = csv.DictWriter(fd, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        for row in rows:
            writer.writerow(asdict(row))


def markdown_table(summaries: list[Summary]) -> str:
    """Tasks as rows, checkpoints as columns, cells "mean ± std" in percent."""
    ckpts = list(dict.fromkeys(s.checkpoint for s in summaries))
    tasks = list(dict.fromkeys((s.task, s.metric, s.protocol) for s in summaries))
    cell = {(s.task, s.protocol, s.checkpoint): s for s in summaries}
    lines = ["| task | metric | protocol | " + " | ".join(ckpts) + " |",
             "|---|---|---|" + "---|" * len(ckpts)]
    for task, metric, protocol in tasks:
        vals = []
        for c in ckpts:
            s = cell.get((task, protocol, c))
            vals.append(f"{100 * s.mean:.1f} ± {100 * s.std:.1f}" if s else "–")
        lines.append(f"| {task} | {metric} | {protocol} | " + " | ".join(vals) + " |")
    n = sorted({s.n_seeds for s in summaries})
    lines.append("")
    lines.append(f"Mean ± standard deviation over {', '.join(map(str, n))} seed(s), in percent.")
    return "\n".join(lines) + "\n"


def bar_chart(summaries: list[Summary], path: Path) -> None:
    """Grouped bars (one group per task, one bar per checkpoint) with std error bars."""
    ckpts = list(dict.fromkeys(s.checkpoint for s in summaries))
    tasks = list(dict.fromkeys(s.task for s in summaries))
    cell = {(s.task, s.checkpoint): s for s in summaries}
    width = 0.8 / max(1, len(ckpts))
    fig = Figure(figsize=(max(6.0, 1.0 + 0.9 * len(tasks) * max(1, len(ckpts)) * 0.6), 4.0))
    ax = fig.subplots()
    for i, c in enumerate(ckpts):
        xs = [t + (i - (len(ckpts) - 1) / 2) * width for t in range(len(tasks))]
        means = [100 * cell[(t, c)].mean if (t, c) in cell else 0.0 for t in tasks]
        stds = [100 * cell[(t, c)].std if (t, c) in cell else 0.0 for t in tasks]
        ax.bar(xs, means, width, yerr=stds, capsize=3, label=c)
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels([f"{t}\n({cell[(t, ckpts[0])].metric if (t, ckpts[0]) in cell else ''})" for t in tasks],
                       rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("score (%)")
    ax.set_ylim(0, 112)
    ax.set_yticks(range(0, 101, 20))
    ax.set_title("GEO-Bench (mean ± std over seeds)")
    ax.legend(fontsize=8, loc="upper center", ncol=max(1, len(ckpts)), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_reports(results: list[RunResult], out_dir: str | Path) -> dict[str, Path]:
    """Write the per-seed CSV, summary CSV, markdown table and PNG into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summaries = summarise(results)
    paths = {"runs": out / RUNS_CSV, "summary": out / SUMMARY_CSV, "table": out / TABLE_MD, "chart": out / CHART_PNG}
    _write_csv(paths["runs"], results)
    _write_csv(paths["summary"], summaries)
    paths["table"].write_text(markdown_table(summaries))
    bar_chart(summaries, paths["chart"])
    return paths
