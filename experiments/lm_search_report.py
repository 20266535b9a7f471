"""Intervals, verdicts, the compute-optimal table, plots and the report section of the
step-level search part of ``lm_scaling`` (``lm_search``)."""

from __future__ import annotations

import os

import numpy as np

from inferax.experiments import common, stats
from inferax.experiments.lm_search import NAMES

CLAIMS = (
    "particle filtering scales better than beam search and best-of-N under an imperfect "
    "PRM (4-16x better scaling rate), beam search over-exploits the imperfect PRM, and with "
    "an oracle PRM the gap closes (Puri et al. 2025)"
)
# Best-of-N from the repeated-sampling pool (``lm_scaling``) enters the comparison as:
BASELINES = {"learned": {"bon": "bon_prm", "weighted_vote": "weighted_prm"},
             "oracle": {"bon": "bon_oracle"}}  # fmt: skip
LABELS = {**NAMES, "bon": "best-of-N", "weighted_vote": "PRM-weighted vote"}
# The smallest accuracy effect each claim is about (overridable by
# ``config.search.effect_sizes``): Puri et al. 2025 (Fig. 1, Table 1) report particle
# filtering ahead of beam search and best-of-N by >= 10 points of accuracy at equal
# budget under a learned PRM; we take 0.10 for every accuracy comparison.
EFFECT_SIZES = {"accuracy": 0.10}


def _table(search: list[dict], base: list[dict], kind: str, budgets) -> dict:
    """``{method: {N: [per-seed accuracy]}}`` for one PRM, baselines included."""
    out: dict = {}
    for m in search[0]["accuracy"]:
        if kind in search[0]["accuracy"][m]:
            out[m] = {n: [e["accuracy"][m][kind][n] for e in search] for n in budgets}
    for name, key in BASELINES[kind].items():
        if key in base[0]["accuracy"]:
            out[name] = {n: [e["accuracy"][key][n] for e in base] for n in budgets}
    return out


def _gain(acc: dict, m: str, lo, hi) -> list[float]:
    return [b - a for a, b in zip(acc[m][lo], acc[m][hi], strict=True)]


def budget_ratio(acc_a: dict, acc_b: dict, budgets) -> float | None:
    """How many times more budget method B needs to reach method A's mean accuracy at the
    smallest budget where A beats B (inf when B never reaches it; None when A never
    beats B). Mean accuracies, linear interpolation in log N."""
    nb = np.log(np.asarray(budgets, np.float64))
    ma = np.asarray([np.mean(acc_a[n]) for n in budgets])
    mb = np.asarray([np.mean(acc_b[n]) for n in budgets])
    for i, n in enumerate(budgets):
        if ma[i] <= mb[i]:
            continue
        above = np.flatnonzero(mb >= ma[i])
        if above.size == 0:
            return float("inf")
        j = int(above[0])
        if j == 0:
            return float(budgets[0]) / n
        x = nb[j - 1] + (ma[i] - mb[j - 1]) / (mb[j] - mb[j - 1]) * (nb[j] - nb[j - 1])
        return float(np.exp(x)) / n
    return None


def _effect(config) -> float:
    given = config.search.get("effect_sizes", None) or {}
    unknown = set(given) - set(EFFECT_SIZES)
    if unknown:
        raise ValueError(f"search.effect_sizes: expected keys from {sorted(EFFECT_SIZES)}, "
                         f"got {sorted(unknown)}")  # fmt: skip
    return {**EFFECT_SIZES, **dict(given)}["accuracy"]


