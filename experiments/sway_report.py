"""The sway reproduction's section of the demo report, from ``sway.run``'s results."""

from __future__ import annotations

from inferax.experiments import stats

CLAIM = (
    "F5-TTS (Chen et al. 2024, Table 5, midpoint, LibriSpeech-PC): sway sampling (s = -1) "
    "at 16 steps reaches WER 2.43 vs 2.84 for the uniform grid at 32 steps, i.e. sway at "
    "N NFE is at least as good as uniform at 2N NFE."
)

_READING = {
    stats.HOLDS: "sway better",
    stats.TIE: "tie (sway matches)",
    stats.FAILS: "uniform 2N better",
    stats.NOT_DECIDABLE: "not decidable at this size",
}

_TITLES = {
    "toy/model": "2-D model (8 Gaussians), energy distance to held-out data",
    "toy/oracle": "2-D exact oracle velocity (8 Gaussians), energy distance to held-out data",
    "digits": "digits (class-conditional MLP flow), Fréchet distance in classifier features",
    "infill": "digits infilling (bottom half given the top half), MSE to the reference solve",
}
_METRIC = {"toy": ("velocity", "energy_distance"), "digits": ("cfg", "frechet_distance"),
           "infill": ("cfg", "ref_mse")}  # fmt: skip


def _title(setting: str) -> str:
    part, group, solver = setting.split("/")
    base = _TITLES.get(f"{part}/{group}", _TITLES.get(part, part))
    extra = f", CFG {group}" if part in ("digits", "infill") else ""
    return f"{base}{extra}, {solver}"


def _table(results: dict, setting: str) -> tuple[dict, str]:
    part, group, solver = setting.split("/")
    branch, metric = _METRIC[part]
    return results[part][branch][group][solver], metric


def method_text(results: dict) -> list[str]:
    seeds = results["seeds"]
    return [
        f"Every number is the mean over {len(seeds)} seeds ({', '.join(map(str, seeds))}; a "
        "seed draws the data, trains the models and draws the sampling noise) with a 95% "
        "Student-t interval in brackets. A verdict compares sway at N NFE with uniform at "
        "2N NFE on the paired per-seed differences by an exact one-sided sign-flip test: "
        "**holds** (sway better: the test rejects at 5% and the mean improvement is above "
        "the noise floor), **fails** (uniform at 2N better, the same way), **tie within "
        'noise** — which, for a claim of "at least as good", means sway matches — or **not '
        "decidable at this size** (too few seeds for the exact test: fewer than 5, or a "
        "minimum detectable effect above the paper's: 14% of uniform at 2N, from the paper's "
        "Table 5, WER 2.43 vs 2.84). The p-values are Holm-corrected over each setting's "
        "family (every grid at every N). A non-finite metric is a failure.",
        "",
        "Noise floor: the seed-to-seed standard deviation of the metric evaluated on real "
        "data of the same size (2-D: an independent data set against the same held-out "
        "set; digits: real training images). The energy distance is estimated without bias "
        "(U-statistics), so for two samples of the same law it scatters around 0 and can be "
        "slightly negative; differences smaller than the floor are ties. Settings with fewer "
        "than 2 steps (e.g. 4 NFE with midpoint and CFG: one step on [0, 1], where every "
        "grid is the same single interval) are left out.",
        "",
    ]


def report(results: dict) -> str:
    """Markdown section: the claim once, our numbers with intervals, verdicts, plots."""
    nfes = results["config"]["nfes"]
    lines = ["## Sway sampling (F5-TTS)", "", f"**Claim.** {CLAIM}", ""] + method_text(results)
    settings = [
        f"toy/{v}/{s}" for v, per in results["toy"]["velocity"].items() for s in per
    ] + [f"{part}/{g}/{s}" for part in ("digits", "infill")
         for g, per in results.get(part, {}).get("cfg", {}).items() for s in per]  # fmt: skip
    for setting in settings:
        table, metric = _table(results, setting)
        lines += [
            f"**{_title(setting)}** (lower is better)",
            "",
            "| grid | " + " | ".join(f"{n} NFE" for n in nfes) + " |",
            "|---" * (len(nfes) + 1) + "|",
        ]
        for name, row in table.items():
            cells = [stats.format_interval(row[n][metric]) if n in row else "-" for n in nfes]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "**Verdicts** (grid at N NFE vs uniform at 2N NFE, same solver; improvement = "
        "uniform(2N) - grid(N), mean [95% interval]):",
        "",
        "| setting | grid | N | improvement | verdict |",
        "|---|---|---|---|---|",
    ]
    for setting, per_grid in results["verdicts"].items():
        for name, checks in per_grid.items():
            for n, v in checks.items():
                lines.append(
                    f"| {setting} | {name} | {n} | {stats.format_interval(v['improvement'])} | "
                    f"{_READING[v['verdict']]}: {stats.describe(v)} |"
                )
    toy = results["toy"]
    lines += [
        "",
        "Floors (real data scored like the samples): 2-D energy distance "
        f"{stats.format_interval(toy['floor']['energy_distance'])}, noise floor "
        f"{stats.noise_floor(toy['floor']['energy_distance']['values']):.2e}.",
    ]
    if "digits" in results:
        d = results["digits"]
        fd = d["floor"]["frechet_distance"]
        lines += [
            f"Digits: Fréchet distance of real images {stats.format_interval(fd)} "
            f"(noise floor {stats.noise_floor(fd['values']):.3f}); the feature classifier "
            f"(trained once, the same for every seed) has test accuracy "
            f"{d['classifier_test_accuracy']:.3f}.",
        ]
    lines += [
        "",
        "Plots: mean and 95% interval over seeds; the dashed line is the real-data floor. "
        f"Sample clouds: seed {results['seeds'][0]}, the model's or the exact oracle "
        "velocity's samples as labelled, N = samples shown.",
        "",
        "![toy](sway/toy_energy_distance.png)",
        "![toy samples](sway/toy_samples.png)",
    ]
    if "digits" in results:
        lines += [
            "![digits](sway/digits_frechet.png)",
            "![digits samples](sway/digits_samples.png)",
        ]
    if "infill" in results:
        from inferax.experiments import sway_infill

        lines += sway_infill.report_section(results, settings, _table)
    return "\n".join(lines) + "\n"


def summary(results: dict) -> dict:
    """``{"claim", "rows": [(setting, measured, verdict)]}`` for the demo's summary (s = -1)."""
    rows = []
    for setting, per_grid in results["verdicts"].items():
        checks = per_grid.get("sway-1", {})
        if not checks:
            continue
        table, metric = _table(results, setting)
        ns = sorted(checks)
        n = ns[len(ns) // 2]
        label = {"toy": "ED", "digits": "FD", "infill": "ref-MSE"}[setting.split("/")[0]]
        measured = (
            f"{label} sway-1 at {n} NFE {stats.format_interval(table['sway-1'][n][metric])} vs "
            f"uniform at {2 * n} {stats.format_interval(table['uniform'][2 * n][metric])}"
        )
        counts = {k: sum(v["verdict"] == k for v in checks.values()) for k in _READING}
        verdict = ", ".join(f"{k} {c}" for k, c in counts.items() if c) + f" (of N = {ns})"
        rows.append((setting, measured, verdict))
    return {"claim": CLAIM, "rows": rows}
