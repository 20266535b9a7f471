"""Sway sampling (F5-TTS) reproduced on flow models the project trains.

Trains (or restores) a 2-D flow model and a class-conditional digits model,
then measures sample quality against NFE for the uniform grid and sway grids
with Euler and midpoint, with CFG on digits, and says whether sway at N NFE
matches uniform at 2N. Library entry point: ``run(config, workdir)``.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from tqdm import tqdm

from inferax.experiments import common, metrics
from inferax.models import classifier, data, gmm, mlp, train
from inferax.models.convnet import ConvVelocity
from inferax.sampling import flow, guidance, schedules

TOY_ORACLES = {"eight_gaussians": gmm.eight_gaussians}


def schedule_name(coef: float) -> str:
    return "uniform" if coef == 0 else f"sway{coef:+g}"


def grid(coef: float, steps: int, pad_to: int | None = None) -> jax.Array:
    """The time grid; with ``pad_to``, extended by zero-length steps at t = 1.

    A zero-length step leaves the state unchanged (x + 0 * v), so padding all
    grids to one length lets a single compiled sampler serve every step count
    of a sweep (one XLA compile per solver instead of one per NFE). The padded
    steps cost network evaluations but are not counted: NFE is reported from
    the unpadded step count.
    """
    ts = schedules.uniform(steps) if coef == 0 else schedules.sway(steps, coef)
    if pad_to is not None and pad_to > steps:
        ts = jnp.concatenate([ts, jnp.ones(pad_to - steps, ts.dtype)])
    return ts


def steps_for(nfe: int, solver: str, nfe_per_call: int = 1) -> int:
    return nfe // (flow.SOLVER_EVALS[solver] * nfe_per_call)


@functools.partial(jax.jit, static_argnames=("apply_fn", "solver"))
def _sample_uncond(apply_fn, params, x0, ts, solver):
    return flow.sample(lambda x, t: apply_fn(params, x, t), x0, ts, solver=solver)[0]


@functools.partial(jax.jit, static_argnames=("apply_fn", "solver", "guided"))
def _sample_cond(apply_fn, params, x0, ts, labels, w, solver, guided):
    def cond_v(x, t, y):
        return apply_fn(params, x, t, y)

    if guided:
        v = guidance.cfg(cond_v, labels, mlp.null_label(10), w)
    else:

        def v(x, t):
            return cond_v(x, t, labels)

    return flow.sample(v, x0, ts, solver=solver)[0]


def _verdicts(table: dict, nfes: list[int], lower_is_better: bool = True) -> dict:
    """For each sway grid: at which N does sway(N) match or beat uniform(2N)?"""
    out = {}
    uni = table["uniform"]
    for name, row in table.items():
        if name == "uniform":
            continue
        checks = {}
        for n in nfes:
            if 2 * n in uni and n in row:
                a, b = row[n], uni[2 * n]
                checks[n] = bool(a <= b) if lower_is_better else bool(a >= b)
        out[name] = checks
    return out


def _metric_plot(path, tree, metric, prefix, ylabel, logy) -> None:
    """One panel per (group, solver): ``metric`` against NFE for every grid."""
    panels = []
    for group, per_solver in tree.items():
        for solver, table in per_solver.items():
            series = {g: (list(r), [e[metric] for e in r.values()]) for g, r in table.items()}
            panels.append((f"{prefix} / {group} / {solver}", series))
    xlabel = "NFE (CFG pair = 2)" if "CFG" in prefix else "NFE"
    common.line_plot(path, panels, xlabel=xlabel, ylabel=ylabel, logy=logy)


def run_toy(config, workdir: str, key: jax.Array) -> dict:
    cfg = config.toy
    k_data, k_train, k_eval, k_noise = jax.random.split(key, 4)
    train_x = data.toy_samples(cfg.dataset, k_data, cfg.num_train)
    held_out = data.toy_samples(cfg.dataset, k_eval, cfg.num_eval)
    model = mlp.VelocityMLP(features=2, hidden=cfg.hidden, depth=cfg.depth)
    params0 = model.init(jax.random.key(0), train_x[:2], jnp.zeros(2))
    params, losses = train.train_or_restore(
        k_train,
        workdir=common.cache_dir(config, workdir, f"toy_{cfg.dataset}"),
        apply_fn=model.apply,
        params_init=params0,
        data=train_x,
        optimizer=train.make_optimizer(cfg.lr, cfg.train_steps, warmup_steps=100),
        num_steps=cfg.train_steps,
        batch_size=cfg.batch_size,
        checkpoint_every=max(cfg.train_steps // 4, 1),
        log_every=max(cfg.train_steps // 5, 1),
    )
    oracle = TOY_ORACLES.get(cfg.dataset, lambda: None)()
    x0 = flow.noise(k_noise, cfg.num_eval, (2,))
    velocities = {"model": lambda p, x, t: model.apply(p, x, t)}
    if cfg.use_oracle and oracle is not None:
        velocities["oracle"] = lambda p, x, t: oracle.velocity(x, t)
    results: dict = {"train_loss_final": float(np.mean(losses[-100:])), "velocity": {}}
    samples_for_plot = {}
    jobs = [
        (v, s, c, n)
        for v in velocities
        for s in config.solvers
        for c in config.sway_coefs
        for n in config.nfes
    ]
    for vname, solver, coef, nfe in tqdm(jobs, desc="sway/toy", leave=False):
        steps = steps_for(nfe, solver)
        if steps < 1:
            continue
        pad = steps_for(max(config.nfes), solver)
        x1 = _sample_uncond(velocities[vname], params, x0, grid(coef, steps, pad), solver)
        entry = {"steps": steps, "energy_distance": metrics.energy_distance(x1, held_out)}
        if oracle is not None:
            entry["nll"] = float(-jnp.mean(oracle.log_prob(x1)))
        node = results["velocity"].setdefault(vname, {}).setdefault(solver, {})
        node.setdefault(schedule_name(coef), {})[nfe] = entry
        if vname == "model" and solver == "euler" and nfe == config.nfes[0] * 2:
            samples_for_plot[schedule_name(coef)] = np.asarray(x1)
    if oracle is not None:
        results["nll_held_out"] = float(-jnp.mean(oracle.log_prob(held_out)))
    results["energy_distance_held_out_vs_train"] = metrics.energy_distance(
        train_x[: cfg.num_eval], held_out
    )
    _metric_plot(
        os.path.join(workdir, "toy_energy_distance.png"),
        results["velocity"],
        "energy_distance",
        cfg.dataset,
        "energy distance to held-out data",
        logy=False,  # the unbiased estimate can be slightly negative
    )
    common.scatter_grid(
        os.path.join(workdir, "toy_samples.png"),
        [(f"{k} (Euler, {config.nfes[0] * 2} NFE)", v) for k, v in samples_for_plot.items()]
        + [("held-out data", held_out)],
    )
    return results


class ImageMLP(mlp.VelocityMLP):
    """VelocityMLP on flattened images: ``[N, 8, 8, 1] -> [N, 8, 8, 1]``."""

    def __call__(self, x, t, labels=None):
        flat = super().__call__(x.reshape(x.shape[0], -1), t, labels)
        return flat.reshape(x.shape)


def digits_model(cfg):
    """The class-conditional digits velocity: ``"conv"`` (ConvVelocity) or ``"mlp"``.

    The MLP on flattened 8x8 images trains about 10x faster on a CPU and is
    what the quick config uses; the conv net is the better model.
    """
    if cfg.model == "conv":
        return ConvVelocity(num_classes=10, channels=cfg.channels)
    if cfg.model == "mlp":
        return ImageMLP(features=64, hidden=cfg.hidden, depth=cfg.depth, num_classes=10)
    raise ValueError(f"digits.model: expected 'conv' or 'mlp', got {cfg.model!r}")


def run_digits(config, workdir: str, key: jax.Array) -> dict:
    cfg = config.digits
    k_train, k_clf, k_noise = jax.random.split(key, 3)
    train_x, train_y = data.load_digits("train")
    test_x, test_y = data.load_digits("test")
    clf_params = classifier.train_classifier(
        k_clf,
        train_x,
        train_y,
        steps=cfg.classifier_steps,
        workdir=common.cache_dir(config, workdir, "digits_classifier"),
    )
    clf_acc = classifier.accuracy(clf_params, test_x, test_y)
    logging.info("digits classifier test accuracy: %.4f", clf_acc)
    model = digits_model(cfg)
    params0 = model.init(jax.random.key(0), train_x[:2], jnp.zeros(2), jnp.zeros(2, jnp.int32))
    params, losses = train.train_or_restore(
        k_train,
        workdir=common.cache_dir(config, workdir, f"digits_flow_{cfg.model}"),
        apply_fn=model.apply,
        params_init=params0,
        data=train_x,
        labels=train_y,
        optimizer=train.make_optimizer(cfg.lr, cfg.train_steps, warmup_steps=100),
        num_steps=cfg.train_steps,
        batch_size=cfg.batch_size,
        p_uncond=cfg.p_uncond,
        null_label=mlp.null_label(10),
        checkpoint_every=max(cfg.train_steps // 4, 1),
        log_every=max(cfg.train_steps // 5, 1),
    )
    labels = jnp.repeat(jnp.arange(10, dtype=jnp.int32), cfg.samples_per_class)
    x0 = flow.noise(k_noise, labels.shape[0], (8, 8, 1))
    test_feats = classifier.features(clf_params, test_x)
    results: dict = {
        "classifier_test_accuracy": clf_acc,
        "train_loss_final": float(np.mean(losses[-100:])),
        "fd_train_vs_test": metrics.frechet_distance_features(
            classifier.features(clf_params, train_x), test_feats
        ),
        "cfg": {},
    }
    rows = []
    jobs = [
        (w, s, c, n)
        for w in cfg.cfg_scales
        for s in config.solvers
        for c in config.sway_coefs
        for n in config.nfes
    ]
    for w, solver, coef, nfe in tqdm(jobs, desc="sway/digits", leave=False):
        guided = w != 0
        steps = steps_for(nfe, solver, 2 if guided else 1)
        if steps < 1:
            continue
        pad = steps_for(max(config.nfes), solver, 2 if guided else 1)
        ts = grid(coef, steps, pad)
        x1 = _sample_cond(model.apply, params, x0, ts, labels, w, solver, guided)
        x1 = jnp.clip(x1, -1.0, 1.0)
        entry = {
            "steps": steps,
            "frechet_distance": metrics.frechet_distance_features(
                classifier.features(clf_params, x1), test_feats
            ),
            "accuracy": classifier.accuracy(clf_params, x1, labels),
        }
        node = results["cfg"].setdefault(f"w={w:g}", {}).setdefault(solver, {})
        node.setdefault(schedule_name(coef), {})[nfe] = entry
        if solver == "euler" and coef in (0.0, -1.0) and w == cfg.cfg_scales[-1]:
            if nfe in (config.nfes[0], config.nfes[-1]):
                idx = np.arange(10) * cfg.samples_per_class
                rows.append(
                    (f"{schedule_name(coef)} {nfe} NFE", data.digits_to_unit(np.asarray(x1[idx])))
                )
    _metric_plot(
        os.path.join(workdir, "digits_frechet.png"),
        results["cfg"],
        "frechet_distance",
        "digits / CFG",
        "Fréchet distance (classifier features)",
        logy=True,
    )
    if rows:
        common.image_grid(os.path.join(workdir, "digits_samples.png"), rows)
    return results


def _log_verdicts(results: dict, config) -> dict:
    verdicts = {}
    if "toy" in results:
        for vname, per_solver in results["toy"]["velocity"].items():
            for solver, table in per_solver.items():
                t = {s: {n: e["energy_distance"] for n, e in r.items()} for s, r in table.items()}
                verdicts[f"toy/{vname}/{solver}"] = _verdicts(t, config.nfes)
    if "digits" in results:
        for wname, per_solver in results["digits"]["cfg"].items():
            for solver, table in per_solver.items():
                t = {s: {n: e["frechet_distance"] for n, e in r.items()} for s, r in table.items()}
                verdicts[f"digits/{wname}/{solver}"] = _verdicts(t, config.nfes)
    for setting, per_grid in verdicts.items():
        for name, checks in per_grid.items():
            if not checks:
                continue
            hits = [n for n, ok in checks.items() if ok]
            logging.info(
                "%s: %s at N NFE %s uniform at 2N for N in %s (matched at %s)",
                setting,
                name,
                "matches or beats"
                if len(hits) == len(checks)
                else ("partly matches" if hits else "does NOT match"),
                sorted(checks),
                sorted(hits),
            )
    return verdicts


CLAIM = (
    "F5-TTS (Table 5, midpoint, LibriSpeech-PC): sway (s = -1) at 16 steps reaches "
    "WER 2.43 vs 2.84 for uniform at 32 steps, i.e. sway at N steps beats uniform at 2N."
)


def _fmt(x: float) -> str:
    return f"{x:.4f}" if abs(x) >= 1e-3 else f"{x:.2e}"


def summary(results: dict) -> list[tuple[str, str]]:
    """Rows ``(claim, measured)`` for the demo's summary table."""
    claim = (
        "sway (s = -1) at N NFE >= uniform at 2N "
        "(F5-TTS: 16-step sway WER 2.43 < 32-step uniform 2.84)"
    )
    rows = []
    for setting, per_grid in results["verdicts"].items():
        checks = per_grid.get("sway-1", {})
        if not checks or setting.startswith("toy/oracle"):
            continue
        kind, group, solver = setting.split("/")
        if kind == "toy":
            table, metric = results["toy"]["velocity"][group][solver], "energy_distance"
        else:
            table, metric = results["digits"]["cfg"][group][solver], "frechet_distance"
        n = sorted(int(k) for k in checks)[len(checks) // 2]
        a, b = table["sway-1"][n][metric], table["uniform"][2 * n][metric]
        ok = sum(bool(v) for v in checks.values())
        label = "ED" if kind == "toy" else "FD"
        rows.append((claim, f"{setting}: {label} {_fmt(a)} at {n} vs {_fmt(b)} at {2 * n} NFE; "
                            f"holds at {ok}/{len(checks)} N"))  # fmt: skip
    return rows


def report(results: dict) -> str:
    """Markdown section: the paper's claim beside our numbers (for the demo report)."""
    lines = ["## Sway sampling (F5-TTS)", "", f"**Claim.** {CLAIM}", ""]
    nfes = results["config"]["nfes"]
    for title, node, metric in [
        (
            "2-D model, energy distance to held-out data (lower is better)",
            results["toy"]["velocity"].get("model", {}),
            "energy_distance",
        ),
        (
            "2-D exact oracle velocity, energy distance",
            results["toy"]["velocity"].get("oracle", {}),
            "energy_distance",
        ),
    ] + [
        (
            f"digits, CFG {w}, Fréchet distance in classifier features (lower is better)",
            node,
            "frechet_distance",
        )
        for w, node in results.get("digits", {}).get("cfg", {}).items()
    ]:
        for solver, table in node.items():
            lines += [
                f"**{title}, {solver}**",
                "",
                "| grid | " + " | ".join(f"{n} NFE" for n in nfes) + " |",
                "|---" * (len(nfes) + 1) + "|",
            ]
            for name, row in table.items():
                cells = [
                    _fmt(row[str(n)][metric])
                    if str(n) in row
                    else (_fmt(row[n][metric]) if n in row else "-")
                    for n in nfes
                ]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
            lines.append("")
    lines += ["**Verdict** (sway at N NFE vs uniform at 2N NFE, same solver):", ""]
    for setting, per_grid in results["verdicts"].items():
        for name, checks in per_grid.items():
            if checks:
                ok = [int(n) for n, v in checks.items() if v]
                lines.append(
                    f"- {setting}, {name}: matches/beats at N = {sorted(ok) or 'none'} "
                    f"of {sorted(int(n) for n in checks)}"
                )
    floor = results["toy"]["energy_distance_held_out_vs_train"]
    lines += [
        "",
        f"2-D noise floor: energy distance between two independent data sets of the same size "
        f"= {_fmt(floor)}; differences smaller than a few times this are ties.",
    ]
    if "digits" in results:
        d = results["digits"]
        lines += [
            "",
            f"Digits classifier test accuracy {d['classifier_test_accuracy']:.3f}; "
            f"Fréchet distance train vs test data {d['fd_train_vs_test']:.3f} (the floor).",
        ]
    lines += ["", "![toy](sway/toy_energy_distance.png)", "![toy samples](sway/toy_samples.png)"]
    if "digits" in results:
        lines += [
            "![digits](sway/digits_frechet.png)",
            "![digits samples](sway/digits_samples.png)",
        ]
    return "\n".join(lines) + "\n"


def run(config, workdir: str) -> dict:
    """Runs the reproduction; writes results.json, plots and sway.log into ``workdir``."""
    handler = common.prepare_workdir(workdir, "sway.log")
    try:
        key = jax.random.key(config.seed)
        k_toy, k_digits = jax.random.split(key)
        results: dict = {"config": config.to_dict()}
        results["toy"] = run_toy(config, workdir, k_toy)
        if config.digits.enabled:
            results["digits"] = run_digits(config, workdir, k_digits)
        results["verdicts"] = _log_verdicts(results, config)
        common.write_results(workdir, results)
        return results
    finally:
        common.close_log(handler)


if __name__ == "__main__":
    common.main(run, "sway")
