"""Intervals, verdicts, the compute-optimal table, plots and the report section of the
step-level search part of ``lm_scaling`` (``lm_search``)."""

from __future__ import annotations

import os

import numpy as np

from inferax.experiments import common, stats
from inferax.experiments.lm_scaling_report import describe
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
# The smallest effect each claim is about (overridable by ``config.search.effect_sizes``):
# Puri et al. 2025 (Fig. 1, Table 1) report particle filtering ahead of beam search and
# best-of-N by >= 10 points of accuracy at equal budget under a learned PRM, and a 4-16x
# better scaling rate: their filter gains ~0.3 of accuracy over 7 doublings of N
# (~0.04 per doubling) where best-of-N / beam search stay nearly flat.
EFFECT_SIZES = {"accuracy": 0.10, "rate": 0.04}


def _pool(entries: list[dict], *path) -> list[float]:
    """Per-problem values at ``entry[path...]`` of every seed, concatenated (the paired
    units: every method sees the same problems in the same order)."""
    out: list[float] = []
    for e in entries:
        node = e
        for p in path:
            node = node[p] if p in node else node[str(p)]
        out += [float(x) for x in node]
    return out


def _table(search: list[dict], base: list[dict], kind: str, budgets) -> dict:
    """``{method: {N: [per-problem 0/1 outcome, pooled over seeds]}}`` for one PRM,
    baselines (from the repeated-sampling pool, same problems) included."""
    out: dict = {}
    for m in search[0]["correct"]:
        if kind in search[0]["correct"][m]:
            out[m] = {n: _pool(search, "correct", m, kind, n) for n in budgets}
    for name, key in BASELINES[kind].items():
        if key in base[0]["per_problem"]["correct"]:
            out[name] = {n: _pool(base, "per_problem", "correct", key, n) for n in budgets}
    return out


def slopes(per_n: dict, budgets) -> list[float]:
    """Per problem, the least-squares slope of its outcome against log2 N over ``budgets``:
    the method's scaling rate (accuracy per doubling of N). Linear in the outcomes, so
    their mean is the slope of the mean accuracy, and two methods' slopes are paired
    per problem."""
    x = np.log2(np.asarray(budgets, np.float64))
    w = (x - x.mean()) / np.sum((x - x.mean()) ** 2)
    y = np.asarray([per_n[n] for n in budgets], np.float64)  # [budgets, problems]
    return (w @ y).tolist()


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


def _effect(config) -> dict:
    given = config.search.get("effect_sizes", None) or {}
    unknown = set(given) - set(EFFECT_SIZES)
    if unknown:
        raise ValueError(f"search.effect_sizes: expected keys from {sorted(EFFECT_SIZES)}, "
                         f"got {sorted(unknown)}")  # fmt: skip
    return {**EFFECT_SIZES, **dict(given)}


