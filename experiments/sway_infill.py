"""The sway claim re-tested where F5-TTS made it: a conditional infilling flow.

Called from ``sway.run`` when ``config.infill.enabled``. For every seed an
``models.infill`` flow is trained (or restored) to complete the bottom half of
an 8x8 digit from its top half; the test images are completed on every grid
(uniform, sway s in ``config.sway_coefs``, EPSS where F5-TTS has a grid of that
many steps, and the grid ``sampling.schedule_tuning.tune`` finds), with every
solver, with and without CFG, at every NFE. Per setting:

- ``ref_mse``: mean squared distance on the completed pixels to a fine
  reference solve from the same noise (the sampler's discretisation error; the
  claim's verdicts use it), with the reference's own error (its distance to a
  solve with half its steps) as the noise floor;
- ``mse`` / ``psnr`` of the completed pixels against the true image (peak-to-
  peak 2, PSNR = 10 log10(4 / MSE));
- ``accuracy``: the digits classifier's accuracy on the completed images.

The tuned grids are tuned once, on the first seed's model and a tuning batch
of training images, and applied unchanged to every seed (for the other seeds
the grid is tuned on another model: a held-out test of the grid).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from inferax.experiments import common, stats
from inferax.models import classifier, data, infill
from inferax.sampling import flow, schedule_tuning, schedules

REF_STEPS_FLOOR = 2  # the floor compares the reference with one of 1 / REF_STEPS_FLOOR its steps
# The paper's effect, relative to the baseline (uniform at 2N): F5-TTS (Chen et al. 2024,
# Table 5, midpoint, LibriSpeech-PC): sway (s = -1) at 16 steps WER 2.43 vs uniform at 32
# steps 2.84, an improvement of (2.84 - 2.43) / 2.84 = 14 %. Overridable by
# ``config.effect_size_relative`` (the sway config states it beside this source).
EFFECT_SIZE_RELATIVE = 0.14


def paper_effect(results: dict, baseline) -> float | None:
    """The paper's effect in the metric's units: the relative effect (``config.
    effect_size_relative``, default ``EFFECT_SIZE_RELATIVE``) times |mean baseline|;
    ``None`` when that mean is zero or not finite (no scale to take a fraction of)."""
    rel = results.get("config", {}).get("effect_size_relative") or EFFECT_SIZE_RELATIVE
    scale = abs(float(np.mean(baseline)))
    return rel * scale if np.isfinite(scale) and scale > 0 else None


def correct_setting(per_grid: dict) -> dict:
    """Holm over one setting's family (every grid at every N): ``stats.correct_family``
    of the flattened ``{grid: {N: compare dict}}``, nested back the same way."""
    flat = stats.correct_family({(g, n): v for g, row in per_grid.items() for n, v in row.items()})
    return {g: {n: flat[(g, n)] for n in row} for g, row in per_grid.items()}


def model(config) -> infill.InfillVelocity:
    return infill.InfillVelocity(hidden=config.infill.hidden, depth=config.infill.depth)


def validate(config) -> None:
    c = config.infill
    if c.mask not in infill.MASK_KINDS:
        raise ValueError(f"infill.mask: expected one of {infill.MASK_KINDS}, got {c.mask!r}")
    scales = list(c.cfg_scales)
    if not scales or any(w < 0 for w in scales):
        raise ValueError(f"infill.cfg_scales: expected non-negative CFG scales, got {scales!r}")
    if any(n not in config.nfes for n in c.tune_nfes):
        raise ValueError(f"infill.tune_nfes: expected a subset of nfes {list(config.nfes)}, "
                         f"got {list(c.tune_nfes)}")  # fmt: skip
    if not 0 <= c.warmup_steps < c.train_steps:
        raise ValueError(f"infill.warmup_steps: expected 0 <= warmup_steps < {c.train_steps}, "
                         f"got {c.warmup_steps}")  # fmt: skip


def grid_name(coef: float) -> str:
    return "uniform" if coef == 0 else f"sway{coef:+g}"


def _pad(ts, length: int) -> jax.Array:
    ts = jnp.asarray(ts, jnp.result_type(float))
    return jnp.concatenate([ts, jnp.ones(length + 1 - ts.shape[0], ts.dtype)])


@functools.partial(jax.jit, static_argnames=("net", "solver", "w"))
def _complete(net, params, x0, observed, mask, ts, steps, solver, w):
    v = infill.infill_velocity(net, params, observed, mask, w)
    x, info = flow.sample(v, x0, ts, solver=solver, num_active_steps=steps)
    return x, info.nfe


def _grids(config, steps: int, tuned: dict, key) -> dict:
    out = {grid_name(c): (schedules.uniform(steps) if c == 0 else schedules.sway(steps, c))
           for c in config.sway_coefs}  # fmt: skip
    if steps in schedules.EPSS_STEPS:
        out["epss"] = schedules.epss(steps)
    if key in tuned:
        out["tuned"] = tuned[key]
    return out


def tune_grids(config, net, params, seed: int, tuning: dict) -> dict:
    """Tunes a grid per (CFG scale, solver, NFE in ``infill.tune_nfes``) on the given model;
    records each tuning's errors and cost in ``tuning[w][solver][nfe]``."""
    c = config.infill
    train_x, _ = data.load_digits("train")
    obs = jnp.asarray(train_x[: c.tune_batch])
    mask = infill.make_masks(c.mask, obs.shape[0], jax.random.key(seed))
    noise = flow.noise(jax.random.fold_in(jax.random.key(seed), 99), obs.shape[0], (8, 8, 1))
    x0 = infill.initial_state(noise, obs, mask)
    tuned = {}
    for w in c.cfg_scales:
        v = infill.infill_velocity(net, params, obs, mask, w)
        for solver in config.solvers:
            for nfe in c.tune_nfes:
                if nfe // (flow.SOLVER_EVALS[solver] * (2 if w else 1)) < 2:
                    continue
                r = schedule_tuning.tune(
                    v, x0, nfe, solver=solver, method="es", key=jax.random.key(seed),
                    num_iters=c.tune_iters, num_coefs=c.tune_coefs,
                    reference_steps=c.reference_steps,
                )  # fmt: skip
                tuned[(f"w={w:g}", solver, nfe)] = r.ts
                tuning.setdefault(f"w={w:g}", {}).setdefault(solver, {})[nfe] = {
                    "ts": np.asarray(r.ts).tolist(),
                    "sway_coef": r.sway_coef,
                    "error_uniform": r.error_uniform,
                    "error_sway": r.error_sway,
                    "error_tuned": r.error_tuned,
                    "tuning_nfe": r.tuning_nfe,
                    "tuning_nfe_total": r.tuning_nfe_total,
                }
                logging.info("infill tune w=%g %s %d NFE: uniform %.4g, sway(%.2f) %.4g, "
                             "tuned %.4g (%d NFE per sample)", w, solver, nfe, r.error_uniform,
                             r.sway_coef, r.error_sway, r.error_tuned, r.tuning_nfe)  # fmt: skip
    return tuned