def verdicts(acc: dict, single: list[float], budgets, floor: float, effect: float) -> dict:
    """The claims at one difficulty, from per-seed accuracies.

    Args:
        acc: ``{prm: {method: {N: [per-seed accuracy]}}}`` (``_table`` per PRM).
        single: per-seed single-sample accuracy.
        budgets: the budgets N.
        floor: the accuracy's noise floor (one problem: 1 / problems).
        effect: the papers' accuracy effect size.

    Returns:
        ``{name: compare dict}`` (one Holm family) plus ``"beats_single_sample"``:
        ``{"family": {label: compare dict} (its own Holm family), "verdict", "below",
        "undecided"}`` for "every method at every N beats single-sample accuracy".
    """
    lo, hi = min(budgets), max(budgets)
    kw = {"lower_is_better": False, "noise_floor": floor, "effect_size": effect}
    v: dict = {}
    learned, oracle = acc.get("learned", {}), acc.get("oracle", {})
    if "particle_filter" in learned:
        for other in ("beam", "bon"):
            if other in learned:
                v[f"pf_vs_{other}_at_{hi}"] = stats.compare(
                    learned["particle_filter"][hi], learned[other][hi], **kw
                )
                if lo < hi:
                    v[f"pf_gain_vs_{other}_gain"] = stats.compare(
                        _gain(learned, "particle_filter", lo, hi), _gain(learned, other, lo, hi),
                        **kw)  # fmt: skip
    if "beam" in learned and "beam" in oracle:
        v["beam_learned_below_oracle"] = stats.compare(
            oracle["beam"][hi], learned["beam"][hi], **kw
        )
    if all("particle_filter" in t and "beam" in t for t in (learned, oracle)):
        # "with an oracle PRM the gap closes": PF's lead over beam is smaller with the oracle.
        gap = {k: [p - b for p, b in zip(t["particle_filter"][hi], t["beam"][hi], strict=True)]
               for k, t in (("learned", learned), ("oracle", oracle))}  # fmt: skip
        v["oracle_gap_closes"] = stats.compare(gap["learned"], gap["oracle"], **kw)
    v = stats.correct_family(v)
    family = {f"{LABELS.get(m, m)} ({kind}) N={n}": stats.compare(per_n[n], single, **kw)
              for kind, table in acc.items() for m, per_n in table.items()
              for n in budgets}  # fmt: skip
    family = stats.correct_family(family)
    verdict_of = {k: c["verdict"] for k, c in family.items()}
    below = [k for k, x in verdict_of.items() if x == stats.FAILS]
    undecided = [k for k, x in verdict_of.items() if x == stats.NOT_DECIDABLE]
    if below:
        overall = stats.FAILS
    elif all(x == stats.HOLDS for x in verdict_of.values()):
        overall = stats.HOLDS
    elif undecided:
        overall = stats.NOT_DECIDABLE
    else:
        overall = stats.TIE
    v["beats_single_sample"] = {"family": family, "verdict": overall, "below": below,
                                "undecided": undecided}  # fmt: skip
    return v


def collect(config, search_per_seed: dict, base_per_seed: dict) -> dict:
    """Per difficulty: accuracy tables with intervals, tokens, verdicts, the optimal method."""
    budgets = list(config.search.budgets)
    floor, effect = 1.0 / config.num_problems, _effect(config)
    kw = {"lower_is_better": False, "noise_floor": floor, "effect_size": effect}
    out = {"claim": CLAIMS, "budgets": budgets, "difficulty": {}}
    for d, search in search_per_seed.items():
        base = base_per_seed[d]
        single = [e["single_sample"] for e in base]
        acc = {k: _table(search, base, k, budgets) for k in config.search.prms}
        tokens = {m: {k: {n: [e["tokens"][m][k][n] for e in search] for n in budgets}
                      for k in v} for m, v in search[0]["tokens"].items()}  # fmt: skip
        v = verdicts(acc, single, budgets, floor, effect)
        learned = acc.get("learned", {})
        ratios = {}
        if "particle_filter" in learned:
            for other in ("beam", "bon"):
                if other in learned:
                    pf = learned["particle_filter"]
                    ratios[other] = budget_ratio(pf, learned[other], budgets)
        optimal = {}
        for kind, table in acc.items():
            for n in budgets:
                means = {m: float(np.mean(per_n[n])) for m, per_n in table.items()}
                best = max(means, key=means.get)
                rest = [m for m in means if m != best]
                second = max(rest, key=means.get) if rest else None
                sep = (stats.compare(table[best][n], table[second][n], **kw)["verdict"]
                       if second else stats.NOT_DECIDABLE)  # fmt: skip
                optimal.setdefault(kind, {})[n] = {"method": best, "accuracy": means[best],
                                                   "runner_up": second, "verdict": sep}  # fmt: skip
        out["difficulty"][d] = {
            "accuracy": stats.summarize_tree(acc), "tokens": stats.summarize_tree(tokens),
            "single_sample": stats.t_interval(single), "verdicts": v,
            "budget_ratio": ratios, "optimal": optimal, "per_seed": search,
        }  # fmt: skip
    return out