def verdicts(acc: dict, single: list[float], budgets, floor: float, effect) -> dict:
    """The claims at one difficulty, from per-problem outcomes pooled over seeds.

    Args:
        acc: ``{prm: {method: {N: [per-problem 0/1 outcome]}}}`` (``_table`` per PRM).
        single: per-problem single-sample accuracy (same problems, same order).
        budgets: the budgets N.
        floor: the accuracy's noise floor (one problem: 1 / problems).
        effect: the papers' effect sizes ``{"accuracy", "rate"}`` (a float: accuracy,
            and ``EFFECT_SIZES["rate"]``).

    Returns:
        ``{name: compare dict}`` (one Holm family) plus ``"beats_single_sample"``:
            ``{"family": {label: compare dict} (its own Holm family), "verdict", "below",
            "undecided"}`` for "every method at every N beats single-sample accuracy".
            ``pf_rate_vs_<other>`` compares the per-problem scaling rates (``slopes``).
    """
    if not isinstance(effect, dict):
        effect = {**EFFECT_SIZES, "accuracy": float(effect)}
    lo, hi = min(budgets), max(budgets)
    kw = {"lower_is_better": False, "noise_floor": floor, "effect_size": effect["accuracy"]}
    # A slope resolves one problem's outcome change over the span of log2 N.
    rate_kw = {"lower_is_better": False, "effect_size": effect["rate"],
               "noise_floor": floor / max(np.log2(hi / lo), 1.0)}  # fmt: skip
    v: dict = {}
    learned, oracle = acc.get("learned", {}), acc.get("oracle", {})
    if "particle_filter" in learned:
        for other in ("beam", "bon"):
            if other in learned:
                v[f"pf_vs_{other}_at_{hi}"] = stats.compare(
                    learned["particle_filter"][hi], learned[other][hi], **kw
                )
                if len(budgets) > 1:
                    v[f"pf_rate_vs_{other}"] = stats.compare(
                        slopes(learned["particle_filter"], budgets),
                        slopes(learned[other], budgets), **rate_kw)  # fmt: skip
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
    """Per difficulty: accuracy tables and scaling rates with intervals over problems,
    tokens, verdicts (paired over problems pooled over seeds), the optimal method."""
    budgets = list(config.search.budgets)
    effect = _effect(config)
    out = {"claim": CLAIMS, "budgets": budgets, "difficulty": {}}
    for d, search in search_per_seed.items():
        base = base_per_seed[d]
        single = _pool(base, "per_problem", "single")
        floor = 1.0 / len(single)
        kw = {"lower_is_better": False, "noise_floor": floor, "effect_size": effect["accuracy"]}
        acc = {k: _table(search, base, k, budgets) for k in config.search.prms}
        tokens = {m: {k: {n: [e["tokens"][m][k][n] for e in search] for n in budgets}
                      for k in v} for m, v in search[0]["tokens"].items()}  # fmt: skip
        v = verdicts(acc, single, budgets, floor, effect)
        rates = ({k: {m: stats.t_interval(slopes(per_n, budgets)) for m, per_n in t.items()}
                  for k, t in acc.items()} if len(budgets) > 1 else {})  # fmt: skip
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
            "num_problems": len(single),
            "accuracy": stats.summarize_tree(acc), "tokens": stats.summarize_tree(tokens),
            "rates": rates, "single_sample": stats.t_interval(single), "verdicts": v,
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
            ("pf_rate_vs_beam", f"{d} ops, learned PRM: PF's scaling rate (accuracy per "
             "doubling of N) above beam's"),
            ("pf_rate_vs_bon", f"{d} ops, learned PRM: PF's scaling rate above BoN's"),
            ("beam_learned_below_oracle", f"{d} ops, N={hi}: beam below with the learned PRM "
             "than with the oracle"),
            ("oracle_gap_closes", f"{d} ops, N={hi}: PF's lead over beam smaller with the oracle "
             "PRM than with the learned one"),
        ]:  # fmt: skip
            if key in v:
                measured = stats.format_interval(v[key]["improvement"])
                if key.startswith("pf_rate_vs_"):
                    other = key.removeprefix("pf_rate_vs_")
                    rt = r["rates"]["learned"]
                    measured = (
                        f"{measured} (PF {stats.format_interval(rt['particle_filter'])}"
                        f", {LABELS[other]} {stats.format_interval(rt[other])})"
                    )
                rows.append((text, measured, describe(v[key])))  # fmt: skip
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
            lines += [f"#### {d} operations, {kind} PRM ({r.get('num_problems', '?')} problems; "
                      "single sample "
                      f"{stats.format_interval(r['single_sample'])})", "",
                      "| method | " + " | ".join(f"N={n}" for n in budgets) + " | tokens at N="
                      f"{max(budgets)} | rate (accuracy per doubling of N) |",
                      "|---" * (len(budgets) + 3) + "|"]  # fmt: skip
            for m, per_n in table.items():
                tok = r["tokens"].get(m, {}).get(kind, {}).get(max(budgets))
                tok_text = f"{tok['mean']:.0f}" if tok else "-"
                cells = " | ".join(stats.format_interval(per_n[n]) for n in budgets)
                rate = r.get("rates", {}).get(kind, {}).get(m)
                rate_text = stats.format_interval(rate) if rate else "-"
                lines.append(f"| {LABELS.get(m, m)} | {cells} | {tok_text} | {rate_text} |")
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
