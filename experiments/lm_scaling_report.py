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
    "majority_plateaus": "majority vote's gain from N/4 to N is below coverage's gain, the two "
    "measured on disjoint halves of each problem's samples",
    "along_fitted_law": "coverage at the largest k lies within {tol} of exp(a k^b) fitted "
    "to the smaller k (held out)",
    "prm_above_chance": "the learned PRM ranks a problem's correct steps above its wrong ones "
    "(within-problem AUC above chance, 0.5)",
    "prm_below_oracle": "the learned PRM is imperfect: its within-problem AUC is below the "
    "oracle PRM's",
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


def pooled(entries: list[dict], *path) -> np.ndarray:
    """The per-problem values at ``entry["per_problem"][path...]`` of every seed, concatenated:
    the paired units of the verdicts (a seed only redraws the problems and the noise, and
    every method sees the same problems with the same samples, so per-problem outcomes
    are paired across methods). Integer keys also match their JSON string form."""
    out = []
    for e in entries:
        node = e["per_problem"]
        for p in path:
            node = node[p] if p in node else node[str(p)]
        out.append(np.asarray(node, np.float64))
    return np.concatenate(out)


def num_units(entries: list[dict]) -> int:
    """Held-out problems pooled over the seeds (the unit count of the verdicts)."""
    return int(sum(len(e["per_problem"]["single"]) for e in entries))


def law_residuals(entries: list[dict]) -> tuple[np.ndarray, float]:
    """Per-problem residuals of coverage at the largest k from the law ``exp(a k^b)``
    fitted to the POOLED coverage at the smaller k (held out), and their mean.

    ``pass@kmax_i - law(kmax)``: their mean is the pooled coverage's held-out
    residual (the fit is taken as given). Empty with fewer than 4 k or no fit.
    """
    ks = sorted(int(k) for k in entries[0]["per_problem"]["coverage"])
    if len(ks) < 4:
        return np.zeros(0), float("nan")
    cov = {k: pooled(entries, "coverage", k) for k in ks}
    try:
        fit = ls.fit_coverage(ks[:-1], [float(cov[k].mean()) for k in ks[:-1]])
    except ValueError:
        return np.zeros(0), float("nan")
    r = cov[ks[-1]] - float(ls.coverage_law([ks[-1]], fit["a"], fit["b"])[0])
    return r, float(r.mean())


