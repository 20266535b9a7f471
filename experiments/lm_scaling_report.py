"""Results, verdicts, plots and report of ``lm_scaling`` (kept apart from the run)."""

from __future__ import annotations

import os

import numpy as np

from inferax.experiments import common, stats
from inferax.search.lm import voting as ls

LAW_TOLERANCE = 0.05  # max |coverage - fitted law| for "along the fitted law"
METHOD_NAMES = {
    "bon_prm": "best-of-N, learned PRM",
    "bon_oracle": "best-of-N, oracle PRM",
    "bon_orm": "best-of-N, outcome RM",
    "majority": "majority vote",
    "weighted_prm": "PRM-weighted vote",
    "first_finish": "first finish",
}


def _law_residual(entry) -> float:
    fit = entry["fit"]
    if fit is None:
        return float("nan")
    ks = np.asarray(list(entry["coverage"]), np.float64)
    cov = np.asarray(list(entry["coverage"].values()))
    return float(np.max(np.abs(cov - ls.coverage_law(ks, fit["a"], fit["b"]))))


def collect(config, per_seed: dict, models: dict) -> dict:
    """Per-seed numbers, their intervals and the verdicts, per difficulty."""
    budgets = list(config.budgets)
    top, lo_b = max(budgets), max(1, max(budgets) // 4)
    out = {"config": config.to_dict(), "claim": stats_claim(), "difficulty": {}}
    out["train"] = {
        "lm_loss_final": float(np.mean(models["lm_loss"][-50:])),
        "rm_loss_final": float(np.mean(models["rm_loss"][-50:])),
        "prm_train_fraction_correct": models["prm_data_correct"],
    }
    for d, entries in per_seed.items():
        acc = {m: {b: [e["accuracy"][m][b] for e in entries] for b in budgets}
               for m in entries[0]["accuracy"]}  # fmt: skip
        cov = {k: [e["coverage"][k] for e in entries] for k in entries[0]["coverage"]}
        kmax = max(cov)
        gain_cov = [e["coverage"][top] - e["coverage"][lo_b] for e in entries]
        gain_maj = [e["accuracy"]["majority"][top] - e["accuracy"]["majority"][lo_b]
                    for e in entries]  # fmt: skip
        resid = [_law_residual(e) for e in entries]
        auc = [e["prm_auc"] for e in entries]
        along = bool(np.all(np.isfinite(resid)) and np.mean(resid) < LAW_TOLERANCE)
        auc_iv = stats.t_interval(auc)
        verdicts = {
            "coverage_rises": stats.compare(
                cov[kmax], cov[max(1, kmax // 4)], lower_is_better=False),
            "majority_plateaus": stats.compare(gain_cov, gain_maj, lower_is_better=False),
            # the plateau: majority vote at the largest N stays below coverage at the same N
            "majority_below_coverage": stats.compare(
                cov[top] if top in cov else cov[kmax], acc["majority"][top], lower_is_better=False
            ),
            "along_fitted_law": stats.HOLDS if along else stats.FAILS,
            "prm_between_chance_and_oracle": stats.HOLDS
            if auc_iv["finite"] and auc_iv["lo"] > 0.5 and auc_iv["hi"] < 1.0 else stats.TIE,
        }  # fmt: skip
        fits = [e["fit"] for e in entries if e["fit"] is not None]
        fit = {k: stats.t_interval([f[k] for f in fits]) for k in ("a", "b")} if fits else None
        out["difficulty"][d] = {
            "per_seed": entries,
            "accuracy": stats.summarize_tree(acc),
            "coverage": stats.summarize_tree(cov),
            "single_sample": stats.t_interval([e["single_sample"] for e in entries]),
            "tokens": {b: stats.t_interval([e["tokens"][b] for e in entries]) for b in budgets},
            "fit": fit,
            "law_residual": stats.t_interval(resid),
            "prm_auc": auc_iv,
            "oracle_auc": float(np.mean([e["oracle_auc"] for e in entries])),
            "gain": {"coverage": stats.t_interval(gain_cov),
                     "majority": stats.t_interval(gain_maj), "from": lo_b, "to": top},
            "verdicts": verdicts,
        }  # fmt: skip
    return out


def stats_claim() -> str:
    from inferax.experiments.lm_scaling import CLAIM

    return CLAIM


def plots(results: dict, workdir: str) -> list[str]:
    panels_acc, panels_cov = [], []
    for d, r in results["difficulty"].items():
        series = {METHOD_NAMES[m]: (list(v), [iv["mean"] for iv in v.values()])
                  for m, v in r["accuracy"].items()}  # fmt: skip
        ks = list(r["coverage"])
        series["coverage (pass@N)"] = (ks, [iv["mean"] for iv in r["coverage"].values()])
        panels_acc.append((f"{d} operations", series))
        cov = {"coverage": (ks, [iv["mean"] for iv in r["coverage"].values()])}
        if r["fit"] is not None:
            a, b = r["fit"]["a"]["mean"], r["fit"]["b"]["mean"]
            cov[f"exp({a:.2f} k^{b:.2f})"] = (ks, ls.coverage_law(ks, a, b).tolist())
        panels_cov.append((f"{d} operations", cov))
    return [
        common.line_plot(os.path.join(workdir, "accuracy_vs_n.png"), panels_acc,
                         xlabel="samples N", ylabel="accuracy"),
        common.line_plot(os.path.join(workdir, "coverage_fit.png"), panels_cov,
                         xlabel="k", ylabel="coverage"),
    ]  # fmt: skip


def summary(results: dict) -> dict:
    rows = []
    for d, r in results["difficulty"].items():
        g = r["gain"]
        v = r["verdicts"]
        rows.append(
            (
                f"{d} ops: coverage at k={max(r['coverage'])} minus k={max(r['coverage']) // 4}",
                stats.format_interval(v["coverage_rises"]["improvement"]),
                stats.describe(v["coverage_rises"]),
            )
        )
        rows.append(
            (
                f"{d} ops: gain N={g['from']}->{g['to']}, coverage vs majority",
                f"{stats.format_interval(g['coverage'])} vs {stats.format_interval(g['majority'])}",
                stats.describe(v["majority_plateaus"]),
            )
        )
        top = g["to"]
        rows.append(
            (
                f"{d} ops: N={top}, coverage minus majority vote",
                stats.format_interval(v["majority_below_coverage"]["improvement"]),
                stats.describe(v["majority_below_coverage"]),
            )
        )
        rows.append(
            (
                f"{d} ops: max |coverage - fitted law|",
                stats.format_interval(r["law_residual"]),
                v["along_fitted_law"],
            )
        )
        rows.append(
            (
                f"{d} ops: learned PRM AUC (oracle {r['oracle_auc']:.2f})",
                stats.format_interval(r["prm_auc"]),
                v["prm_between_chance_and_oracle"],
            )
        )
    if "search" in results:
        from inferax.experiments import lm_search_report as srep

        rows += srep.summary_rows(results["search"])
    return {"claim": results["claim"], "rows": rows}  # fmt: skip


def report(results: dict) -> str:
    lines = ["## lm_scaling: repeated sampling on multi-step arithmetic", "",
             f"Claim: {results['claim']}.", ""]  # fmt: skip
    for d, r in results["difficulty"].items():
        budgets = list(next(iter(r["accuracy"].values())))
        lines += [f"### {d} operations (single-sample accuracy "
                  f"{stats.format_interval(r['single_sample'])})", "",
                  "| method | " + " | ".join(f"N={b}" for b in budgets) + " |",
                  "|---" * (len(budgets) + 1) + "|"]  # fmt: skip
        for m, v in r["accuracy"].items():
            lines.append(
                f"| {METHOD_NAMES[m]} | "
                + " | ".join(stats.format_interval(v[b]) for b in budgets)
                + " |"
            )
        lines.append("| coverage pass@N | " + " | ".join(
            stats.format_interval(r["coverage"][b]) if b in r["coverage"] else "-"
            for b in budgets) + " |")  # fmt: skip
        lines.append("")
    if "search" in results:
        from inferax.experiments import lm_search_report as srep

        lines += srep.report_lines(results["search"])
    s = summary(results)
    lines += ["| setting | measured | verdict |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in s["rows"]]
    lines += ["", *[f"![]({os.path.basename(p)})" for p in results.get("plots", [])], ""]
    return "\n".join(lines)