def run_seed(config, workdir, seed, net, clf_params, raw, tuned, tuning, image_rows) -> dict:
    """One seed of the infilling part; returns the tuned grids (tuned at the first seed,
    when ``tuned`` is empty, with their record in ``tuning``)."""
    c = config.infill
    k_train, k_noise = jax.random.split(jax.random.fold_in(jax.random.key(seed), 2))
    train_x, _ = data.load_digits("train")
    test_x, test_y = data.load_digits("test")
    test_x, test_y = test_x[: c.num_eval], test_y[: c.num_eval]
    spec = {"experiment": "sway", "section": "infill",
            **{k: v for k, v in c.to_dict().items() if k in _TRAINING}}  # fmt: skip
    params, losses = infill.train_infill(
        k_train, train_x, model=net, workdir=common.cache_dir(config, workdir, "infill_flow"),
        spec=spec, mask_kind=c.mask, masks_per_image=c.masks_per_image,
        num_steps=c.train_steps, batch_size=c.batch_size, lr=c.lr,
        warmup_steps=c.warmup_steps, p_uncond=c.p_uncond,
    )  # fmt: skip
    top = raw.setdefault("infill", {})
    stats.append_per_seed(top, ("scalars",), {"train_loss_final": np.mean(losses[-50:])})
    if not tuned:
        tuned = tune_grids(config, net, params, seed, tuning)
    observed = jnp.asarray(test_x)
    mask = infill.make_masks("bottom", observed.shape[0])  # evaluation: always the bottom half
    x0 = infill.initial_state(flow.noise(k_noise, observed.shape[0], (8, 8, 1)), observed, mask)
    free = 1.0 - mask
    n_free = float(jnp.sum(free))

    def mse(a, b):
        return float(jnp.sum(jnp.square(a - b) * free) / n_free)

    floor = {"accuracy": classifier.accuracy(clf_params, test_x, test_y)}
    # Every grid (the reference and the floor's included) is padded to one length, so one
    # compiled sampler per (solver, CFG) serves all of them (the padding is never integrated).
    length = max(c.reference_steps, max(config.nfes))
    for w in c.cfg_scales:
        g = f"w={w:g}"
        per_call = 2 if w else 1
        ref_ts = _pad(schedules.uniform(c.reference_steps), length)
        ref, _ = _complete(net, params, x0, observed, mask, ref_ts, c.reference_steps,
                           "midpoint", w)  # fmt: skip
        half = c.reference_steps // REF_STEPS_FLOOR
        coarse, _ = _complete(net, params, x0, observed, mask, _pad(schedules.uniform(half),
                              length), half, "midpoint", w)  # fmt: skip
        floor[f"ref_mse_{g}"] = mse(coarse, ref)
        floor[f"mse_{g}"] = mse(ref, observed)
        for solver in config.solvers:
            for nfe in config.nfes:
                steps = nfe // (flow.SOLVER_EVALS[solver] * per_call)
                if steps < 2:
                    continue
                for name, ts in _grids(config, steps, tuned, (g, solver, nfe)).items():
                    x1, used = _complete(net, params, x0, observed, mask, _pad(ts, length),
                                         steps, solver, w)  # fmt: skip
                    if not bool(jnp.all(x1 * mask == observed * mask)):
                        raise RuntimeError(f"infill: observed pixels changed ({g}, {solver}, "
                                           f"{name}, {nfe} NFE)")  # fmt: skip
                    e = mse(x1, observed)
                    entry = {"steps": steps, "nfe": int(used), "ref_mse": mse(x1, ref), "mse": e,
                             "psnr": 10.0 * np.log10(4.0 / max(e, 1e-12)),
                             "accuracy": classifier.accuracy(clf_params, jnp.clip(x1, -1, 1),
                                                             test_y)}  # fmt: skip
                    stats.append_per_seed(top, ("cfg", g, solver, name, nfe), entry)
                    if seed == config.seed and solver == "euler" and name in ("uniform", "sway-1"):
                        if nfe == config.nfes[1] and w == c.cfg_scales[-1]:
                            rows = np.concatenate([np.asarray(x1[:10]), np.asarray(ref[:10])])
                            image_rows.append((f"infill {name}, Euler {nfe} NFE ({g}); below: "
                                               "reference", data.digits_to_unit(rows)))  # fmt: skip
    stats.append_per_seed(top, ("floor",), floor)
    return tuned


