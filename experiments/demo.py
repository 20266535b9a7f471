"""`make demo`: the quick version of every experiment, and a report.

Runs each experiment's ``quick`` config (``--variant=full``: its full config, about
half an hour each on 2 CPU cores) into ``<workdir>/<name>``, caches the trained models
under ``--cache_dir`` (so a second demo trains nothing), and writes
``<workdir>/REPORT.md``: each paper's claim beside our measured numbers, with the plots.
The committed runs are ``results/quick`` (``make demo``) and ``results/full``.
"""

from __future__ import annotations

import importlib
import json
import os
import time

from absl import app, flags, logging

VARIANTS = ("quick", "full")
# The report's opening words per variant (timings.json's "variant", "quick" if absent).
HEADINGS = {
    "quick": "Quick versions of the reproductions (`make demo`).",
    "full": "Full configs of the reproductions (`demo --variant=full`).",
}

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
        flags.DEFINE_bool(
            "report_only",
            False,
            "rebuild REPORT.md from the results files under --workdir without running anything",
        ),
        flags.DEFINE_enum("variant", "quick", VARIANTS, "which config of each experiment"),
    )


def run_all(
    workdir: str, cache_dir: str, only: list[str] | None = None, variant: str = "quick"
) -> str:
    """Runs each experiment's config into ``<workdir>/<name>`` and writes the report.

    Args:
        workdir: where each experiment's folder, ``timings.json`` and ``REPORT.md`` go.
        cache_dir: trained models are cached under ``<cache_dir>/<name>``.
        only: run only these experiments (default: all of ``EXPERIMENTS``).
        variant: ``"quick"`` (``make demo``) or ``"full"``.

    Returns:
        The path of ``REPORT.md``.

    Raises:
        ValueError: ``only`` names an experiment that does not exist, or ``variant`` is
            not one of ``VARIANTS``.
    """
    unknown = set(only or []) - set(EXPERIMENTS)
    if unknown:
        raise ValueError(f"only: expected names from {sorted(EXPERIMENTS)}, got {sorted(unknown)}")
    if variant not in VARIANTS:
        raise ValueError(f"variant: expected one of {VARIANTS}, got {variant!r}")
    os.makedirs(workdir, exist_ok=True)
    timings, started = {}, time.gmtime()
    for name, (exp_mod, cfg_mod) in EXPERIMENTS.items():
        if only and name not in only:
            continue
        exp = importlib.import_module(exp_mod)
        config = importlib.import_module(cfg_mod).get_config(variant)
        config.cache_dir = os.path.join(cache_dir, name)
        start = time.time()
        logging.info("demo: running %s (%s)", name, variant)
        exp.run(config, os.path.join(workdir, name))
        timings[name] = time.time() - start
    stamp = {"date": time.strftime("%Y-%m-%d %H:%M UTC", started),
             "machine": machine(), "variant": variant}  # fmt: skip
    with open(os.path.join(workdir, "timings.json"), "w") as f:
        json.dump({"seconds": timings, **stamp}, f, indent=1)
    path = write_report(workdir)
    logging.info("demo: wrote %s", path)
    print(f"wrote {path}")
    return path


def machine() -> str:
    """A one-line description of the host: CPU count, platform, JAX backend."""
    import platform

    import jax

    return (f"{os.cpu_count()} CPU cores ({platform.machine()}, {platform.system()}), "
            f"JAX {jax.__version__} on {jax.default_backend()}")  # fmt: skip


def write_report(workdir: str) -> str:
    """Writes ``<workdir>/REPORT.md`` from the ``<name>/results.json`` files under it.

    The report is a function of the results files (and ``timings.json``), so it can be
    rebuilt from committed results without running anything
    (``python -m inferax.experiments.demo --report_only --workdir=results/quick``).

    Returns:
        The path of ``REPORT.md``.

    Raises:
        FileNotFoundError: no experiment of ``EXPERIMENTS`` has a ``results.json`` there.
    """
    from inferax.experiments import readme_results

    timing_path = os.path.join(workdir, "timings.json")
    stamp = {}
    if os.path.exists(timing_path):
        with open(timing_path) as f:
            stamp = json.load(f)
    timings = stamp.get("seconds", {})
    sections, rows = [], []
    for name, (exp_mod, _) in EXPERIMENTS.items():
        path = os.path.join(workdir, name, "results.json")
        if not os.path.exists(path):
            continue
        exp = importlib.import_module(exp_mod)
        with open(path) as f:
            results = readme_results.restore_keys(json.load(f))
        sections.append(exp.report(results))
        rows.append((name, exp.summary(results)))
    if not rows:
        raise FileNotFoundError(f"workdir: expected <experiment>/results.json for one of "
                                f"{sorted(EXPERIMENTS)} under {workdir!r}, found none")  # fmt: skip
    when = (f"Run {stamp['date']} on {stamp['machine']}; total "
            f"{sum(timings.values()) / 60:.1f} min. ") if "date" in stamp else ""  # fmt: skip
    header = [
        "# inferax demo report",
        "",
        HEADINGS[stamp.get("variant", "quick")] + " " + when + "Each section puts "
        "the paper's claim beside our measured numbers; every number comes from "
        "`<name>/results.json` of this run, which keeps the per-seed (and, for the "
        "language-model experiments, per-problem) values. Numbers are means with 95% "
        "Student-t intervals in brackets. A verdict comes from an exact one-sided paired "
        "sign-flip test over the paired units (seeds, or held-out problems), Holm-corrected "
        "within its family, against the metric's noise floor: holds / fails / tie within "
        "noise, or not decidable at this size when the minimum detectable effect (MDE) at "
        "this many units exceeds the paper's effect; fewer than 5 units decide nothing "
        "(`inferax.experiments.stats`).",
        "",
    ]
    if timings:
        header += ["| experiment | wall time (s) |", "|---|---|"]
        header += [f"| {k} | {v:.0f} |" for k, v in timings.items()]
    header += ["", "## Summary", "", summary_table(rows)]
    path = os.path.join(workdir, "REPORT.md")
    with open(path, "w") as f:
        f.write("\n".join(header) + "\n\n" + "\n".join(sections))
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
    workdir, cache_dir, only, report_only, variant = _define_flags()

    def _main(argv):
        if len(argv) > 1:
            raise ValueError(f"unexpected positional arguments: {argv[1:]}")
        if report_only.value:
            print(f"wrote {write_report(workdir.value)}")
        else:
            run_all(workdir.value, cache_dir.value, only.value, variant.value)

    app.run(_main)


if __name__ == "__main__":
    main()
