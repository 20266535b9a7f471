"""The EBT reproduction's section of the demo report, from ``ebt.run``'s results."""

from __future__ import annotations

import re

import numpy as np

from inferax.experiments import stats

CLAIM = (
    "Energy-Based Transformers (Gladstone et al. 2025): more optimisation steps at inference "
    "improve the prediction, keeping the lowest-energy of several optimised candidates "
    "(self-verification) improves it further, and an EBT gains more from extra inference "
    "compute than a feed-forward transformer of the same size, also on out-of-distribution "
    "inputs."
)

_METRICS = {
    "digits": [("mse", "MSE"), ("psnr", "PSNR (dB)")],
    "tokens": [("ce", "CE"), ("perplexity", "perplexity"), ("accuracy", "accuracy")],
}
_TITLES = {
    "digits": "Digits: complete the bottom half of held-out 8x8 digits (lower MSE is better)",
    "tokens": "Arithmetic traces: next token on held-out problems (lower CE is better)",
}


# The claims' metrics (lower is better), their declared noise floors (differences below
# are no difference: MSE of [-1, 1] pixels, CE in nats) and the papers' effect, relative
# to the baseline's mean: Gladstone et al. 2025 report gains from thinking longer and
# self-verification of several percent (perplexity; Figs. 5-7); we take 5 % of the
# baseline. Overridable by ``config.noise_floors`` / ``config.effect_size_relative``.
METRIC = {"digits": "mse", "tokens": "ce"}
NOISE_FLOORS = {"mse": 0.002, "ce": 0.01}
EFFECT_SIZE_RELATIVE = 0.05


def verdicts(results: dict) -> dict:
    """``{f"{task}/{subset}": {claim: compare dict}}``: the four claims per subset, paired
    over seeds, lower is better, Holm-corrected per subset.

    Recomputed from the per-seed values in ``results`` (so a report of an older run uses
    today's rules); ``ebt.verdicts`` should delegate here.
    """
    cfg = results["config"]
    floors = {**NOISE_FLOORS, **dict(cfg.get("noise_floors") or {})}
    rel = cfg.get("effect_size_relative") or EFFECT_SIZE_RELATIVE
    ks, gs, vs = cfg["claim_steps"], max(cfg["candidates"]), cfg["verify_steps"]
    out = {}
    for task, metric in METRIC.items():
        for name, node in results.get(task, {}).items():
            if name == "scalars":
                continue

            def vals(*path, node=node, metric=metric):
                for p in path:
                    node = node[p]
                return node[metric]["values"]

            def cmp(claimed, baseline, metric=metric):
                base_mean = abs(float(np.mean(baseline)))
                eff = rel * base_mean if np.isfinite(base_mean) and base_mean > 0 else None
                return stats.compare(claimed, baseline, noise_floor=floors[metric],
                                     effect_size=eff)  # fmt: skip

            one, best = vals("steps", 1), vals("candidates", gs)
            out[f"{task}/{name}"] = stats.correct_family({
                f"{ks} steps vs 1 step": cmp(vals("steps", ks), one),
                f"G={gs} vs G=1 ({vs} steps)": cmp(best, vals("candidates", 1)),
                f"EBT best (G={gs}) vs 1 step (compute gain; feed-forward gain is 0)":
                    cmp(best, one),
                f"EBT best (G={gs}) vs feed-forward": cmp(best, vals("ff")),
            })  # fmt: skip
    return out


def _cell(node: dict, metrics) -> str:
    return " / ".join(stats.format_interval(node[m]) for m, _ in metrics)