# Config fields of the infill section that determine the trained model.
_TRAINING = {"mask", "masks_per_image", "hidden", "depth", "train_steps", "batch_size", "lr",
             "warmup_steps", "p_uncond"}  # fmt: skip


def verdicts(results: dict, nfes) -> dict:
    """``[f"infill/{w}/{solver}"][grid][N]``: grid at N vs uniform at 2N, on ``ref_mse``
    (lower is better; noise floor: the reference's own error, mean over seeds; effect
    size: ``paper_effect`` of uniform at 2N), Holm-corrected per setting."""
    out: dict = {}
    node = results.get("infill")
    if not node:
        return out
    for group, per_solver in node["cfg"].items():
        floor = node["floor"][f"ref_mse_{group}"]["mean"]
        for solver, table in per_solver.items():
            uni = table.get("uniform", {})
            dest = out.setdefault(f"infill/{group}/{solver}", {})
            for name, row in table.items():
                if name == "uniform":
                    continue
                dest[name] = {n: stats.compare(
                    row[n]["ref_mse"]["values"], uni[2 * n]["ref_mse"]["values"],
                    noise_floor=floor,
                    effect_size=paper_effect(results, uni[2 * n]["ref_mse"]["values"]))
                    for n in nfes if n in row and 2 * n in uni}  # fmt: skip
    return {k: correct_setting(v) for k, v in out.items()}


# ------------------------------------------------------------------ report section
def _count(verdicts_: dict, prefixes: tuple, grid: str = "sway-1") -> str:
    checks = [v["verdict"] for s, per in verdicts_.items() if s.startswith(prefixes)
              for v in per.get(grid, {}).values()]  # fmt: skip
    worse = checks.count(stats.FAILS)
    reading = "holds (never worse)" if checks and not worse else "does not hold"
    return (f"{reading}: better in {checks.count(stats.HOLDS)}, within noise in "
            f"{checks.count(stats.TIE)}, worse in {worse} of {len(checks)} checks")  # fmt: skip