def verdicts(config, entries: list[dict]) -> dict:
    """The claims of one difficulty, decided over held-out PROBLEMS pooled over seeds,
    Holm-corrected as one family.

    Args:
        config: the run's config (``budgets``, optional ``effect_sizes``).
        entries: per seed, ``{"per_problem": {"coverage": {k: [pass@k per problem]},
            "halves": {"coverage_gain": [...], "majority_gain": [...], "from", "to"},
            "auc": {"learned": [...], "oracle": [...]}, "single": [...]}}``.

    Returns:
        ``{name: stats.compare dict}`` for the names of ``CLAIMS``.
    """
    eff = effect_sizes(config)
    floor = 1.0 / num_units(entries)  # one problem: the resolution of an accuracy
    ks = sorted(int(k) for k in entries[0]["per_problem"]["coverage"])
    kmax = ks[-1]
    k_lo = max(k for k in ks if k <= max(1, kmax // 4))
    gain_cov = pooled(entries, "coverage", kmax) - pooled(entries, "coverage", k_lo)
    family = {"coverage_rises": stats.exceeds(gain_cov, floor, effect_size=eff["coverage_gain"])}
    undefined = {}
    if all(e["per_problem"].get("halves") for e in entries):
        family["majority_plateaus"] = stats.compare(
            pooled(entries, "halves", "coverage_gain"), pooled(entries, "halves", "majority_gain"),
            lower_is_better=False, noise_floor=floor,
            effect_size=eff["majority_gain_below_coverage_gain"])  # fmt: skip
    else:
        undefined["majority_plateaus"] = "fewer than 2 samples: no disjoint halves"
    resid, mean = law_residuals(entries)
    if resid.size:
        # The binding side of the two one-sided tests of |residual| < tolerance.
        if mean >= 0:
            family["along_fitted_law"] = stats.exceeds(
                resid, LAW_TOLERANCE, lower_is_better=True, effect_size=eff["law_residual"]
            )
        else:
            family["along_fitted_law"] = stats.exceeds(
                resid, -LAW_TOLERANCE, effect_size=eff["law_residual"]
            )
    else:
        undefined["along_fitted_law"] = "fewer than 4 values of k or no fit: no held-out fit"
    auc_l, auc_o = pooled(entries, "auc", "learned"), pooled(entries, "auc", "oracle")
    if auc_l.size:
        family["prm_above_chance"] = stats.exceeds(
            auc_l, 0.5, effect_size=eff["prm_auc_above_chance"]
        )
        family["prm_below_oracle"] = stats.compare(
            auc_o, auc_l, lower_is_better=False, noise_floor=0.01,
            effect_size=eff["prm_auc_below_oracle"])  # fmt: skip
    else:
        # An AUC needs both label classes among one problem's scored steps.
        undefined["prm_above_chance"] = undefined["prm_below_oracle"] = (
            "AUC undefined: no held-out problem whose scored steps have both labels"
        )
    out = stats.correct_family(family)
    for name, why in undefined.items():
        out[name] = {"verdict": stats.NOT_DECIDABLE, "reason": why}
    return {k: out[k] for k in CLAIMS}


def collect(config, per_seed: dict, models: dict) -> dict:
    """Pooled per-problem numbers with intervals over problems, and the verdicts, per
    difficulty (the per-seed entries are kept under ``per_seed``)."""
    budgets = list(config.budgets)
    out = {"config": config.to_dict(), "claim": stats_claim(), "difficulty": {}}
    out["train"] = {
        "lm_loss_final": float(np.mean(models["lm_loss"][-50:])),
        "rm_loss_final": float(np.mean(models["rm_loss"][-50:])),
        "prm_train_fraction_correct": models["prm_data_correct"],
    }
    for d, entries in per_seed.items():
        methods = list(entries[0]["per_problem"]["correct"])
        acc = {m: {b: stats.t_interval(pooled(entries, "correct", m, b)) for b in budgets}
               for m in methods}  # fmt: skip
        ks = sorted(int(k) for k in entries[0]["per_problem"]["coverage"])
        cov = {k: stats.t_interval(pooled(entries, "coverage", k)) for k in ks}
        halves = entries[0]["per_problem"].get("halves")
        gain = None
        if all(e["per_problem"].get("halves") for e in entries):
            gain = {"coverage": stats.t_interval(pooled(entries, "halves", "coverage_gain")),
                    "majority": stats.t_interval(pooled(entries, "halves", "majority_gain")),
                    "from": halves["from"], "to": halves["to"]}  # fmt: skip
        resid, _ = law_residuals(entries)
        fits = [e["fit"] for e in entries if e.get("fit") is not None]
        fit = {k: stats.t_interval([f[k] for f in fits]) for k in ("a", "b")} if fits else None
        auc_l = pooled(entries, "auc", "learned")
        out["difficulty"][d] = {
            "per_seed": entries,
            "num_problems": num_units(entries),
            "accuracy": acc,
            "coverage": cov,
            "single_sample": stats.t_interval(pooled(entries, "single")),
            "tokens": {b: stats.t_interval([e["tokens"][b] for e in entries]) for b in budgets},
            "fit": fit,
            "held_out_residual": (stats.t_interval(resid) if resid.size
                                  else stats.t_interval([float("nan")])),
            "prm_auc": stats.t_interval([e["prm_auc"] for e in entries]),
            "prm_auc_within_problem": (stats.t_interval(auc_l) if auc_l.size
                                       else stats.t_interval([float("nan")])),
            "oracle_auc": float(np.mean([e["oracle_auc"] for e in entries])),
            "gain": gain,
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


def _settings(d, r) -> dict:
    """The verdict rows' setting text, with the numbers each claim is decided on."""
    kmax, n = max(int(k) for k in r["coverage"]), r.get("num_problems", "?")
    g = r["gain"] or {"from": "-", "to": "-"}
    return {
        "coverage_rises": (f"{d} ops ({n} problems): coverage gain k={max(1, kmax // 4)}->"
                           f"{kmax} exceeds 1/{n}"),
        "majority_plateaus": (f"{d} ops ({n} problems): gain N={g['from']}->{g['to']}, majority "
                              "(2nd half of the samples) below coverage (1st half)"),
        "along_fitted_law": (f"{d} ops ({n} problems): coverage at k={kmax} within "
                             f"{LAW_TOLERANCE} of the law fitted to smaller k"),
        "prm_above_chance": f"{d} ops: learned PRM within-problem AUC above 0.5",
        "prm_below_oracle": (f"{d} ops: learned PRM within-problem AUC below oracle "
                             f"({r['oracle_auc']:.2f})"),
    }  # fmt: skip


def _measured(key, r, v) -> str:
    g = r["gain"]
    if key == "majority_plateaus" and g:
        return (f"coverage {stats.format_interval(g['coverage'])} vs majority "
                f"{stats.format_interval(g['majority'])}")  # fmt: skip
    if key == "along_fitted_law":
        return f"held-out residual {stats.format_interval(r['held_out_residual'])}"
    if key in ("prm_above_chance", "prm_below_oracle"):
        return (f"AUC {stats.format_interval(r['prm_auc_within_problem'])} within problems, "
                f"{stats.format_interval(r['prm_auc'])} over all steps")  # fmt: skip
    if "improvement" not in v:
        return "-"
    return f"gain minus floor {stats.format_interval(v['improvement'])}"


def describe(v: dict) -> str:
    """``stats.describe`` over problems, with the MDE named where it decides."""
    if "improvement" not in v:  # undefined on this data
        return f"{v['verdict']} ({v['reason']})"
    text = stats.describe(v).replace(" seeds", " problems")
    if v["verdict"] == stats.NOT_DECIDABLE:
        mde = v["mde"]
        mde_text = f"{mde:.3g}" if np.isfinite(mde) else str(mde)
        text = f"{stats.NOT_DECIDABLE}, MDE = {mde_text}" + text[len(stats.NOT_DECIDABLE) :]
    return text


def summary(results: dict) -> dict:
    """``{"claim", "rows": [(setting, measured, verdict)]}``: one row per verdict."""
    rows = []
    for d, r in results["difficulty"].items():
        text = _settings(d, r)
        for key, v in r["verdicts"].items():
            rows.append((text.get(key, f"{d} ops: {key}"), _measured(key, r, v), describe(v)))
    if "search" in results:
        from inferax.experiments import lm_search_report as srep

        rows += srep.summary_rows(results["search"])
    return {"claim": results["claim"], "rows": rows}


def report(results: dict) -> str:
    lines = ["## lm_scaling: repeated sampling on multi-step arithmetic", "",
             f"Claim: {results['claim']}.", ""]  # fmt: skip
    for d, r in results["difficulty"].items():
        budgets = list(next(iter(r["accuracy"].values())))
        lines += [f"### {d} operations ({r.get('num_problems', '?')} held-out problems; "
                  f"single-sample accuracy {stats.format_interval(r['single_sample'])}; "
                  f"intervals over problems)", "",
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
