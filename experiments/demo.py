"""`make demo`: the quick version of every experiment, and a report.

Runs each experiment's ``quick`` config into ``<workdir>/<name>``, caches the
trained models under ``--cache_dir`` (so a second demo trains nothing), and
writes ``<workdir>/REPORT.md``: each paper's claim beside our measured numbers,
with the plots.
"""

from __future__ import annotations

import importlib
import json
import os
import time

from absl import app, flags, logging

# name -> (experiment module, config module); later issues append here.
EXPERIMENTS = {
    "sway": ("inferax.experiments.sway", "inferax.experiments.configs.sway"),
    "fkc": ("inferax.experiments.fkc", "inferax.experiments.configs.fkc"),
    "flow_scaling": (
        "inferax.experiments.flow_scaling",
        "inferax.experiments.configs.flow_scaling",
    ),
    "lm_scaling": ("inferax.experiments.lm_scaling", "inferax.experiments.configs.lm_scaling"),
    "ebt": ("inferax.experiments.ebt", "inferax.experiments.configs.ebt"),
}


def _define_flags():
    """The binary's flags, defined when it runs (importing this module defines none)."""
    return (
        flags.DEFINE_string("workdir", "runs/demo", "where results and REPORT.md go"),
        flags.DEFINE_string("cache_dir", "runs/cache", "where trained models are cached"),
        flags.DEFINE_list("only", [], "run only these experiments (default: all)"),
    )


def run_all(workdir: str, cache_dir: str, only: list[str] | None = None) -> str:
    unknown = set(only or []) - set(EXPERIMENTS)
    if unknown:
        raise ValueError(f"only: expected names from {sorted(EXPERIMENTS)}, got {sorted(unknown)}")
    os.makedirs(workdir, exist_ok=True)
    sections, timings, rows = [], {}, []
    for name, (exp_mod, cfg_mod) in EXPERIMENTS.items():
        if only and name not in only:
            continue
        exp = importlib.import_module(exp_mod)
        config = importlib.import_module(cfg_mod).get_config("quick")
        config.cache_dir = os.path.join(cache_dir, name)
        start = time.time()
        logging.info("demo: running %s (quick)", name)
        results = exp.run(config, os.path.join(workdir, name))
        timings[name] = time.time() - start
        sections.append(exp.report(results))
        rows.append((name, exp.summary(results)))
    header = [
        "# inferax demo report",
        "",
        "Quick versions of the reproductions, run by `make demo` on this machine's CPU. "
        "Each section puts the paper's claim beside our measured numbers; every number "
        "comes from `<name>/results.json` of this run (which keeps the per-seed values). "
        "Numbers are means over seeds with 95% Student-t intervals in brackets; a verdict "
        "(holds / fails / tie within noise) is decided by the interval of the paired "
        "per-seed difference and the metric's noise floor, never by one draw.",
        "",
        "| experiment | wall time (s) |",
        "|---|---|",
    ] + [f"| {k} | {v:.0f} |" for k, v in timings.items()]
    header += ["", "## Summary", "", summary_table(rows)]
    path = os.path.join(workdir, "REPORT.md")
    with open(path, "w") as f:
        f.write("\n".join(header) + "\n\n" + "\n".join(sections))
    with open(os.path.join(workdir, "timings.json"), "w") as f:
        json.dump(timings, f)
    logging.info("demo: wrote %s", path)
    print(f"wrote {path}")
    return path


def summary_table(rows: list[tuple[str, dict]]) -> str:
    """Per experiment: the paper's claim once, then setting / measured / verdict rows.

    Args:
        rows: ``(experiment name, summary)`` with ``summary = {"claim": str,
            "rows": [(setting, measured, verdict)]}`` (each experiment's ``summary``).
    """
    lines = []
    for name, s in rows:
        lines += [f"**{name}.** Claim: {s['claim']}", "", "| setting | measured here | verdict |",
                  "|---|---|---|"]  # fmt: skip
        lines += [f"| {a} | {b} | {c} |" for a, b, c in s["rows"]]
        lines.append("")
    return "\n".join(lines)


def main():
    workdir, cache_dir, only = _define_flags()

    def _main(argv):
        if len(argv) > 1:
            raise ValueError(f"unexpected positional arguments: {argv[1:]}")
        run_all(workdir.value, cache_dir.value, only.value)

    app.run(_main)


if __name__ == "__main__":
    main()