def winners(results: dict, settings: list, table_fn) -> list[str]:
    """Markdown rows: per model setting and NFE, the grid with the best mean (lowest)
    metric, and the tuned grid beside the paper's (s = -1)."""
    nfes = results["config"]["nfes"]
    rows = []
    for setting in settings:
        table, metric = table_fn(results, setting)
        cells = []
        for n in nfes:
            means = {g: r[n][metric]["mean"] for g, r in table.items()
                     if n in r and r[n][metric]["finite"]}  # fmt: skip
            if not means:
                cells.append("-")
                continue
            best = min(means, key=means.get)
            pair = " / ".join(f"{means[g]:.3g}" if g in means else "-"
                              for g in ("tuned", "sway-1"))  # fmt: skip
            cells.append(f"{best} (tuned / sway-1: {pair})")
        rows.append(f"| {setting} | {metric} | " + " | ".join(cells) + " |")
    return rows


def report_section(results: dict, settings: list, table_fn) -> list[str]:
    """The infilling part of the sway report: quality tables, the tuned grids, the verdict
    next to the unconditional one, and the per-model winners."""
    nfes = results["config"]["nfes"]
    node = results["infill"]
    lines = ["", "### Infilling: the claim on the kind of model it was made for", "",
             "A mask-conditioned flow (`models.infill`) completes the bottom half of test "
             "digits from the top half; observed pixels start at their values and get zero "
             "velocity, so they stay exact at every step (checked on every run). ref-MSE: "
             "squared distance of the completed pixels to a fine midpoint reference solve "
             "from the same noise (the sampler's error, used for the verdicts; noise floor: the "
             "reference's own error against half its steps). MSE / PSNR against the true "
             "pixels and the classifier's accuracy on the completed digits (real test images: "
             f"{stats.format_interval(node['floor']['accuracy'])}). `tuned`: "
             "`schedules.tune` (ES) on the first seed's model, applied to every seed.",
             ""]  # fmt: skip
    for group, per_solver in node["cfg"].items():
        for solver, table in per_solver.items():
            lines += [f"**Infilling, CFG {group}, {solver}**: ref-MSE / PSNR (dB) / accuracy",
                      "", "| grid | " + " | ".join(f"{n} NFE" for n in nfes) + " |",
                      "|---" * (len(nfes) + 1) + "|"]  # fmt: skip
            for name, row in table.items():
                cells = [f"{stats.format_interval(row[n]['ref_mse'])} / "
                         f"{row[n]['psnr']['mean']:.2f} / {row[n]['accuracy']['mean']:.3f}"
                         if n in row else "-" for n in nfes]  # fmt: skip
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
            lines.append("")
    lines += ["**Tuned grids** (on the tuning batch; error = ref-MSE; cost = NFE per sample "
              "spent by the tuning, reference solve included):", "",
              "| CFG | solver | NFE | best sway s | uniform | best sway | tuned | cost | grid |",
              "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for group, per_solver in node.get("tuning", {}).items():
        for solver, per_nfe in per_solver.items():
            for n, t in per_nfe.items():
                grid = ", ".join(f"{x:.3f}" for x in t["ts"])
                lines.append(f"| {group} | {solver} | {n} | {t['sway_coef']:+.2f} | "
                             f"{t['error_uniform']:.3g} | {t['error_sway']:.3g} | "
                             f"{t['error_tuned']:.3g} | {t['tuning_nfe']} | {grid} |")  # fmt: skip
    lines += ["", "**Verdict, sway (s = -1) at N vs uniform at 2N** (ref-MSE on infilling): "
              f"infilling {_count(results['verdicts'], ('infill',))}; unconditional 2-D and "
              f"class-conditional digits {_count(results['verdicts'], ('toy', 'digits'))}.", "",
              "**Which grid wins** (lowest mean metric at each NFE; tuned and s = -1 beside):",
              "", "| setting | metric | " + " | ".join(f"{n} NFE" for n in nfes) + " |",
              "|---" * (len(nfes) + 2) + "|"]  # fmt: skip
    lines += winners(results, settings, table_fn)
    lines += [
        "",
        "![infill](sway/infill_ref_mse.png)",
        "![infill samples](sway/infill_samples.png)",
    ]
    return lines
