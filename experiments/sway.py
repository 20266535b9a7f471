"""Sway sampling (F5-TTS) reproduced on flow models the project trains, over seeds.

For every seed (``config.seed``, ``+1``, ... ``num_seeds`` of them) a 2-D flow
model and a class-conditional digits model are trained (or restored), and
sample quality is measured against NFE for the uniform grid and sway grids,
with Euler and midpoint, with CFG on digits. Each number is reported as the
mean over seeds with a t-interval, and "sway at N NFE vs uniform at 2N" is
decided on the paired per-seed differences (``experiments.stats``). Library
entry point: ``run(config, workdir)``; the report is in ``sway_report``.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from tqdm import tqdm

from inferax.experiments import common, metrics, plots, schema, stats, sway_infill
from inferax.models import classifier, data, gmm, mlp, train
from inferax.models.convnet import ConvVelocity
from inferax.sampling import flow, guidance, schedules

TOY_ORACLES = {"eight_gaussians": gmm.eight_gaussians}
MIN_STEPS = 2  # with one step every grid is the single interval [0, 1]: left out


def schedule_name(coef: float) -> str:
    return "uniform" if coef == 0 else f"sway{coef:+g}"


def grid(coef: float, steps: int, length: int | None = None) -> jax.Array:
    """The time grid of ``steps`` intervals, filled up to ``length`` intervals with 1.0.

    The filling is never integrated: the sampler is called with
    ``num_active_steps=steps`` (``flow.sample``), so one compiled sampler
    serves every step count of a sweep and ``FlowInfo.nfe`` counts only the
    active steps.
    """
    ts = schedules.uniform(steps) if coef == 0 else schedules.sway(steps, coef)
    if length is not None and length > steps:
        ts = jnp.concatenate([ts, jnp.ones(length - steps, ts.dtype)])
    return ts


def steps_for(nfe: int, solver: str, nfe_per_call: int = 1) -> int:
    return nfe // (flow.SOLVER_EVALS[solver] * nfe_per_call)


@functools.partial(jax.jit, static_argnames=("apply_fn", "solver"))
def _sample_uncond(apply_fn, params, x0, ts, steps, solver):
    x, info = flow.sample(
        lambda x, t: apply_fn(params, x, t), x0, ts, solver=solver, num_active_steps=steps
    )
    return x, info.nfe


@functools.partial(jax.jit, static_argnames=("apply_fn", "solver", "guided"))
def _sample_cond(apply_fn, params, x0, ts, steps, labels, w, solver, guided):
    def cond_v(x, t, y):
        return apply_fn(params, x, t, y)

    if guided:
        v = guidance.cfg(cond_v, labels, mlp.null_label(10), w)
    else:

        def v(x, t):
            return cond_v(x, t, labels)

    x, info = flow.sample(v, x0, ts, solver=solver, num_active_steps=steps)
    return x, info.nfe


def _jobs(config, groups, cfg_factor) -> list[tuple]:
    """(group, solver, coef, nfe, steps) with at least MIN_STEPS steps."""
    out = []
    for g in groups:
        for s in config.solvers:
            for c in config.sway_coefs:
                for n in config.nfes:
                    k = steps_for(n, s, cfg_factor(g))
                    if k >= MIN_STEPS:
                        out.append((g, s, c, n, k))
    return out


# Config fields that do not change a trained model (left out of its cache key).
_NOT_TRAINING = {"num_eval", "use_oracle", "enabled", "classifier_steps", "samples_per_class",
                 "cfg_scales"}  # fmt: skip


def train_spec(config, section: str) -> dict:
    """What determines a trained model beyond ``train``'s arguments: its config section
    (optimizer settings, data set, architecture), for the model cache key."""
    fields = {k: v for k, v in config[section].to_dict().items() if k not in _NOT_TRAINING}
    return {"experiment": "sway", "section": section, **fields}


def _oracle_apply(mixture, x, t):
    return mixture.velocity(x, t)


def run_toy(config, workdir, seed, model, raw: dict, plot_samples: dict) -> None:
    """One seed of the 2-D part: trains (or restores) the model, samples every grid.

    ``model`` is the same module object for every seed, so the jitted samplers
    (keyed by ``model.apply``) compile once per solver for the whole run.
    """
    cfg = config.toy
    k_data, k_train, k_eval, k_noise = jax.random.split(
        jax.random.fold_in(jax.random.key(seed), 0), 4
    )
    train_x = data.toy_samples(cfg.dataset, k_data, cfg.num_train)
    held_out = data.toy_samples(cfg.dataset, k_eval, cfg.num_eval)
    params0 = model.init(jax.random.key(0), train_x[:2], jnp.zeros(2))
    params, losses = train.train_or_restore(
        k_train,
        workdir=common.cache_dir(config, workdir, f"toy_{cfg.dataset}"),
        spec=train_spec(config, "toy"),
        apply_fn=model.apply,
        params_init=params0,
        data=train_x,
        optimizer=train.make_optimizer(cfg.lr, cfg.train_steps, warmup_steps=cfg.warmup_steps),
        num_steps=cfg.train_steps,
        batch_size=cfg.batch_size,
        checkpoint_every=max(cfg.train_steps // 4, 1),
        log_every=max(cfg.train_steps // 5, 1),
    )
    oracle = TOY_ORACLES.get(cfg.dataset, lambda: None)()
    x0 = flow.noise(k_noise, cfg.num_eval, (2,))
    velocities = {"model": (model.apply, params)}
    if cfg.use_oracle and oracle is not None:
        velocities["oracle"] = (_oracle_apply, oracle)
    top = raw.setdefault("toy", {})
    stats.append_per_seed(top, ("scalars",), {"train_loss_final": np.mean(losses[-100:])})
    # The floor: an independent data set of the same size scored against the same held-out set.
    floor = {"energy_distance": metrics.energy_distance(train_x[: cfg.num_eval], held_out)}
    if oracle is not None:
        floor["nll"] = -jnp.mean(oracle.log_prob(held_out))
    stats.append_per_seed(top, ("floor",), floor)
    length = {s: steps_for(max(config.nfes), s) for s in config.solvers}
    plot_nfe = config.nfes[min(1, len(config.nfes) - 1)]
    for vname, solver, coef, nfe, steps in _jobs(config, velocities, lambda _: 1):
        ts = grid(coef, steps, length[solver])
        apply_fn, theta = velocities[vname]
        x1, used = _sample_uncond(apply_fn, theta, x0, ts, steps, solver)
        ed = metrics.energy_distance(x1, held_out)
        entry = {"steps": steps, "nfe": int(used), "energy_distance": ed}
        if oracle is not None:
            entry["nll"] = -jnp.mean(oracle.log_prob(x1))
        stats.append_per_seed(top, ("velocity", vname, solver, schedule_name(coef), nfe), entry)
        if seed == config.seed and solver == "euler" and nfe == plot_nfe:
            plot_samples[f"{vname}, {schedule_name(coef)}, Euler {nfe} NFE"] = np.asarray(x1)
    if seed == config.seed:
        plot_samples[f"held-out data (seed {seed})"] = np.asarray(held_out)


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


def digits_classifier(config, workdir: str):
    """The feature classifier: the measuring instrument, trained once with a fixed key
    (independent of the seeds, so every seed is measured by the same metric)."""
    cfg = config.digits
    train_x, train_y = data.load_digits("train")
    test_x, test_y = data.load_digits("test")
    params = classifier.train_classifier(
        jax.random.key(0), train_x, train_y, steps=cfg.classifier_steps,
        workdir=common.cache_dir(config, workdir, "digits_classifier"),
    )  # fmt: skip
    return params, classifier.accuracy(params, test_x, test_y)


def run_digits(config, workdir, seed, model, clf_params, raw: dict, image_rows: list) -> None:
    """One seed of the digits part: trains (or restores) the flow, samples every grid."""
    cfg = config.digits
    k_train, k_noise, k_sub = jax.random.split(jax.random.fold_in(jax.random.key(seed), 1), 3)
    train_x, train_y = data.load_digits("train")
    test_x, _ = data.load_digits("test")
    params, losses = common.train_digits_flow(
        cfg,
        k_train,
        common.cache_dir(config, workdir, f"digits_flow_{cfg.model}"),
        train_spec(config, "digits"),
        model,
        train_x,
        train_y,
    )
    labels = jnp.repeat(jnp.arange(10, dtype=jnp.int32), cfg.samples_per_class)
    x0 = flow.noise(k_noise, labels.shape[0], (8, 8, 1))
    test_feats = classifier.features(clf_params, test_x)
    top = raw.setdefault("digits", {})
    stats.append_per_seed(top, ("scalars",), {"train_loss_final": np.mean(losses[-100:])})
    # The floor: real training images, as many as are generated, scored like the samples.
    sub = np.asarray(jax.random.choice(k_sub, len(train_x), (labels.shape[0],), replace=False))
    fd = metrics.frechet_distance_features(
        classifier.features(clf_params, train_x[sub]), test_feats
    )
    stats.append_per_seed(top, ("floor",), {"frechet_distance": fd})
    groups = [f"w={w:g}" for w in cfg.cfg_scales]
    scale = dict(zip(groups, cfg.cfg_scales, strict=True))
    length = {(g, s): steps_for(max(config.nfes), s, 2 if scale[g] else 1)
              for g in groups for s in config.solvers}  # fmt: skip
    for g, solver, coef, nfe, steps in _jobs(config, groups, lambda g: 2 if scale[g] else 1):
        w = scale[g]
        ts = grid(coef, steps, length[g, solver])
        x1, used = _sample_cond(model.apply, params, x0, ts, steps, labels, w, solver, w != 0)
        x1 = jnp.clip(x1, -1.0, 1.0)
        entry = {
            "steps": steps,
            "nfe": int(used),
            "frechet_distance": metrics.frechet_distance_features(
                classifier.features(clf_params, x1), test_feats
            ),
            "accuracy": classifier.accuracy(clf_params, x1, labels),
        }
        stats.append_per_seed(top, ("cfg", g, solver, schedule_name(coef), nfe), entry)
        if seed == config.seed and solver == "euler" and coef in (0.0, -1.0) and g == groups[-1]:
            if nfe in (config.nfes[0], config.nfes[-1]):
                idx = np.arange(10) * cfg.samples_per_class
                title = f"model, {schedule_name(coef)}, Euler {nfe} NFE ({g})"
                image_rows.append((title, data.digits_to_unit(np.asarray(x1[idx]))))


SETTINGS = {"toy": ("velocity", "energy_distance"), "digits": ("cfg", "frechet_distance")}
# (The infilling part's verdicts, on "ref_mse", are made by sway_infill.verdicts.)


def verdicts(results: dict, nfes) -> dict:
    """``[setting][grid][N]``: ``stats.compare`` of grid at N NFE vs uniform at 2N NFE.

    Paired by seed; lower is better; the noise floor is the seed-to-seed
    standard deviation of the metric on real data of the same size; the effect
    size is the paper's relative effect (``sway_infill.paper_effect``: 14 % of
    uniform at 2N, F5-TTS Table 5); Holm over each setting's family (every grid
    at every N: ``sway_infill.correct_setting``).
    """
    out: dict = {}
    for part, (branch, metric) in SETTINGS.items():
        if part not in results:
            continue
        floor = stats.noise_floor(results[part]["floor"][metric]["values"])
        for group, per_solver in results[part][branch].items():
            for solver, table in per_solver.items():
                uni = table.get("uniform", {})
                node = out.setdefault(f"{part}/{group}/{solver}", {})
                for name, row in table.items():
                    if name == "uniform":
                        continue
                    node[name] = {
                        n: stats.compare(
                            row[n][metric]["values"],
                            uni[2 * n][metric]["values"],
                            noise_floor=floor,
                            effect_size=sway_infill.paper_effect(
                                results, uni[2 * n][metric]["values"]
                            ),
                        )  # fmt: skip
                        for n in nfes
                        if n in row and 2 * n in uni
                    }
    return {k: sway_infill.correct_setting(v) for k, v in out.items()}


def _log_verdicts(verdicts_: dict) -> None:
    for setting, per_grid in verdicts_.items():
        for name, checks in per_grid.items():
            for n, v in checks.items():
                logging.info(
                    "%s: %s at %d NFE vs uniform at %d NFE: %s (%s; improvement %s)",
                    setting, name, n, 2 * n, v["verdict"], v["reason"],
                    stats.format_interval(v["improvement"]),
                )  # fmt: skip


def _plot(path, tree, metric, prefix, ylabel, logy, floor) -> None:
    panels = []
    for group, per_solver in tree.items():
        for solver, table in per_solver.items():
            series = {g: (list(r), [e[metric] for e in r.values()]) for g, r in table.items()}
            panels.append((f"{prefix} / {group} / {solver}", series))
    xlabel = "NFE (CFG pair = 2)" if "CFG" in prefix else "NFE"
    plots.errorbar_plot(path, panels, xlabel=xlabel, ylabel=ylabel, logy=logy, hline=floor,
                        hline_label="real data (floor)")  # fmt: skip


def _fail(field: str, expected: str, got) -> None:
    raise ValueError(f"{field}: expected {expected}, got {got!r}")


def validate(config) -> None:
    """Checks every field before anything is trained (ValueError naming it): the schema
    (``experiments.schema``: every field's type and range), then what depends on
    several fields or on the data (``infill.num_eval`` <= the test split)."""
    schema.check(config, "sway")
    stats.seeds(config.seed, config.num_seeds)
    available = len(data.load_digits("test")[0])
    if config.infill.enabled and config.infill.num_eval > available:
        _fail("infill.num_eval", f"<= {available} (the digits test split)", config.infill.num_eval)
    solvers, nfes, coefs = list(config.solvers), list(config.nfes), list(config.sway_coefs)
    if not solvers or any(s not in flow.SOLVER_EVALS for s in solvers):
        _fail("solvers", f"names from {sorted(flow.SOLVER_EVALS)}", solvers)
    if not nfes or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in nfes):
        _fail("nfes", "positive ints", nfes)
    if 0.0 not in coefs:
        _fail("sway_coefs", "0 (the uniform baseline) among them", coefs)
    if config.toy.dataset not in data.TOY_DATASETS:
        _fail("toy.dataset", f"one of {sorted(data.TOY_DATASETS)}", config.toy.dataset)
    for section in ("toy", "digits"):
        c = config[section]
        if not 0 <= c.warmup_steps < c.train_steps:
            _fail(f"{section}.warmup_steps", f"0 <= warmup_steps < {c.train_steps}", c.warmup_steps)
    if config.digits.enabled:
        digits_model(config.digits)  # raises on an unknown digits.model
        scales = list(config.digits.cfg_scales)
        if not scales or any(w < 0 for w in scales):
            _fail("digits.cfg_scales", "non-negative CFG scales", scales)
    if config.infill.enabled:
        sway_infill.validate(config)


def run(config, workdir: str) -> dict:
    """Runs the reproduction; writes results.json, plots and sway.log into ``workdir``."""
    validate(config)
    handler = common.prepare_workdir(workdir, "sway.log")
    try:
        seeds = stats.seeds(config.seed, config.num_seeds)
        raw: dict = {}
        toy_samples: dict = {}
        image_rows: list = []
        use_clf = config.digits.enabled or config.infill.enabled
        clf = digits_classifier(config, workdir) if use_clf else None
        toy_model = mlp.VelocityMLP(features=2, hidden=config.toy.hidden, depth=config.toy.depth)
        digits_net = digits_model(config.digits)
        infill_net, tuned, tuning, infill_rows = sway_infill.model(config), {}, {}, []
        for seed in tqdm(seeds, desc="sway seeds", leave=False):
            logging.info("sway: seed %d", seed)
            run_toy(config, workdir, seed, toy_model, raw, toy_samples)
            if config.digits.enabled:
                run_digits(config, workdir, seed, digits_net, clf[0], raw, image_rows)
            if config.infill.enabled:
                tuned = sway_infill.run_seed(config, workdir, seed, infill_net, clf[0], raw,
                                             tuned, tuning, infill_rows)  # fmt: skip
        results: dict = {"config": config.to_dict(), "seeds": seeds, **stats.summarize_tree(raw)}
        if config.digits.enabled:
            results["digits"]["classifier_test_accuracy"] = clf[1]
        results["verdicts"] = verdicts(results, config.nfes)
        if config.infill.enabled:
            results["infill"]["tuning"] = tuning
            results["infill"]["classifier_test_accuracy"] = clf[1]
            results["verdicts"].update(sway_infill.verdicts(results, config.nfes))
        _log_verdicts(results["verdicts"])
        toy = results["toy"]
        _plot(os.path.join(workdir, "toy_energy_distance.png"), toy["velocity"],
              "energy_distance", config.toy.dataset, "energy distance to held-out data",
              False, toy["floor"]["energy_distance"]["mean"])  # fmt: skip
        plots.scatter_grid(
            os.path.join(workdir, "toy_samples.png"),
            [(f"{k} (N={len(v)})", v) for k, v in toy_samples.items()],
        )
        if config.digits.enabled:
            d = results["digits"]
            _plot(os.path.join(workdir, "digits_frechet.png"), d["cfg"], "frechet_distance",
                  "digits / CFG", "Fréchet distance (classifier features)", True,
                  d["floor"]["frechet_distance"]["mean"])  # fmt: skip
            if image_rows:
                plots.image_grid(os.path.join(workdir, "digits_samples.png"), image_rows)
        if config.infill.enabled:
            _plot(os.path.join(workdir, "infill_ref_mse.png"), results["infill"]["cfg"],
                  "ref_mse", "infill / CFG", "MSE to the reference solve (completed pixels)",
                  True, None)  # fmt: skip
            if infill_rows:
                plots.image_grid(os.path.join(workdir, "infill_samples.png"), infill_rows)
        common.write_results(workdir, results)
        return results
    finally:
        common.close_log(handler)


def report(results: dict) -> str:
    from inferax.experiments import sway_report

    return sway_report.report(results)


def summary(results: dict) -> dict:
    from inferax.experiments import sway_report

    return sway_report.summary(results)


if __name__ == "__main__":
    common.main(run, "sway")
