"""Results, verdicts, plots and report of ``lm_scaling`` (kept apart from the run)."""

from __future__ import annotations

import os

import numpy as np

from inferax.experiments import common, stats
from inferax.search.lm import voting as ls

LAW_TOLERANCE = 0.05  # max |held-out coverage - law fitted without it| for "along the law"
# The smallest effect each claim is about (overridable by ``config.effect_sizes``), read from
# Large Language Monkeys (Brown et al. 2024, Figs. 2-3: coverage gains >= 10 points per 4x
# samples before saturating, majority vote flat; the law fits within a few points) and
# search-and-learn / Puri et al. 2025 (a learned PRM well above chance, clearly below oracle).
EFFECT_SIZES = {
    "coverage_gain": 0.10,  # coverage's gain from k/4 to k, above the floor
    "majority_gain_below_coverage_gain": 0.10,  # gap between the two gains
    "law_residual": LAW_TOLERANCE,  # the paper's residual is ~0: LAW_TOLERANCE from the bound
    "prm_auc_above_chance": 0.10,
    "prm_auc_below_oracle": 0.10,
}
METHOD_NAMES = {
    "bon_prm": "best-of-N, learned PRM",
    "bon_oracle": "best-of-N, oracle PRM",
    "bon_orm": "best-of-N, outcome RM",
    "majority": "majority vote",
    "weighted_prm": "PRM-weighted vote",
    "first_finish": "first finish",
}
# What each verdict claims (the negation is a possible outcome of the data).
CLAIMS = {
    "coverage_rises": "coverage's gain from k/4 to k exceeds the noise floor (1 problem)",
    "majority_plateaus": "majority vote's gain from N/4 to N is below coverage's gain",
    "along_fitted_law": "coverage at the largest k lies within {tol} of exp(a k^b) fitted "
    "to the smaller k (held out)",
    "prm_above_chance": "the learned PRM's AUC is above chance (0.5)",
    "prm_below_oracle": "the learned PRM is imperfect: its AUC is below the oracle PRM's",
}


def effect_sizes(config) -> dict:
    """The claims' effect sizes: ``EFFECT_SIZES`` updated by ``config.effect_sizes``."""
    given = dict(config.get("effect_sizes", None) or {}) if hasattr(config, "get") else {}
    unknown = set(given) - set(EFFECT_SIZES)
    if unknown:
        raise ValueError(f"effect_sizes: expected keys from {sorted(EFFECT_SIZES)}, "
                         f"got {sorted(unknown)}")  # fmt: skip
    return {**EFFECT_SIZES, **given}


def held_out_residual(coverage: dict) -> float:
    """``coverage[kmax] - law(kmax)``, the law ``exp(a k^b)`` fitted to the smaller k.

    NaN when the smaller k do not support a fit (fewer than 3 points, fewer than 2
    inside (0, 1), or no convergence): then the law is not shown to hold.
    """
    ks = sorted(int(k) for k in coverage)
    cov = {int(k): float(v) for k, v in coverage.items()}
    if len(ks) < 4:
        return float("nan")
    try:
        fit = ls.fit_coverage(ks[:-1], [cov[k] for k in ks[:-1]])
    except ValueError:
        return float("nan")
    return float(cov[ks[-1]] - ls.coverage_law([ks[-1]], fit["a"], fit["b"])[0])