def plots(results: dict, workdir: str) -> list[str]:
    panels = []
    for d, r in results["difficulty"].items():
        for kind, table in r["accuracy"].items():
            series = {LABELS.get(m, m): (list(v), [iv["mean"] for iv in v.values()])
                      for m, v in table.items()}  # fmt: skip
            panels.append((f"{d} ops, {kind} PRM", series))
    if not panels:
        return []
    path = os.path.join(workdir, "search_accuracy_vs_n.png")
    return [common.line_plot(path, panels, xlabel="budget N (sequences)", ylabel="accuracy")]


def _fmt_ratio(r) -> str:
    if r is None:
        return "never ahead"
    return ">= max budget" if not np.isfinite(r) else f"{r:.1f}x"


def summary_rows(results: dict) -> list[tuple]:
    """``(setting, measured, verdict)`` rows of the search claims, per difficulty."""
    rows = []
    hi = max(results["budgets"])
    for d, r in results["difficulty"].items():
        v = r["verdicts"]
        for key, text in [
            (f"pf_vs_beam_at_{hi}", f"{d} ops, learned PRM, N={hi}: particle filter above beam"),
            (f"pf_vs_bon_at_{hi}", f"{d} ops, learned PRM, N={hi}: particle filter above BoN"),
            ("pf_gain_vs_beam_gain", f"{d} ops, learned PRM: PF gains more than beam"),
            ("pf_gain_vs_bon_gain", f"{d} ops, learned PRM: PF gains more than BoN"),
            ("beam_learned_below_oracle", f"{d} ops, N={hi}: beam below with the learned PRM "
             "than with the oracle"),
            ("oracle_gap_closes", f"{d} ops, N={hi}: PF's lead over beam smaller with the oracle "
             "PRM than with the learned one"),
        ]:  # fmt: skip
            if key in v:
                rows.append((text, stats.format_interval(v[key]["improvement"]),
                             stats.describe(v[key])))  # fmt: skip
        for other, ratio in r["budget_ratio"].items():
            rows.append((f"{d} ops: budget {LABELS[other]} needs to match the particle filter",
                         _fmt_ratio(ratio), "-"))  # fmt: skip
        b = v["beats_single_sample"]
        n_all = len(b["family"])
        measured = (f"below: {', '.join(b['below']) or 'none'}; undecided: "
                    f"{len(b['undecided'])} of {n_all}")  # fmt: skip
        rows.append((f"{d} ops: every method at every N beats single-sample accuracy "
                     f"(Holm over {n_all})", measured, b["verdict"]))  # fmt: skip
    return rows


def report_lines(results: dict) -> list[str]:
    budgets = results["budgets"]
    lines = ["### Step-level search (beam, DVTS, particle filtering, particle Gibbs, MCTS)", "",
             f"Claim: {results['claim']}.", ""]  # fmt: skip
    for d, r in results["difficulty"].items():
        for kind, table in r["accuracy"].items():
            lines += [f"#### {d} operations, {kind} PRM (single sample "
                      f"{stats.format_interval(r['single_sample'])})", "",
                      "| method | " + " | ".join(f"N={n}" for n in budgets) + " | tokens at N="
                      f"{max(budgets)} |", "|---" * (len(budgets) + 2) + "|"]  # fmt: skip
            for m, per_n in table.items():
                tok = r["tokens"].get(m, {}).get(kind, {}).get(max(budgets))
                tok_text = f"{tok['mean']:.0f}" if tok else "-"
                cells = " | ".join(stats.format_interval(per_n[n]) for n in budgets)
                lines.append(f"| {LABELS.get(m, m)} | {cells} | {tok_text} |")
            lines.append("")
        lines += ["Compute-optimal method (highest mean accuracy; verdict against the runner-up):",
                  "", "| PRM | " + " | ".join(f"N={n}" for n in budgets) + " |",
                  "|---" * (len(budgets) + 1) + "|"]  # fmt: skip
        for kind, per_n in r["optimal"].items():
            cells = [f"{LABELS.get(o['method'], o['method'])} {o['accuracy']:.2f} ({o['verdict']})"
                     for o in per_n.values()]  # fmt: skip
            lines.append(f"| {kind} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines
