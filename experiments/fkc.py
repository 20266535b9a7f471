"""Feynman-Kac correctors (Skreta et al. 2025) reproduced on 2-D Gaussian mixtures.

Three targets built from base mixtures, each with exact target samples:
annealing p^beta (grid sampler), the product p1 p2 (closed-form mixture) and
the CFG geometric mixture q_u^(1 - w) q_c^w (grid sampler). Each is sampled by
FKC (``feynman_kac.sample(weighted=True)``, systematic resampling every step,
and the final weighted particles resampled once more before the metrics) and
by the unweighted SDE with the same drift, noise, grid and keys, from the exact
oracle velocities and from flow models the project trains, over the number of
particles. Every number is measured over seeds (a seed draws the mixtures,
trains the models and drives the sampler) and reported as a mean with a
t-interval; "FKC beats the unweighted SDE" is decided on paired per-seed
differences (``experiments.stats``). Library entry point:
``run(config, workdir)``; the report is in ``fkc_report``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from tqdm import tqdm

from inferax.experiments import common, fkc_report, fkc_scores, metrics, schema, stats
from inferax.experiments.targets import build_problems, grid_samples, product_mixture  # noqa: F401
from inferax.models import mlp, train
from inferax.sampling import feynman_kac as fk
from inferax.sampling import resampling, sde

METHODS = fkc_report.METHODS


# A velocity is ``(factory, theta)``: ``factory(theta)`` gives the callable(s) the
# transition takes, ``theta`` is a pytree (mixture arrays or network parameters).
# The factory depends only on the config, so one compiled sampler serves every seed.


def _anneal_oracle(th):
    return th.velocity


def _product_oracle(th):
    return (th[0].velocity, th[1].velocity)


def _cfg_oracle(th):
    def v(x, t, labels):
        vs = jnp.stack([q.velocity(x, t) for q in th])  # [C + 1, N, 2]
        return jnp.take_along_axis(vs, labels[None, :, None], axis=0)[0]

    return v


def bind(velocity):
    """The callable(s) of a ``(factory, theta)`` velocity."""
    factory, theta = velocity
    return factory(theta)


def oracle_velocities(problems: dict, config) -> dict:
    """Exact velocities per target: anneal ``v``; product ``(v1, v2)``; cfg ``v(x, t, c)``."""
    cm = problems["cfg"]["mixtures"]
    per_class = tuple(cm[f"q_{i}"] for i in range(config.cfg.num_classes)) + (cm["q_u"],)
    pm = problems["product"]["mixtures"]
    return {
        "anneal": (_anneal_oracle, problems["anneal"]["mixtures"]["p"]),
        "product": (_product_oracle, (pm["p1"], pm["p2"])),
        "cfg": (_cfg_oracle, per_class),
    }


def train_spec(config, target: str) -> dict:
    """What determines a trained model beyond ``train``'s arguments (for the cache key):
    the target section that defines its training data, and the training section."""
    section = {k: v for k, v in config[target].to_dict().items()
               if k not in ("betas", "ws", "cond_class")}  # fmt: skip
    return {"experiment": "fkc", "target": target, "data": section, "train": config.train.to_dict()}


def _train(config, workdir, key, name, sampler, num_classes=None, p_uncond=0.0):
    tc = config.train
    model = mlp.VelocityMLP(features=2, hidden=tc.hidden, depth=tc.depth, num_classes=num_classes)
    labels0 = None if num_classes is None else jnp.zeros(2, jnp.int32)
    params0 = model.init(jax.random.key(0), jnp.zeros((2, 2)), jnp.zeros(2), labels0)
    params, losses = train.train_or_restore(
        key,
        workdir=common.cache_dir(config, workdir, name),
        spec=train_spec(config, name),
        apply_fn=model.apply,
        params_init=params0,
        data=sampler,
        optimizer=train.make_optimizer(tc.lr, tc.train_steps, warmup_steps=tc.warmup_steps),
        num_steps=tc.train_steps,
        batch_size=tc.batch_size,
        p_uncond=p_uncond,
        null_label=None if num_classes is None else mlp.null_label(num_classes),
        checkpoint_every=max(tc.train_steps // 4, 1),
        log_every=max(tc.train_steps // 5, 1),
    )
    logging.info("fkc: model %s final loss %.4f", name, float(np.mean(losses[-100:])))
    return model, params


def _model_factories(config):
    tc = config.train
    m_a = mlp.VelocityMLP(features=2, hidden=tc.hidden, depth=tc.depth)
    m_p = mlp.VelocityMLP(features=2, hidden=tc.hidden, depth=tc.depth, num_classes=2)
    m_c = mlp.VelocityMLP(
        features=2, hidden=tc.hidden, depth=tc.depth, num_classes=config.cfg.num_classes
    )

    def product(th):
        def expert(i):
            return lambda x, t: m_p.apply(th, x, t, jnp.full((x.shape[0],), i, jnp.int32))

        return (expert(0), expert(1))

    return {
        "anneal": lambda th: lambda x, t: m_a.apply(th, x, t),
        "product": product,
        "cfg": lambda th: lambda x, t, labels: m_c.apply(th, x, t, labels),
    }


def model_velocities(problems: dict, config, workdir: str, key: jax.Array) -> dict:
    """Trains (or restores) the three VelocityMLPs (cached per key and config); as oracles'."""
    k1, k2, k3 = jax.random.split(key, 3)
    base = problems["anneal"]["mixtures"]["p"]
    _, th_a = _train(config, workdir, k1, "anneal", lambda k, b: base.sample(k, b))
    p1, p2 = problems["product"]["mixtures"]["p1"], problems["product"]["mixtures"]["p2"]

    def product_data(k, b):
        k_l, k_1, k_2 = jax.random.split(k, 3)
        lab = jax.random.bernoulli(k_l, 0.5, (b,)).astype(jnp.int32)
        return jnp.where(lab[:, None] == 0, p1.sample(k_1, b), p2.sample(k_2, b)), lab

    _, th_p = _train(config, workdir, k2, "product", product_data, num_classes=2)
    q_u = problems["cfg"]["mixtures"]["q_u"]
    cls = jnp.asarray(problems["cfg"]["class_of_component"], jnp.int32)

    def cfg_data(k, b):
        x, comp = q_u.sample_with_labels(k, b)
        return x, cls[comp]

    n_cls = config.cfg.num_classes
    _, th_c = _train(config, workdir, k3, "cfg", cfg_data, n_cls, config.train.p_uncond)
    f = _model_factories(config)
    return {"anneal": (f["anneal"], th_a), "product": (f["product"], th_p), "cfg": (f["cfg"], th_c)}


def make_transition(
    target: str, setting: dict, velocity, config, transport: str = "model"
) -> fk.FKTransition:
    """The FKC transition of one target from its velocity callable(s)."""
    kw = {"g": config.g, "transport": transport, "transport_power": config.transport_power}
    if target == "anneal":
        return fk.anneal(velocity, setting["beta"], **kw)
    if target == "product":
        return fk.product(*velocity, **kw)
    c = config.cfg
    # The config speaks the paper's geometric weight w (q_u^(1 - w) q_c^w); the sampler's
    # guidance scale (v_c + s (v_c - v_u), as guidance.cfg) is s = w - 1.
    return fk.cfg(
        velocity, jnp.int32(c.cond_class), jnp.int32(mlp.null_label(c.num_classes)),
        guidance_scale=setting["w"] - 1.0, **kw,
    )  # fmt: skip


def _diagnostics(info) -> dict:
    """Per-run degeneracy diagnostics of ``FKInfo`` (the newer ones where the sampler has them)."""
    out = {"ess_min": jnp.min(info.ess)}
    if hasattr(info, "lineage_ess"):
        out["lineage_ess_final"] = info.lineage_ess[-1]
    if hasattr(info, "num_distinct_ancestors"):
        out["distinct_ancestors"] = info.num_distinct_ancestors
    return out


def sampler_fn(
    build, factory, n: int, ts: jax.Array, weighted: bool, langevin: tuple = (0, 0.1, True)
):
    """Jitted ``(keys [R], theta) -> (samples [R, n, 2], diagnostics, nfe)``.

    ``build(callables) -> FKTransition``. FKC's weighted output is resampled by
    its final weights, so both methods hand equal-weight samples to the metrics.
    ``langevin = (steps, step_size, adjusted)``: FKC's resample-move (``fk.sample``'s
    ``langevin_steps``, ``langevin_step_size``, ``adjusted``: MALA when True); the
    unweighted SDE never moves.
    """

    def one(key, theta):
        k_run, k_res = jax.random.split(key)
        moves = {"langevin_steps": langevin[0], "langevin_step_size": langevin[1],
                 "adjusted": bool(langevin[2])}  # fmt: skip
        x, log_w, info = fk.sample(
            k_run, build(factory(theta)), n, ts, event_shape=(2,), weighted=weighted,
            **(moves if weighted and langevin[0] else {}),
        )  # fmt: skip
        if weighted:
            x = x[resampling.systematic(k_res, log_w)]
        return x, _diagnostics(info), info.nfe

    return jax.jit(jax.vmap(one, in_axes=(0, None)))


def _build(target, setting, velocity, *, config, transport):
    return make_transition(target, setting, velocity, config, transport)


def _measure(x, target_x, centres, target_w) -> dict:
    return {
        "energy_distance": metrics.energy_distance(x, target_x),
        "mode_weight_error": metrics.mode_weight_error(x, centres, target_w),
    }


def _shares(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    nearest = np.argmin(((x[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    return np.bincount(nearest, minlength=len(centres)) / len(x)


def run_seed(config, problems, velocities, key, raw: dict, compiled: dict, plot_samples) -> None:
    """One seed's sweep, appended to ``raw[target][setting][velocity][method][N][metric]``.

    ``method`` is "fkc", "unweighted" or "exact" (exact target samples of the
    same size: the metrics' floor). ``compiled`` caches samplers across seeds.
    """
    k_target, k_run = jax.random.split(key)
    ts = jnp.linspace(0.0, 1.0, config.num_steps + 1)
    n_max = max(config.num_particles)
    for j, (target, sname) in enumerate((t, s) for t in problems for s in problems[t]["settings"]):
        prob, setting = problems[target], problems[target]["settings"][sname]
        ref = setting["sampler"](jax.random.fold_in(k_target, j), config.num_reference)
        nt = config.num_target_samples
        target_x, target_w = ref[:nt], _shares(ref, prob["centres"])
        for i, n in enumerate(config.num_particles):
            exact = ref[nt + i * n_max : nt + i * n_max + n]
            stats.append_per_seed(raw, (target, sname, "exact", n),
                                  _measure(exact, target_x, prob["centres"], target_w))  # fmt: skip
            # Same keys for both methods and velocities: only the weights differ.
            keys = jax.random.split(jax.random.fold_in(k_run, j * 1000 + i), config.num_repeats)
            for vname in config.velocities:
                factory, theta = velocities[vname][target]
                for method in METHODS:
                    # FKC uses the configured transport; the unweighted baseline is the
                    # paper's plain combined drift ("scaled"; for CFG ordinary CFG).
                    transport = config.transport if method == "fkc" else "scaled"
                    ck = (target, sname, vname, method, n)
                    if ck not in compiled:
                        build = functools.partial(
                            _build, target, setting, config=config, transport=transport
                        )
                        moves = (config.langevin_steps, config.langevin_step_size,
                                 config.langevin_adjusted)  # fmt: skip
                        compiled[ck] = sampler_fn(build, factory, n, ts, method == "fkc", moves)
                    xs, diag, nfe = compiled[ck](keys, theta)
                    xs = np.asarray(xs)
                    ms = [_measure(x, target_x, prob["centres"], target_w) for x in xs]
                    entry = {k: np.mean([m[k] for m in ms]) for k in ms[0]}
                    entry["nfe"] = int(np.asarray(nfe)[0])
                    entry.update({k: np.min(np.asarray(v)) for k, v in diag.items()})
                    stats.append_per_seed(raw, (target, sname, vname, method, n), entry)
                    if plot_samples is not None and n == n_max and vname == config.velocities[0]:
                        plot_samples.setdefault((target, sname), {"exact target": target_x})
                        plot_samples[target, sname][f"{vname}, {method}, N={n}"] = xs[0]
    return None


def verdicts(results: dict, config) -> dict:
    """``[target][setting][velocity][metric][N]``: ``stats.compare`` of FKC vs unweighted.

    Paired by seed, lower is better; the noise floor is the seed-to-seed
    standard deviation of the metric of exact target samples of the same size.
    """
    out: dict = {}
    for target, per_setting in fkc_report.targets(results).items():
        for sname, per_vel in per_setting.items():
            for vname in config.velocities:
                node = per_vel[vname]
                for metric in ("energy_distance", "mode_weight_error"):
                    v = out.setdefault(target, {}).setdefault(sname, {}).setdefault(vname, {})
                    v[metric] = {
                        n: stats.compare(
                            node["fkc"][n][metric]["values"],
                            node["unweighted"][n][metric]["values"],
                            noise_floor=stats.noise_floor(per_vel["exact"][n][metric]["values"]),
                        )
                        for n in node["fkc"]
                    }
                    for n, c in v[metric].items():
                        logging.info(
                            "fkc verdict %s %s %s %s N=%d: FKC vs the unweighted SDE %s (%s; "
                            "improvement %s)", target, sname, vname, metric, n, c["verdict"],
                            c["reason"], stats.format_interval(c["improvement"]),
                        )  # fmt: skip
    return out


def validate(config) -> None:
    """Checks every choice field before anything is trained (ValueError naming the field)."""
    schema.check(config, "fkc")
    unknown = set(config.velocities) - {"oracle", "model"}
    if unknown or not config.velocities:
        raise ValueError(
            f"velocities: expected a non-empty subset of ['oracle', 'model'], "
            f"got {list(config.velocities)}"
        )
    if config.transport not in fk.TRANSPORTS:
        raise ValueError(
            f"transport: expected one of {list(fk.TRANSPORTS)}, got {config.transport!r}"
        )
    stats.seeds(config.seed, config.num_seeds)
    if isinstance(config.g, str) and config.g not in sde.G_SCHEDULES:
        raise ValueError(
            f"g: expected one of {sorted(sde.G_SCHEDULES)} or a number, got {config.g!r}"
        )
    tc = config.train
    if "model" in config.velocities and not 0 <= tc.warmup_steps < tc.train_steps:
        raise ValueError(
            f"train.warmup_steps: expected 0 <= warmup_steps < train_steps = {tc.train_steps}, "
            f"got {tc.warmup_steps}"
        )
    need = config.num_target_samples + len(config.num_particles) * max(config.num_particles)
    if config.num_reference < need:
        raise ValueError(
            f"num_reference: expected >= num_target_samples + len(num_particles) * "
            f"max(num_particles) = {need}, got {config.num_reference}"
        )


def run(config, workdir: str) -> dict:
    """Runs the reproduction over seeds; writes results.json, plots and fkc.log."""
    validate(config)
    handler = common.prepare_workdir(workdir, "fkc.log")
    try:
        seeds = stats.seeds(config.seed, config.num_seeds)
        raw: dict = {}
        scores: dict = {}
        compiled: dict = {}
        plot_samples: dict = {}
        problems = None
        for seed in tqdm(seeds, desc="fkc seeds", leave=False):
            logging.info("fkc: seed %d", seed)
            k_mix, k_train, k_sweep = jax.random.split(jax.random.key(seed), 3)
            problems = build_problems(config, k_mix)
            velocities = {}
            if "oracle" in config.velocities:
                velocities["oracle"] = oracle_velocities(problems, config)
            if "model" in config.velocities:
                velocities["model"] = model_velocities(problems, config, workdir, k_train)
            first = seed == seeds[0]
            run_seed(config, problems, velocities, k_sweep, raw, compiled,
                     plot_samples if first else None)  # fmt: skip
            if "model" in config.velocities:
                checked = fkc_scores.score_check(
                    problems, velocities, jax.random.fold_in(k_train, 7), config
                )
                for name, per_t in checked.items():
                    for t, entry in per_t.items():
                        stats.append_per_seed(scores, (name, t), entry)
        results = {"config": config.to_dict(), "seeds": seeds, **stats.summarize_tree(raw)}
        if scores:
            results["score_check"] = stats.summarize_tree(scores)
        results["verdicts"] = verdicts(results, config)
        fkc_report.make_plots(workdir, problems, results, plot_samples, config)
        common.write_results(workdir, results)
        return results
    finally:
        common.close_log(handler)


report = fkc_report.report
summary = fkc_report.summary


if __name__ == "__main__":
    common.main(run, "fkc")
