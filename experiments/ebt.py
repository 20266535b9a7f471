"""Energy-Based Transformers (Gladstone et al. 2025) reproduced at small scale, over seeds.

For every seed and every model size (``<task>.d_models``, the trunk's width) an EBT
and a feed-forward transformer of the same size, data and training steps are trained
(or restored) on two tasks: completing the bottom
half of 8x8 digits (MSE, PSNR) and predicting the next token of arithmetic
traces (cross-entropy, perplexity, accuracy). On held-out data the EBT's
metric is read after 1..16 inference steps (one run, the trajectory read at
each count) and for G = 1..16 self-verification candidates (the first G of
one run of max G, the lowest final energy kept), beside the baseline; also
on harder inputs (noisier digit contexts; the computed result digits of the
traces) and the correlation of the chosen candidates' energy with their true
error. Results are ``results[task][subset][d_model]``. Verdicts (``ebt_report.verdicts``,
also stored in results.json) are paired over seeds: the claims at each size and the
trend from the smallest to the largest size (``experiments.stats``).
Library entry point: ``run(config, workdir)``; the report is in ``ebt_report``.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from scipy import stats as sps
from tqdm import tqdm

from inferax.experiments import common, ebt_report, plots, schema, stats
from inferax.models import arithmetic, data, ebt, ebt_train

TASKS = ("digits", "tokens")
IMAGE_STEPS = (1, 2, 4, 8)
_EQ = int(arithmetic.encode("=")[0])


def _fail(field: str, expected: str, got) -> None:
    raise ValueError(f"{field}: expected {expected}, got {got!r}")


def validate(config) -> None:
    """Checks every field before anything is trained (ValueError naming it): the schema
    (``experiments.schema``: every field's type and range), then what depends on
    several fields or on the data (``digits.num_eval`` <= the test split)."""
    schema.check(config, "ebt")
    stats.seeds(config.seed, config.num_seeds)
    available = len(data.load_digits("test")[0])
    if config.digits.enabled and config.digits.num_eval > available:
        _fail("digits.num_eval", f"<= {available} (the digits test split)", config.digits.num_eval)
    for name in ("steps", "candidates"):
        v = list(config[name])
        if not v or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in v):
            _fail(name, "positive ints", v)
    for name in ("verify_steps", "claim_steps"):
        if not isinstance(config[name], int) or config[name] < 1:
            _fail(name, "a positive int", config[name])
    if 1 not in config.candidates:
        _fail("candidates", "1 (the single-candidate baseline) among them", config.candidates)
    if 1 not in config.steps or config.claim_steps not in config.steps:
        _fail("steps", f"1 and claim_steps = {config.claim_steps} among them", config.steps)
    if not any(config[t].enabled for t in TASKS):
        _fail("enabled", "at least one task enabled", [t for t in TASKS])
    for t in TASKS:
        c = config[t]
        ebt_train.EBTTraining.from_config(c).validate(t)
        if any(d % c.num_heads for d in c.d_models):
            _fail(f"{t}.num_heads", f"a divisor of every d_models = {list(c.d_models)}",
                  c.num_heads)  # fmt: skip
        if not 0 <= c.warmup_steps < c.train_steps:
            _fail(f"{t}.warmup_steps", f"0 <= warmup_steps < {c.train_steps}", c.warmup_steps)
    for n in config.tokens.ops:
        if not arithmetic.MIN_OPS <= n <= arithmetic.MAX_OPS:
            _fail("tokens.ops", f"ints in [{arithmetic.MIN_OPS}, {arithmetic.MAX_OPS}]", n)


# ------------------------------------------------------------------ tasks
def digits_task(config, d_model: int) -> dict:
    c = config.digits
    top, bottom = ebt.digits_halves(data.load_digits("train")[0])
    te_top, te_bottom = ebt.digits_halves(data.load_digits("test")[0][: c.num_eval])
    noisy = np.random.default_rng(0).normal(0.0, c.ood_noise, te_top.shape)
    ebm = ebt.DigitsEBT(d_model, c.num_layers, c.num_heads)
    ff = ebt.DigitsFF(d_model, c.num_layers, c.num_heads)
    return {
        "train": {"context": top, "target": bottom},
        "eval": {"clean": te_top, "noisy": np.clip(te_top + noisy, -1.0, 1.0)},
        "target": te_bottom,
        "event": (ebt.HALF,),
        "ebm": ebm,
        "energy": ebm.apply,
        "encode": None,
        "ebm_init": lambda k: ebm.init(k, jnp.zeros(ebt.HALF), jnp.zeros(ebt.HALF)),
        "ff_apply": ff.apply,
        "ff_init": lambda k: ff.init(k, jnp.zeros(ebt.HALF)),
        "loss": ebt.smooth_l1,
        "d_model": d_model,
    }


def tokens_task(config, d_model: int) -> dict:
    c = config.tokens
    length = max(arithmetic.prompt_length(n) + arithmetic.solution_length(n) for n in c.ops)
    rng = np.random.default_rng(0)
    train = [p for n in c.ops for p in arithmetic.split("train", n, c.num_problems)]
    test = [p for n in c.ops for p in arithmetic.split("test", n, c.num_eval)]
    ex = ebt.token_examples(*arithmetic.training_sequences(train, rng, 0.0, length))
    ev = ebt.token_examples(*arithmetic.training_sequences(test, rng, 0.0, length))
    pick = np.random.default_rng(1).choice(len(ev["target"]), c.num_eval, replace=False)
    ev = jax.tree_util.tree_map(lambda a: a[np.sort(pick)], ev)
    # Harder inputs: the positions whose next token is a computed result (after "=").
    hard = ev["context"]["tokens"][np.arange(c.num_eval), ev["context"]["t"]] == _EQ
    v = arithmetic.VOCAB_SIZE
    ebm = ebt.TokenEBT(v, length, d_model, c.num_layers, c.num_heads)
    ff = ebt.TokenFF(v, length, d_model, c.num_layers, c.num_heads)
    encode, energy_fn = ebt.token_energy(ebm)
    return {
        "train": ex,
        "eval": {"all": ev["context"]},
        "hard": hard,
        "target": ev["target"],
        "event": (v,),
        "ebm": ebm,
        "energy": energy_fn,
        "encode": encode,
        "ebm_init": lambda k: ebm.init(k, jnp.zeros(length, jnp.int32), 0, jnp.zeros(v)),
        "ff_apply": lambda p, ctx: ff.apply(p, ctx["tokens"], ctx["t"]),
        "ff_init": lambda k: ff.init(k, jnp.zeros(length, jnp.int32), 0),
        "loss": ebt.cross_entropy,
        "d_model": d_model,
    }


def prepare(config, task_name: str, task: dict) -> dict:
    """Builds the losses, optimizers and jitted inference once per task, so that every seed
    reuses the same compiled training step and inference programs."""
    c = config[task_name]
    cfg = ebt_train.EBTTraining.from_config(c)
    kmax, gmax = max(config.steps), max(config.candidates)
    kw = {"init_scale": cfg.init_scale, "encode": task["encode"]}

    def trajectory(key, params, ctx):
        _, _, info = ebt_train.predict(key, task["energy"], params, ctx, task["event"],
                                       num_steps=kmax, trajectory=True, **kw)  # fmt: skip
        return info.minimize.trajectory[:, :, 0]  # [kmax + 1, B, *event]

    def verify(key, params, ctx):
        _, ys, info = ebt_train.predict(key, task["energy"], params, ctx, task["event"],
                                        num_steps=config.verify_steps, num_candidates=gmax,
                                        **kw)  # fmt: skip
        return ys, info.final_energies

    return {**task, "cfg": cfg,
            "ebt_loss": ebt_train.ebt_loss(task["energy"], task["loss"], cfg, task["encode"]),
            "ff_loss": ebt_train.ff_loss(task["ff_apply"], task["loss"]),
            "opt": ebt_train.optimizer(cfg, c.train_steps),
            "ff_opt": ebt_train.network_optimizer(cfg, c.train_steps),
            "trajectory": jax.jit(trajectory), "verify": jax.jit(verify),
            "ff_predict": jax.jit(task["ff_apply"])}  # fmt: skip


def train_models(config, workdir, task_name, task, seed):
    c = config[task_name]
    cfg = task["cfg"]
    k_init, k_ebt, k_ff = jax.random.split(jax.random.fold_in(jax.random.key(seed), 7), 3)
    d = task["d_model"]
    spec = {"experiment": "ebt", "task": task_name, **c.to_dict(), "d_model": d}
    common_kw = {"data": task["train"], "event_shape": task["event"],
                 "num_steps": c.train_steps, "batch_size": c.batch_size,
                 "checkpoint_every": max(c.train_steps // 2, 1),
                 "log_every": max(c.train_steps // 4, 1)}  # fmt: skip
    params, losses = ebt_train.fit_or_restore(
        k_ebt, workdir=common.cache_dir(config, workdir, f"{task_name}_d{d}_ebt"), spec=spec,
        loss_fn=task["ebt_loss"], params=ebt_train.ebt_params(task["ebm_init"](k_init), cfg),
        opt=task["opt"], cfg=cfg, **common_kw,
    )  # fmt: skip
    ff_params, ff_losses = ebt_train.fit_or_restore(
        k_ff, workdir=common.cache_dir(config, workdir, f"{task_name}_d{d}_ff"),
        spec={**spec, "model": "feed-forward"}, loss_fn=task["ff_loss"],
        params=task["ff_init"](k_init), opt=task["ff_opt"], **common_kw,
    )  # fmt: skip
    return cfg, params, ff_params, float(losses[-10:].mean()), float(ff_losses[-10:].mean())


# ------------------------------------------------------------------ evaluation
def _per_example(task_name, pred, target):
    if task_name == "digits":
        return {"sq": jnp.mean((pred - target) ** 2, axis=-1)}
    ce = -jnp.take_along_axis(jax.nn.log_softmax(pred, -1), target[:, None], -1)[:, 0]
    return {"ce": ce, "acc": (jnp.argmax(pred, -1) == target).astype(jnp.float32)}


def _aggregate(task_name, per: dict, mask) -> dict:
    m = np.asarray(mask, bool)
    if task_name == "digits":
        mse = float(np.mean(np.asarray(per["sq"])[m]))
        return {"mse": mse, "psnr": 10.0 * np.log10(4.0 / mse)}  # pixel range [-1, 1]: peak 2
    ce = float(np.mean(np.asarray(per["ce"])[m]))
    return {
        "ce": ce,
        "perplexity": float(np.exp(ce)),
        "accuracy": float(np.mean(np.asarray(per["acc"])[m])),
    }


METRIC = {"digits": "mse", "tokens": "ce"}


def _subsets(task_name, task):
    """(eval split, subset name, mask) triples."""
    if task_name == "digits":
        n = len(task["target"])
        return [("clean", "clean contexts", np.ones(n, bool)),
                ("noisy", "noisy contexts (OOD)", np.ones(n, bool))]  # fmt: skip
    n = len(task["target"])
    return [("all", "all positions", np.ones(n, bool)),
            ("all", "result digits (harder)", task["hard"])]  # fmt: skip


def evaluate(config, task_name, task, cfg, params, ff_params, seed, raw, images) -> None:
    """One seed's held-out metrics at one size (``task["d_model"]``): vs steps, vs G, the
    baseline, energy-error correlation."""
    key = jax.random.fold_in(jax.random.key(seed), 11)
    target = jnp.asarray(task["target"])
    kmax, gmax = max(config.steps), max(config.candidates)
    done = {}
    for split, name, mask in _subsets(task_name, task):
        if split not in done:
            ctx = jax.tree_util.tree_map(jnp.asarray, task["eval"][split])
            traj = task["trajectory"](key, params, ctx)
            ys, final_e = task["verify"](jax.random.fold_in(key, 1), params, ctx)
            ff_pred = task["ff_predict"](ff_params, ctx)
            done[split] = (ctx, traj, ys, final_e, ff_pred)
        ctx, traj, ys, final_e, ff_pred = done[split]
        path = (task_name, name, task["d_model"])
        for k in config.steps:
            per = _per_example(task_name, traj[k], target)
            stats.append_per_seed(raw, path + ("steps", k), _aggregate(task_name, per, mask))
        fe = np.asarray(final_e)  # [B, G]
        for g in config.candidates:
            idx = np.argmin(fe[:, :g], axis=1)
            chosen = jnp.asarray(np.asarray(ys)[np.arange(len(idx)), idx])
            per = _per_example(task_name, chosen, target)
            stats.append_per_seed(raw, path + ("candidates", g), _aggregate(task_name, per, mask))
        per_ff = _per_example(task_name, ff_pred, target)
        stats.append_per_seed(raw, path + ("ff",), _aggregate(task_name, per_ff, mask))
        # Is low energy a good verifier? Energy vs true error of every candidate.
        err = np.stack(
            [
                np.asarray(
                    _per_example(task_name, ys[:, j], target)[
                        "sq" if task_name == "digits" else "ce"
                    ]
                )
                for j in range(gmax)
            ],
            1,
        )[mask]
        pooled = sps.spearmanr(fe[mask].ravel(), err.ravel()).statistic
        within = [sps.spearmanr(a, b).statistic for a, b in zip(fe[mask], err, strict=True)
                  if np.ptp(a) > 0 and np.ptp(b) > 0]  # fmt: skip
        stats.append_per_seed(raw, path + ("energy_error",), {
            "spearman_pooled": pooled,
            "spearman_within_context": float(np.mean(within)) if within else np.nan,
        })  # fmt: skip
        largest = task["d_model"] == max(config[task_name].d_models)
        if task_name == "digits" and split == "clean" and seed == config.seed and largest:
            top = np.asarray(task["eval"]["clean"][:8])
            rows = [("held-out truth", ebt.join_halves(top, task["target"][:8]))]
            rows += [(f"EBT d={task['d_model']}, {k} step(s)",
                      ebt.join_halves(top, np.asarray(traj[k][:8])))
                     for k in IMAGE_STEPS if k <= kmax]  # fmt: skip
            rows.append(("feed-forward", ebt.join_halves(top, np.asarray(ff_pred[:8]))))
            images.extend((t, data.digits_to_unit(np.clip(im, -1, 1))) for t, im in rows)


def verdicts(results: dict, config=None) -> dict:
    """The verdicts of ``ebt_report.verdicts`` (the claims at each size, Holm per family,
    and the size trend), recomputed from the per-seed values in ``results``; ``config``
    is unused (``results["config"]`` is read), kept for the old call signature."""
    del config
    return ebt_report.verdicts(results)


def _plots(workdir, results, config) -> None:
    for task_name in TASKS:
        if task_name not in results:
            continue
        metric = METRIC[task_name]
        label = "MSE (held-out bottom halves)" if task_name == "digits" else "cross-entropy (nats)"
        sizes = sorted(config[task_name].d_models)
        gs = max(config.candidates)
        for branch, xs, xlabel in (("steps", config.steps, "inference steps"),
                                   ("candidates", config.candidates, "candidates G")):  # fmt: skip
            panels = []
            for name, per_size in results[task_name].items():
                if name == "scalars":
                    continue
                series = {}
                for d in sizes:
                    node = per_size[d]
                    series[f"EBT d={d}"] = (list(xs), [node[branch][k][metric] for k in xs])
                    series[f"feed-forward d={d}"] = (list(xs), [node["ff"][metric]] * len(xs))
                panels.append((f"{task_name} / {name}", series))
            plots.errorbar_plot(os.path.join(workdir, f"{task_name}_{branch}.png"), panels,
                                xlabel=xlabel, ylabel=label)  # fmt: skip
        panels = []
        for name, per_size in results[task_name].items():
            if name == "scalars":
                continue
            series = {
                "EBT, 1 step": (sizes, [per_size[d]["steps"][1][metric] for d in sizes]),
                f"EBT, G={gs}": (sizes, [per_size[d]["candidates"][gs][metric] for d in sizes]),
                "feed-forward": (sizes, [per_size[d]["ff"][metric] for d in sizes]),
            }
            panels.append((f"{task_name} / {name}", series))
        plots.errorbar_plot(os.path.join(workdir, f"{task_name}_sizes.png"), panels,
                            xlabel="model width d_model", ylabel=label)  # fmt: skip


def run(config, workdir: str) -> dict:
    """Runs the reproduction; writes results.json, plots and ebt.log into ``workdir``."""
    validate(config)
    handler = common.prepare_workdir(workdir, "ebt.log")
    try:
        seeds = stats.seeds(config.seed, config.num_seeds)
        raw: dict = {}
        images: list = []
        build = {"digits": digits_task, "tokens": tokens_task}
        tasks = [(t, prepare(config, t, build[t](config, d))) for t in TASKS
                 if config[t].enabled for d in sorted(config[t].d_models)]  # fmt: skip
        for seed in tqdm(seeds, desc="ebt seeds", leave=False):
            for name, task in tasks:
                logging.info("ebt: seed %d, %s, d_model %d", seed, name, task["d_model"])
                cfg, params, ff_params, loss, ff_loss = train_models(config, workdir, name, task,
                                                                     seed)  # fmt: skip
                stats.append_per_seed(raw, (name, "scalars", task["d_model"]), {
                    "train_loss_final": loss, "ff_train_loss_final": ff_loss,
                    "alpha": float(ebt.alpha_of(params))})  # fmt: skip
                evaluate(config, name, task, cfg, params, ff_params, seed, raw, images)
        results = {"config": config.to_dict(), "seeds": seeds, **stats.summarize_tree(raw)}
        results["verdicts"] = verdicts(results)
        for setting, checks in results["verdicts"].items():
            for claim, v in checks.items():
                logging.info("ebt: %s: %s: %s (improvement %s)", setting, claim, v["verdict"],
                             stats.format_interval(v["improvement"]))  # fmt: skip
        _plots(workdir, results, config)
        if images:
            plots.image_grid(os.path.join(workdir, "digits_completions.png"), images)
        common.write_results(workdir, results)
        return results
    finally:
        common.close_log(handler)


def report(results: dict) -> str:
    from inferax.experiments import ebt_report

    return ebt_report.report(results)


def summary(results: dict) -> dict:
    from inferax.experiments import ebt_report

    return ebt_report.summary(results)


if __name__ == "__main__":
    common.main(run, "ebt")
