"""Accuracy against time, per learner and size: the Pareto report of the speed benchmark.

Reads the JSONL records of ``benchmarks/run.py`` (every library, and metalearn
settings recorded under their own ``--metalearn-label``), takes the median over
seeds of PEHE, fit + predict seconds and peak memory for each point, and prints
one markdown table per size with, for each learner:

* every point (library or metalearn setting) with its time, PEHE and memory,
  and whether it lies on the Pareto front of that learner (no other point is
  both faster and at least as accurate);
* **target 1**: no peer dominates the default (``metalearn``): none is faster
  by more than 10% at a PEHE at most the default's;
* **target 2**: the fast setting (``--fast-label``) takes at most the fastest
  peer's time at a PEHE at most 1.02x that peer's.

With ``--figure``, draws time (log scale) against PEHE, one panel per learner
and size, every library a marker, the front as a line.

Usage::

    python benchmarks/run.py --n 10000 100000 --sims A --seeds 0 1 --threads 2 \\
        --out benchmarks/out/pareto.jsonl
    python benchmarks/run.py --n 10000 100000 --sims A --seeds 0 1 --threads 2 \\
        --libraries metalearn --learners X R DR \\
        --metalearn-params '{"n_folds": 2, "final_stage": "full"}' \\
        --metalearn-label "metalearn fast" --out benchmarks/out/pareto.jsonl
    python benchmarks/pareto.py benchmarks/out/pareto.jsonl --figure benchmarks/out/pareto.png
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

LEARNERS = ["S", "T", "X", "R", "DR"]
PEERS = ["econml", "causalml", "metalearners"]
DEFAULT = "metalearn"


def load(paths: list[Path]) -> list[dict[str, Any]]:
    """Successful records; a later record of the same job replaces an earlier one."""
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                key = (r["sim"], r["n"], r["seed"], r["threads"], r["library"], r["learner"])
                rows[key] = r
    return [r for r in rows.values() if r.get("ok")]


def points(rows: list[dict[str, Any]]) -> dict[tuple[int, str], dict[str, dict[str, float]]]:
    """``{(n, learner): {library: {"time", "pehe", "rss", "runs"}}}``, medians over seeds."""
    groups: dict[tuple[int, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["n"], r["learner"], r["library"])].append(r)
    out: dict[tuple[int, str], dict[str, dict[str, float]]] = defaultdict(dict)
    for (n, learner, lib), rs in groups.items():
        out[(n, learner)][lib] = {
            "time": statistics.median(r["fit_predict_s"] for r in rs),
            "pehe": statistics.median(r["pehe"] for r in rs),
            "rss": statistics.median(r.get("peak_rss_mb") or float("nan") for r in rs),
            "runs": len(rs),
        }
    return out


def front(pts: dict[str, dict[str, float]]) -> set[str]:
    """Points that no other point dominates (faster or as fast, and at least as accurate)."""
    on = set()
    for a, pa in pts.items():
        dominated = any(
            pb["time"] <= pa["time"]
            and pb["pehe"] <= pa["pehe"]
            and (pb["time"] < pa["time"] or pb["pehe"] < pa["pehe"])
            for b, pb in pts.items()
            if b != a
        )
        if not dominated:
            on.add(a)
    return on


def target_1(pts: dict[str, dict[str, float]]) -> tuple[bool | None, str]:
    """No peer is faster by more than 10% at a PEHE at most the default's."""
    if DEFAULT not in pts:
        return None, "no default run"
    d = pts[DEFAULT]
    beaters = [
        p
        for p in PEERS
        if p in pts and pts[p]["time"] < d["time"] / 1.10 and pts[p]["pehe"] <= d["pehe"]
    ]
    return not beaters, ("dominated by " + ", ".join(beaters)) if beaters else "not dominated"


def target_2(pts: dict[str, dict[str, float]], fast: str) -> tuple[bool | None, str]:
    """The fast setting: time <= the fastest peer's, PEHE <= 1.02x that peer's."""
    peers = [p for p in PEERS if p in pts]
    if not peers:
        return None, "no peer run"
    quickest = min(peers, key=lambda p: pts[p]["time"])
    q = pts[quickest]
    # S and T have no faster setting than their default: the same fits.
    mine = fast if fast in pts else DEFAULT
    if mine not in pts:
        return None, "no metalearn run"
    m = pts[mine]
    ok = m["time"] <= q["time"] and m["pehe"] <= 1.02 * q["pehe"]
    return ok, (
        f"{mine} {m['time']:.2f} s / {m['pehe']:.3f} vs {quickest} {q['time']:.2f} s / "
        f"{q['pehe']:.3f} (time {m['time'] / q['time']:.2f}x, PEHE {m['pehe'] / q['pehe']:.3f}x)"
    )


def _mark(ok: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "n/a"}[ok]


def report(rows: list[dict[str, Any]], fast: str) -> str:
    pts_all = points(rows)
    out: list[str] = []
    for n in sorted({n for n, _ in pts_all}):
        out.append(f"### n = {n:,}\n")
        out.append("| learner | point | fit + predict s | PEHE | peak MiB | runs | on the front |")
        out.append("|---|---|---|---|---|---|---|")
        checks: list[str] = []
        for learner in LEARNERS:
            pts = pts_all.get((n, learner))
            if not pts:
                continue
            on = front(pts)
            for lib, p in sorted(pts.items(), key=lambda kv: kv[1]["time"]):
                out.append(
                    f"| {learner} | {lib} | {p['time']:.2f} | {p['pehe']:.3f} | "
                    f"{p['rss']:.0f} | {p['runs']} | {'yes' if lib in on else ''} |"
                )
            ok1, why1 = target_1(pts)
            ok2, why2 = target_2(pts, fast)
            checks.append(f"| {learner} | {_mark(ok1)}: {why1} | {_mark(ok2)}: {why2} |")
        out.append("")
        out.append("| learner | target 1 (default not dominated) | target 2 (fast setting) |")
        out.append("|---|---|---|")
        out.extend(checks)
        out.append("")
    return "\n".join(out)


def figure(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts_all = points(rows)
    sizes = sorted({n for n, _ in pts_all})
    learners = [lrn for lrn in LEARNERS if any((n, lrn) in pts_all for n in sizes)]
    fig, axes = plt.subplots(
        len(sizes), len(learners), figsize=(3.2 * len(learners), 2.8 * len(sizes)), squeeze=False
    )
    libs = sorted({lib for pts in pts_all.values() for lib in pts})
    markers = dict(zip(libs, "os^Dvx*P", strict=False))
    for i, n in enumerate(sizes):
        for j, learner in enumerate(learners):
            ax = axes[i][j]
            pts = pts_all.get((n, learner), {})
            for lib, p in pts.items():
                ax.scatter(p["time"], p["pehe"], marker=markers.get(lib, "o"), label=lib, s=36)
            on = sorted((pts[lib]["time"], pts[lib]["pehe"]) for lib in front(pts))
            if len(on) > 1:
                ax.plot(*zip(*on, strict=True), color="grey", lw=0.8, zorder=0)
            ax.set_xscale("log")
            ax.set_title(f"{learner}, n = {n:,}", fontsize=9)
            if i == len(sizes) - 1:
                ax.set_xlabel("fit + predict (s)")
            if j == 0:
                ax.set_ylabel("PEHE")
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("paths", nargs="+", type=Path)
    ap.add_argument("--fast-label", default="metalearn fast")
    ap.add_argument("--figure", type=Path)
    args = ap.parse_args()
    rows = load(args.paths)
    print(report(rows, args.fast_label))
    if args.figure:
        figure(rows, args.figure)
        print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
