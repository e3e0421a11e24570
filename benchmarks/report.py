"""Turn benchmark JSONL records into the markdown tables of ``RESULTS.md``.

Usage::

    python benchmarks/report.py benchmarks/out/acc10k.jsonl [more.jsonl ...]

Later files override earlier records of the same job. Prints, per (simulator,
n, threads): the median over seeds of PEHE, absolute ATE error, wall time and
peak memory for each learner and library, and metalearn's overhead over its
own bare LightGBM fits (single-thread runs).
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict

LIBS = ["metalearn", "econml", "causalml", "metalearners"]
LEARNERS = ["S", "T", "X", "R", "DR"]


def load(paths: list[str]) -> list[dict]:
    """Records of every file; a later record of the same job replaces an earlier one."""
    rows: dict = {}
    for p in paths:
        with open(p) as fh:
            for line in fh:
                if line.strip():
                    r = json.loads(line)
                    key = (r["sim"], r["n"], r["seed"], r["threads"], r["library"], r["learner"])
                    rows[key] = r
    return list(rows.values())


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def libraries(rows: list[dict]) -> list[str]:
    """The four libraries, with extra metalearn configurations after metalearn."""
    extra = sorted({r["library"] for r in rows} - set(LIBS))
    return [LIBS[0], *extra, *LIBS[1:]]


def table(rows: list[dict], field: str, fmt: str, title: str) -> list[str]:
    LIBS = libraries(rows)
    groups: dict = defaultdict(list)
    for r in rows:
        if r.get("ok") and r.get(field) is not None:
            groups[(r["sim"], r["n"], r["learner"], r["library"])].append(r[field])
    keys = sorted({(s, n) for s, n, _, _ in groups})
    out = [f"**{title}** (median over seeds; best per row in bold)", ""]
    out.append("| sim | n | learner | " + " | ".join(LIBS) + " |")
    out.append("|---|---|---|" + "---|" * len(LIBS))
    for sim, n in keys:
        for learner in LEARNERS:
            vals = {lib: med(groups.get((sim, n, learner, lib), [])) for lib in LIBS}
            present = [v for v in vals.values() if v == v]
            if not present:
                continue
            best = format(min(present), fmt)
            cells = []
            for lib in LIBS:
                v = vals[lib]
                if v != v:
                    cells.append("-")
                else:
                    s = format(v, fmt)
                    cells.append(f"**{s}**" if s == best else s)
            out.append(f"| {sim} | {n:,} | {learner} | " + " | ".join(cells) + " |")
    return [*out, ""]


def overhead(rows: list[dict]) -> list[str]:
    groups: dict = defaultdict(list)
    for r in rows:
        if r.get("library") == "metalearn" and r.get("ok") and r.get("floor_s"):
            groups[(r["sim"], r["n"], r["learner"])].append(r["fit_predict_s"] / r["floor_s"])
    if not groups:
        return []
    out = [
        "**metalearn overhead over its bare LightGBM fits and predictions** "
        "(one thread; wall time / time inside LightGBM; median over seeds)",
        "",
    ]
    out.append("| sim | n | " + " | ".join(LEARNERS) + " |")
    out.append("|---|---|" + "---|" * len(LEARNERS))
    for sim, n in sorted({(s, n) for s, n, _ in groups}):
        cells = [f"{med(groups.get((sim, n, lr), [])):.3f}" for lr in LEARNERS]
        out.append(f"| {sim} | {n:,} | " + " | ".join(cells) + " |")
    return [*out, ""]


def ate_error(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        if r.get("ok") and r.get("ate_hat") is not None and r.get("ate_true") is not None:
            out.append({**r, "ate_err": abs(r["ate_hat"] - r["ate_true"])})
        else:
            out.append(r)
    return out


def main() -> None:
    rows = ate_error(load(sys.argv[1:]))
    lines = []
    lines += table(rows, "pehe", ".3f", "PEHE (lower is better)")
    lines += table(rows, "ate_err", ".3f", "|ATE error|")
    lines += table(rows, "fit_predict_s", ".2f", "fit + predict wall time (s)")
    lines += table(rows, "peak_rss_mb", ".0f", "peak RSS (MiB)")
    lines += overhead(rows)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