def report(results: dict) -> str:
    """Markdown section: the claim once, tables with intervals, verdicts, plots."""
    cfg = results["config"]
    seeds = results["seeds"]
    lines = ["## Energy-Based Transformers (thinking longer, self-verification)", "",
             f"**Claim.** {CLAIM}", "",
             f"Every number: mean over {len(seeds)} seeds ({', '.join(map(str, seeds))}; a seed "
             "trains both models and draws the inference starts) with a 95% Student-t "
             "interval. Verdicts compare paired per-seed values (exact one-sided sign-flip "
             "test, Holm over the four claims of a subset): **holds** (improvement > 0 and "
             "above the noise floor), **fails** (< 0, the same way), **tie within noise**, or "
             "**not decidable at this size** (MDE above 5% of the baseline, or too few "
             "seeds). The "
             "feed-forward baseline has the same trunk, width, data and training steps; it "
             "predicts in one pass, so extra inference compute cannot change it.", ""]  # fmt: skip
    for task, metrics in _METRICS.items():
        if task not in results:
            continue
        names = " / ".join(n for _, n in metrics)
        sc = results[task]["scalars"]
        lines += [f"**{_TITLES[task]}.** Learned step size alpha "
                  f"{stats.format_interval(sc['alpha'])}; final training loss EBT "
                  f"{stats.format_interval(sc['train_loss_final'])}, feed-forward "
                  f"{stats.format_interval(sc['ff_train_loss_final'])}.", ""]  # fmt: skip
        for name, node in results[task].items():
            if name == "scalars":
                continue
            lines += [f"*{name}* ({names})", "", "| inference | EBT | feed-forward |",
                      "|---|---|---|"]  # fmt: skip
            ff = _cell(node["ff"], metrics)
            for k, row in node["steps"].items():
                lines.append(f"| {k} step(s), G = 1 | {_cell(row, metrics)} | {ff} |")
            for g, row in node["candidates"].items():
                lines.append(f"| {cfg['verify_steps']} steps, G = {g} | {_cell(row, metrics)} "
                             f"| {ff} |")  # fmt: skip
            ee = node["energy_error"]
            lines += ["", "Energy of a candidate vs its true error (Spearman, all "
                      f"{max(cfg['candidates'])} candidates): pooled "
                      f"{stats.format_interval(ee['spearman_pooled'])}, within a context "
                      f"{stats.format_interval(ee['spearman_within_context'])}.", ""]  # fmt: skip
    lines += ["**Verdicts** (improvement = baseline - claimed, mean [95% interval]):", "",
              "| setting | claim | improvement | verdict |", "|---|---|---|---|"]  # fmt: skip
    for setting, checks in verdicts(results).items():
        for claim, v in checks.items():
            lines.append(f"| {setting} | {claim} | {stats.format_interval(v['improvement'])} | "
                         f"{stats.describe(v)} |")  # fmt: skip
    lines += ["", "Plots: mean and 95% interval over seeds.", ""]
    for task in _METRICS:
        if task in results:
            lines += [f"![{task} steps](ebt/{task}_steps.png)",
                      f"![{task} candidates](ebt/{task}_candidates.png)"]  # fmt: skip
    if "digits" in results:
        lines.append("![digits completed at 1, 2, 4, 8 steps](ebt/digits_completions.png)")
    return "\n".join(lines) + "\n"


def summary(results: dict) -> dict:
    """``{"claim", "rows": [(setting, measured, verdict)]}`` for the demo's summary."""
    rows = []
    cfg = results["config"]
    for setting, checks in verdicts(results).items():
        task, name = setting.split("/", 1)
        node = results[task][name]
        m = "mse" if task == "digits" else "ce"
        ks, gs = cfg["claim_steps"], max(cfg["candidates"])
        measured = (f"{m.upper()} 1 step {stats.format_interval(node['steps'][1][m])}, "
                    f"{ks} steps {stats.format_interval(node['steps'][ks][m])}, G={gs} "
                    f"{stats.format_interval(node['candidates'][gs][m])}, feed-forward "
                    f"{stats.format_interval(node['ff'][m])}")  # fmt: skip
        verdict = "; ".join(
            f"{re.sub(r' [(][^)]*[)]', '', c)}: {v['verdict']}" for c, v in checks.items()
        )
        rows.append((setting, measured, verdict))
    return {"claim": CLAIM, "rows": rows}
