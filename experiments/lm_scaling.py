"""Repeated sampling on the arithmetic task: coverage, best-of-N and voting against N.

Reproduces Large Language Monkeys (Brown et al. 2024): coverage (pass@k) keeps
rising with k along exp(a k^b) while majority voting plateaus; beside them
best-of-N with the learned PRM, the oracle PRM and an outcome RM, and the
PRM-weighted vote (search-and-learn). See ``configs/lm_scaling.py``.

``train_models(config, workdir)`` trains (or restores) the LM and the reward
model; the notebook and the follow-up search experiments reuse it.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from inferax.experiments import common, lm_search, schema, stats
from inferax.models import arithmetic as ar
from inferax.models import lm_train, prm
from inferax.models import transformer as tr
from inferax.models.train import make_optimizer
from inferax.search.lm import decoding as dec
from inferax.search.lm import voting as ls

METHODS = ("bon_prm", "bon_oracle", "bon_orm", "majority", "weighted_prm", "first_finish")
CLAIM = (
    "coverage (pass@k) keeps rising with the number of samples k along exp(a k^b), "
    "while majority voting plateaus (Large Language Monkeys)"
)


def _fail(field: str, expected: str, got: Any):
    raise ValueError(f"{field}: expected {expected}, got {got!r}")


def validate(config) -> None:
    """Checks the config before anything is trained (ValueError naming the field): the
    schema (``experiments.schema``: every field's type and range), then what depends
    on several fields."""
    schema.check(config, "lm_scaling")
    stats.seeds(config.seed, config.num_seeds)
    diffs = list(config.difficulty)
    if not diffs or any(not ar.MIN_OPS <= d <= ar.MAX_OPS for d in diffs):
        _fail("difficulty", f"numbers of operations in [{ar.MIN_OPS}, {ar.MAX_OPS}]", diffs)
    budgets = list(config.budgets)
    if not budgets or any(not 1 <= b <= config.num_samples for b in budgets):
        _fail("budgets", f"ints in [1, num_samples = {config.num_samples}]", budgets)
    if config.aggregation not in ls.AGGREGATIONS:
        _fail("aggregation", f"one of {ls.AGGREGATIONS}", config.aggregation)
    if not config.temperature > 0:
        _fail("temperature", "a positive float", config.temperature)
    if list(config.search.methods):
        lm_search.validate(config)
        if not set(config.search.budgets) <= set(budgets):
            _fail("search.budgets", f"a subset of budgets {budgets}", list(config.search.budgets))
    lo, hi = config.lm.train_difficulty
    if not ar.MIN_OPS <= lo <= hi <= ar.MAX_OPS or max(diffs) > hi:
        _fail("lm.train_difficulty", f"(lo, hi) within [2, 7] covering {diffs}", (lo, hi))


def max_len(config) -> int:
    return ar.sequence_length(config.lm.train_difficulty[1])


def train_models(config, workdir: str) -> dict:
    """Trains (or restores from the cache) the LM and the reward model.

    Returns:
        ``{"lm": (model, params), "rm": (model, params), "lm_loss", "rm_loss"}``.
    """
    c = config.lm
    length = max_len(config)
    model = tr.Transformer(
        ar.VOCAB_SIZE, num_layers=c.num_layers, d_model=c.d_model, num_heads=c.num_heads,
        max_len=length,
    )  # fmt: skip
    key = jax.random.key(config.model_seed)
    k_init, k_lm, k_rm_init, k_rm, k_sample = jax.random.split(key, 5)
    rng = np.random.default_rng(config.model_seed)
    lo, hi = c.train_difficulty
    probs = [p for d in range(lo, hi + 1) for p in ar.split("train", d, c.num_train)]
    tokens, mask = ar.training_sequences(probs, rng, c.p_wrong, length)
    params0 = jax.jit(lambda k: tr.init_params(model, k))(k_init)
    spec = {"model": repr(model), "lm": c.to_dict(), "loss": "lm_loss", "code": "lm-1"}
    params, lm_losses = lm_train.fit_or_restore(
        k_lm, workdir=common.cache_dir(config, workdir, "lm"), spec=spec,
        loss_fn=lm_train.lm_loss(model.apply), params=params0,
        data={"tokens": tokens, "loss_mask": mask},
        optimizer=make_optimizer(c.lr, c.train_steps), num_steps=c.train_steps,
        batch_size=c.batch_size, checkpoint_every=max(c.train_steps // 3, 1),
    )  # fmt: skip
    lm = tr.lm_functions(model, params)

    # Reward-model data, labelled by the exact checker (``prm.training_labels``): the LM's
    # own samples on training problems, plus as many NumPy traces with the LM's
    # error modes (``prm.synthetic_traces``), on problems outside every held-out pool.
    r = config.prm
    rm = prm.reward_model(r.num_layers, r.d_model, r.num_heads, length)
    parts, sampled = [], []
    for d in range(lo, hi + 1):
        ps = prm_problems(config, d, r.num_problems, seed=1)
        s = sample_traces(jax.random.fold_in(k_sample, d), lm, ps, r.samples_per_problem, 1.0)
        parts.append(_rm_rows(ps, np.asarray(s.tokens), np.asarray(s.num_tokens),
                              r.samples_per_problem, length))  # fmt: skip
        sampled.append(parts[-1]["labels"][:, :, prm.OUTCOME].max(1))
        syn = prm_problems(config, d, SYNTHETIC_PER_SAMPLE * r.num_problems, seed=2)
        width = ar.solution_length(d) + 6
        toks, num = prm.synthetic_traces(syn, rng, r.samples_per_problem, width)
        parts.append(_rm_rows(syn, toks, num, r.samples_per_problem, length))
    data = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    rm0 = jax.jit(lambda k: tr.init_params(rm, k))(k_rm_init)
    rspec = {"model": repr(rm), "prm": r.to_dict(), "lm": spec, "code": "rm-2"}
    rm_params, rm_losses = lm_train.fit_or_restore(
        k_rm, workdir=common.cache_dir(config, workdir, "reward_model"), spec=rspec,
        loss_fn=lm_train.reward_loss(rm.apply), params=rm0, data=data,
        optimizer=make_optimizer(r.lr, r.train_steps), num_steps=r.train_steps,
        batch_size=r.batch_size, checkpoint_every=max(r.train_steps // 3, 1),
    )  # fmt: skip
    frac = float(np.concatenate(sampled).mean())  # LM-sampled traces with a correct answer
    return {"lm": (model, params), "lm_fns": lm, "rm": (rm, rm_params), "lm_loss": lm_losses,
            "rm_loss": rm_losses, "prm_data_correct": frac}  # fmt: skip


SYNTHETIC_PER_SAMPLE = 1  # NumPy traces per LM-sampled trace in the reward-model data


def prm_problems(config, difficulty: int, count: int, seed: int) -> list:
    """Training problems for the reward model: the train split of ``seed``, less any
    problem of the held-out pool that ``held_out`` draws from (so that the PRM's
    held-out AUC is measured on problems it never saw)."""
    pool = set(ar.split("test", difficulty, 4 * config.num_problems))
    return [p for p in ar.split("train", difficulty, count, seed=seed) if p not in pool]


def _rm_rows(problems, tokens, num_tokens, n: int, length: int) -> dict:
    """Reward-model training rows (prompt + trace, padded to ``length``) with their
    dense checker labels, for ``n`` traces per problem (rows ``b * n + j``)."""
    lab, lmask = prm.training_labels(tokens, num_tokens, *_truth(problems, tokens.shape[1], n))
    pr = np.repeat(ar.prompts(problems), n, 0)
    seq, m = prm.full_sequence(jnp.asarray(pr), jnp.asarray(pr != ar.PAD), jnp.asarray(tokens),
                               jnp.asarray(num_tokens))  # fmt: skip
    seq, m = np.asarray(seq)[:, :length], np.asarray(m)[:, :length]
    pad = length - seq.shape[1]
    p, t = pr.shape[1], seq.shape[1]
    full_lab = np.zeros((len(pr), length, prm.NUM_CHANNELS), np.float32)
    full_msk = np.zeros_like(full_lab)
    full_lab[:, p:t] = lab[:, : t - p]
    full_msk[:, p:t] = lmask[:, : t - p]
    return {"tokens": np.pad(seq, ((0, 0), (0, pad))), "mask": np.pad(m, ((0, 0), (0, pad))),
            "labels": full_lab, "label_mask": full_msk}  # fmt: skip


def _truth(problems, width: int, n: int):
    sol = ar.solutions(problems, max(width, ar.solution_length(problems[0].num_ops)))
    ans = np.asarray([p.answer for p in problems], np.int32)
    return np.repeat(sol, n, 0), np.repeat(ans, n)


def sample_traces(key, lm, problems, n: int, temperature: float) -> dec.DecodeState:
    """``n`` completions of every problem (rows ``b * n + j``), one compiled loop."""
    pr = ar.prompts(problems)
    room = (lm.max_len or 10**9) - pr.shape[1]
    new = min(ar.solution_length(problems[0].num_ops) + 6, room)
    return _sample(key, lm, jnp.asarray(pr), n, new, float(temperature))


def _sample(key, lm, pr, n, new, temperature):
    fn = common.jit_once("sample", lm, (n, new, temperature), lambda: (
        lambda k, p: dec.sample(k, lm, p, p != ar.PAD, num_samples=n, max_new_tokens=new,
                                eos_id=ar.EOS, step_id=ar.STEP_ID, temperature=temperature)[0]
    ))  # fmt: skip
    return fn(key, pr)


def held_out(config, seed: int, difficulty: int) -> list:
    """The held-out problems of one seed and difficulty (drawn from the test split)."""
    rng = np.random.default_rng([seed, difficulty])
    pool = ar.split("test", difficulty, 4 * config.num_problems)
    return [pool[i] for i in rng.choice(len(pool), config.num_problems, replace=False)]


def evaluate(config, models: dict, seed: int, difficulty: int) -> dict:
    """All methods at every budget on one seed's held-out problems of one difficulty."""
    n = config.num_samples
    lm = models["lm_fns"]
    problems = held_out(config, seed, difficulty)
    key = jax.random.fold_in(jax.random.key(seed), difficulty)
    s = sample_traces(key, lm, problems, n, config.temperature)
    b = len(problems)
    sol, ans = _truth(problems, s.tokens.shape[1], n)
    pr = np.repeat(ar.prompts(problems), n, 0)
    rm, rp = models["rm"]
    score = common.jit_once("score", models["rm"], (), lambda: (
        lambda *a: jnp.stack([prm.learned_scores(rm, rp, *a, c) for c in (0, 1)])))  # fmt: skip
    learned, outcome = score(jnp.asarray(pr), jnp.asarray(pr != ar.PAD), s.tokens, s.num_tokens)
    oracle = prm.oracle_scores(s.tokens, s.num_tokens, jnp.asarray(sol))
    scored = prm.scored_positions(s.tokens, s.num_tokens)
    answers = np.asarray(ar.extract_answer_jax(s.tokens)).reshape(b, n)
    truth = ans.reshape(b, n)[:, 0]
    correct = answers == truth[:, None]
    agg = config.aggregation
    sc = {
        "bon_prm": ls.aggregate(learned, scored, agg),
        "bon_oracle": ls.aggregate(oracle, scored, agg),
        "bon_orm": ls.aggregate(outcome, scored, "last"),
    }
    sc = {k: np.asarray(v).reshape(b, n) for k, v in sc.items()}
    toks = np.asarray(s.num_tokens).reshape(b, n)
    fin = np.asarray(s.finished).reshape(b, n)
    out: dict = {"accuracy": {}, "tokens": {}}
    # Per-problem outcomes: the paired units of the verdicts (lm_scaling_report).
    per: dict = {"correct": {}}
    for budget in config.budgets:
        a = answers[:, :budget]
        picks = {k: ls.best_of_n(a, v[:, :budget]) for k, v in sc.items()}
        picks["majority"] = ls.majority_vote(a, 10)
        picks["weighted_prm"] = ls.weighted_vote(a, sc["bon_prm"][:, :budget], 10)
        ff = ls.first_finish(a, toks[:, :budget], fin[:, :budget])
        picks["first_finish"] = ff.answer
        for m, p in picks.items():
            hit = np.asarray(p) == truth
            out["accuracy"].setdefault(m, {})[budget] = float(np.mean(hit))
            per["correct"].setdefault(m, {})[budget] = hit.astype(int).tolist()
        out["tokens"][budget] = float(toks[:, :budget].sum(1).mean())
        out["tokens_first_finish_" + str(budget)] = float(np.mean(ff.tokens_spent))
    ks = [k for k in 2 ** np.arange(12) if k <= n]
    cov = ls.coverage(correct.sum(1), n, ks)
    out["coverage"] = {int(k): float(v) for k, v in zip(ks, cov, strict=True)}
    out["single_sample"] = float(correct.mean())
    num_correct = correct.sum(1)
    per["coverage"] = {int(k): ls.pass_at_k(n, num_correct, int(k)).astype(float).tolist()
                       for k in ks}  # fmt: skip
    per["single"] = correct.mean(1).astype(float).tolist()
    per["halves"] = disjoint_halves(config, answers, correct, truth)
    lab = np.asarray(oracle)[np.asarray(scored)]
    out["prm_auc"] = prm.auc(np.asarray(learned)[np.asarray(scored)], lab > 0.5)
    out["oracle_auc"] = prm.auc(lab, lab > 0.5)
    per["auc"] = per_problem_auc(np.asarray(learned), np.asarray(oracle), np.asarray(scored), b)
    out["per_problem"] = per
    try:
        out["fit"] = ls.fit_coverage(ks, cov)
    except ValueError as e:
        logging.warning("lm_scaling: no coverage fit at difficulty %d: %s", difficulty, e)
        out["fit"] = None
    return out


def disjoint_halves(config, answers, correct, truth) -> dict | None:
    """Coverage's and majority vote's gains on DISJOINT sample sets, per problem.

    Coverage's gain pass@N - pass@(N/4) is estimated (unbiased pass@k) from the
    first half of each problem's samples, majority vote's gain from the second
    half: the two gains share no sample, so the comparison of them is not tied
    by construction. N is the largest budget that fits in a half.

    Returns:
        ``{"from", "to", "coverage_gain": [per problem], "majority_gain": [...]}``,
        or None with fewer than 2 samples per problem.
    """
    h = answers.shape[1] // 2
    fits = [b for b in config.budgets if b <= h]
    if h < 1 or not fits:
        return None
    hi = max(fits)
    lo = max(1, hi // 4)
    c1 = correct[:, :h].sum(1)
    cov = ls.pass_at_k(h, c1, hi) - ls.pass_at_k(h, c1, lo)
    second = answers[:, h:]

    def maj(n):
        return (np.asarray(ls.majority_vote(second[:, :n], 10)) == truth).astype(int)

    return {"from": int(lo), "to": int(hi), "coverage_gain": cov.astype(float).tolist(),
            "majority_gain": (maj(hi) - maj(lo)).tolist()}  # fmt: skip


def per_problem_auc(learned, oracle, scored, b: int) -> dict:
    """Within-problem AUC of the learned and the oracle PRM (all scored steps of one
    problem's samples), for the problems whose steps have both labels.

    Returns:
        ``{"learned": [...], "oracle": [...]}`` over the same problems (paired).
    """
    out = {"learned": [], "oracle": []}
    rows = learned.shape[0] // b
    for i in range(b):
        sl = slice(i * rows, (i + 1) * rows)
        m = scored[sl]
        lab = oracle[sl][m] > 0.5
        if lab.all() or not lab.any():
            continue
        out["learned"].append(float(prm.auc(learned[sl][m], lab)))
        out["oracle"].append(float(prm.auc(oracle[sl][m], lab)))
    return out


def run(config, workdir: str) -> dict:
    """Trains/restores the models, evaluates every seed and difficulty, writes results + plots."""
    validate(config)
    os.makedirs(workdir, exist_ok=True)
    handler = common.prepare_workdir(workdir, "lm_scaling.log")
    try:
        models = train_models(config, workdir)
        per_seed, search = {}, {}
        searching = bool(list(config.search.methods))
        for seed in stats.seeds(config.seed, config.num_seeds):
            for d in config.difficulty:
                logging.info("lm_scaling: seed %d, %d operations", seed, d)
                per_seed.setdefault(d, []).append(evaluate(config, models, seed, d))
                if searching:
                    key = jax.random.fold_in(jax.random.key(seed), 1000 + d)
                    problems = held_out(config, seed, d)
                    search.setdefault(d, []).append(
                        lm_search.evaluate(config, models, problems, key)
                    )
        from inferax.experiments import lm_scaling_report as rep
        from inferax.experiments import lm_search_report as srep

        results = rep.collect(config, per_seed, models)
        results["plots"] = rep.plots(results, workdir)
        if searching:
            results["search"] = srep.collect(config, search, per_seed)
            results["plots"] += srep.plots(results["search"], workdir)
        common.write_results(workdir, results)
        logging.info("lm_scaling: %s", rep.summary(results))
        return results
    finally:
        common.close_log(handler)


def report(results: dict) -> str:
    from inferax.experiments import lm_scaling_report as rep

    return rep.report(results)


def summary(results: dict) -> dict:
    from inferax.experiments import lm_scaling_report as rep

    return rep.summary(results)


if __name__ == "__main__":
    common.main(run, "lm_scaling")