def verdicts(config, entries: list[dict]) -> dict:
    """The claims of one difficulty, from per-seed entries, Holm-corrected as one family.

    Args:
        config: the run's config (``budgets``, ``num_problems``, optional
            ``effect_sizes``).
        entries: per seed, ``{"coverage": {k: pass@k}, "accuracy": {method: {N: acc}},
            "prm_auc", "oracle_auc"}``.

    Returns:
        ``{name: stats.compare dict}`` for the names of ``CLAIMS``.
    """
    eff = effect_sizes(config)
    floor = 1.0 / config.num_problems  # one problem: the resolution of an accuracy
    budgets = sorted(config.budgets)
    top = budgets[-1]
    lo_b = max(1, top // 4)
    kmax = max(int(k) for k in entries[0]["coverage"])
    k_lo = max(1, kmax // 4)

    def cov(e, k):
        return {int(a): b for a, b in e["coverage"].items()}[k]

    def acc(e, m, n):
        return {int(a): b for a, b in e["accuracy"][m].items()}[n]

    gain_cov = [cov(e, kmax) - cov(e, k_lo) for e in entries]
    gain_cov_n = [cov(e, top) - cov(e, lo_b) for e in entries]
    gain_maj = [acc(e, "majority", top) - acc(e, "majority", lo_b) for e in entries]
    resid = np.abs([held_out_residual(e["coverage"]) for e in entries])
    auc = [np.nan if e["prm_auc"] is None else e["prm_auc"] for e in entries]
    oracle = [np.nan if e["oracle_auc"] is None else e["oracle_auc"] for e in entries]
    family = {
        "coverage_rises": stats.exceeds(gain_cov, floor, effect_size=eff["coverage_gain"]),
        "majority_plateaus": stats.compare(
            gain_cov_n, gain_maj, lower_is_better=False, noise_floor=floor,
            effect_size=eff["majority_gain_below_coverage_gain"]),
        "along_fitted_law": stats.exceeds(resid, LAW_TOLERANCE, lower_is_better=True,
                                          effect_size=eff["law_residual"]),
        "prm_above_chance": stats.exceeds(auc, 0.5, effect_size=eff["prm_auc_above_chance"]),
        "prm_below_oracle": stats.compare(oracle, auc, lower_is_better=False,
                                          noise_floor=0.01,
                                          effect_size=eff["prm_auc_below_oracle"]),
    }  # fmt: skip
    out = stats.correct_family(family)
    # A metric that is undefined on this data (not a numerical failure) decides nothing:
    # an AUC needs both label classes among the scored steps; a held-out fit needs at
    # least four k (three to fit, one held out).
    undefined = {}
    if any(len(e["coverage"]) < 4 for e in entries):
        undefined["along_fitted_law"] = "fewer than 4 values of k: no held-out fit"
    if any(e["prm_auc"] is None or not np.isfinite(e["prm_auc"]) for e in entries):
        why = "AUC undefined: a held-out set whose scored steps have one label class"
        undefined["prm_above_chance"] = undefined["prm_below_oracle"] = why
    for name, why in undefined.items():
        out[name] = {**out[name], "verdict": stats.NOT_DECIDABLE, "reason": why}
    return out


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
        gain_cov = [e["coverage"][top] - e["coverage"][lo_b] for e in entries]
        gain_maj = [e["accuracy"]["majority"][top] - e["accuracy"]["majority"][lo_b]
                    for e in entries]  # fmt: skip
        resid = [held_out_residual(e["coverage"]) for e in entries]
        fits = [e["fit"] for e in entries if e["fit"] is not None]
        fit = {k: stats.t_interval([f[k] for f in fits]) for k in ("a", "b")} if fits else None
        out["difficulty"][d] = {
            "per_seed": entries,
            "accuracy": stats.summarize_tree(acc),
            "coverage": stats.summarize_tree(cov),
            "single_sample": stats.t_interval([e["single_sample"] for e in entries]),
            "tokens": {b: stats.t_interval([e["tokens"][b] for e in entries]) for b in budgets},
            "fit": fit,
            "held_out_residual": stats.t_interval(resid),
            "prm_auc": stats.t_interval([e["prm_auc"] for e in entries]),
            "oracle_auc": float(np.mean([e["oracle_auc"] for e in entries])),
            "gain": {"coverage": stats.t_interval(gain_cov),
                     "majority": stats.t_interval(gain_maj), "from": lo_b, "to": top},
            "verdicts": verdicts(config, entries),
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


def _settings(d, r, cfg) -> dict:
    """The verdict rows' setting text, with the numbers each claim is decided on."""
    g, kmax = r["gain"], max(int(k) for k in r["coverage"])
    return {
        "coverage_rises": (f"{d} ops: coverage gain k={max(1, kmax // 4)}->{kmax} exceeds "
                           f"1/{cfg['num_problems']} problems"),
        "majority_plateaus": f"{d} ops: gain N={g['from']}->{g['to']}, majority below coverage",
        "along_fitted_law": (f"{d} ops: coverage at k={kmax} within {LAW_TOLERANCE} of the law "
                             "fitted to smaller k"),
        "prm_above_chance": f"{d} ops: learned PRM AUC above 0.5",
        "prm_below_oracle": f"{d} ops: learned PRM AUC below oracle ({r['oracle_auc']:.2f})",
    }  # fmt: skip


def _measured(key, r, v) -> str:
    g = r["gain"]
    if key == "majority_plateaus":
        return (f"coverage {stats.format_interval(g['coverage'])} vs majority "
                f"{stats.format_interval(g['majority'])}")  # fmt: skip
    if key == "along_fitted_law":
        return f"held-out residual {stats.format_interval(r['held_out_residual'])}"
    if key in ("prm_above_chance", "prm_below_oracle"):
        return f"AUC {stats.format_interval(r['prm_auc'])}"
    return f"gain minus floor {stats.format_interval(v['improvement'])}"


def summary(results: dict) -> dict:
    """``{"claim", "rows": [(setting, measured, verdict)]}``: one row per verdict."""
    rows = []
    for d, r in results["difficulty"].items():
        text = _settings(d, r, results["config"])
        for key, v in r["verdicts"].items():
            rows.append((text.get(key, f"{d} ops: {key}"), _measured(key, r, v),
                         stats.describe(v)))  # fmt: skip
    if "search" in results:
        from inferax.experiments import lm_search_report as srep

        rows += srep.summary_rows(results["search"])
    return {"claim": results["claim"], "rows": rows}


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
