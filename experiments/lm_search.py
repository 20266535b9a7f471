"""Step-level search on the arithmetic task: beam search, DVTS, particle filtering,
particle Gibbs and MCTS against best-of-N, with the learned and the oracle PRM.

Part of the ``lm_scaling`` reproduction (``config.search``): for every held-out
problem set (one seed, one difficulty), every search method runs at every
budget N with each PRM, batched over the problems and compiled once per
(method, PRM, N) for the whole run (prompts are left-padded to one length, so
difficulties share the compiled search). Puri et al. (2025) claim that particle
filtering scales better than beam search and best-of-N under an imperfect PRM
(beam search over-exploits it) and that the gap closes with an exact PRM;
Snell et al. (2024) ask which method is compute-optimal at each budget and
difficulty. ``lm_search_report`` turns the numbers into verdicts and tables.

Budgets: N is the number of sequences as each paper counts it (particles,
beams, DVTS subtrees x width, MCTS simulations per committed step); the tokens
and PRM calls each method spent are reported beside its accuracy.
"""

from __future__ import annotations

import zlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from inferax.experiments import common
from inferax.models import arithmetic as ar
from inferax.models import prm
from inferax.search import core
from inferax.search.lm import beam as lm_beam
from inferax.search.lm import gibbs as lm_gibbs
from inferax.search.lm import mcts as lm_mcts
from inferax.search.lm import particle as lm_particle
from inferax.search.lm import steps
from inferax.search.lm import voting as ls

SEARCHES = ("beam", "dvts", "particle_filter", "particle_gibbs", "mcts")
PRMS = ("learned", "oracle")
NAMES = {
    "beam": "beam search",
    "dvts": "DVTS",
    "particle_filter": "particle filtering",
    "particle_filter_vote": "particle filtering, weighted vote",
    "particle_gibbs": "particle Gibbs",
    "mcts": "MCTS",
}


def _fail(field: str, expected: str, got: Any):
    raise ValueError(f"{field}: expected {expected}, got {got!r}")


def validate(config) -> None:
    """Checks ``config.search`` (ValueError naming the field)."""
    s = config.search
    bad = [m for m in s.methods if m not in SEARCHES]
    if bad:
        _fail("search.methods", f"names from {SEARCHES}", list(s.methods))
    bad = [p for p in s.prms if p not in PRMS]
    if bad or not list(s.prms):
        _fail("search.prms", f"a non-empty list from {PRMS}", list(s.prms))
    budgets = list(s.budgets)
    if not budgets or any(not isinstance(b, int) or b < 1 for b in budgets):
        _fail("search.budgets", "a non-empty list of ints >= 1", budgets)
    m = s.beam_width
    if "beam" in s.methods or "dvts" in s.methods:
        if not isinstance(m, int) or m < 1:
            _fail("search.beam_width", "an int >= 1", m)
    if not s.tau > 0:
        _fail("search.tau", "a positive float", s.tau)
    if not isinstance(s.gibbs_iterations, int) or s.gibbs_iterations < 1:
        _fail("search.gibbs_iterations", "an int >= 1", s.gibbs_iterations)
    if not isinstance(s.mcts_candidates, int) or s.mcts_candidates < 2:
        _fail("search.mcts_candidates", "an int >= 2", s.mcts_candidates)


def shapes(config) -> tuple[int, int]:
    """``(prompt length, max new tokens)`` shared by every difficulty of the run."""
    hi, top = max(config.difficulty), config.lm.train_difficulty[1]
    room = ar.sequence_length(top)  # the LM's max_len (lm_scaling.max_len)
    p = ar.prompt_length(hi)
    return p, min(ar.solution_length(hi) + 4, room - p)


def step_config(config) -> steps.StepConfig:
    hi = max(config.difficulty)
    return steps.StepConfig(
        eos_id=ar.EOS, step_id=ar.STEP_ID, max_new_tokens=shapes(config)[1],
        max_steps=hi + 2, temperature=float(config.temperature),
    )  # fmt: skip


def padded_prompts(problems, length: int) -> np.ndarray:
    """Left-padded prompts ``[B, length]`` (pads do not advance the LM's positions)."""
    pr = ar.prompts(problems)
    return np.pad(pr, ((0, 0), (length - pr.shape[1], 0)), constant_values=ar.PAD)


def _budget_args(name: str, n: int, s, max_steps: int) -> tuple[core.Budget, dict]:
    """The method's budget and options at budget N (sequences per problem, as each
    paper counts). Particle Gibbs runs N particles for each of its sweeps, so its
    budget is N x sweeps sequences (its token and PRM counts are reported beside);
    MCTS runs N simulations per committed step, so its budget is N x max_steps
    simulations."""
    if name in ("beam", "dvts"):
        return core.Budget(sequences=n), {"beam_width": min(s.beam_width, n)}
    if name == "particle_filter":
        return core.Budget(sequences=n), {"tau": float(s.tau)}
    if name == "particle_gibbs":
        it = s.gibbs_iterations
        return core.Budget(sequences=n * it), {"num_iterations": it, "tau": float(s.tau)}
    # An arithmetic step starts by copying the previous result: candidates must be
    # distinct as whole steps, not at their first token; every candidate is tried once.
    opts = {"num_candidates": s.mcts_candidates, "num_simulations": n, "candidates": "sampled",
            "unvisited_value": 1.0}  # fmt: skip
    return core.Budget(simulations=n * max_steps), opts


def _search_fn(name: str):
    return {
        "beam": lm_beam.beam_search,
        "dvts": lm_beam.dvts,
        "particle_filter": lm_particle.particle_filter,
        "particle_gibbs": lm_gibbs.particle_gibbs,
        "mcts": lm_mcts.mcts,
    }[name]


def name_index(*parts) -> int:
    """A stable 31-bit index of ``parts`` for ``fold_in`` (``zlib.crc32`` of their text).

    Python's ``hash()`` of a string is salted per process (``PYTHONHASHSEED``), so a
    key folded with it changes from run to run; crc32 gives the same bits everywhere.
    """
    return zlib.crc32("/".join(map(str, parts)).encode()) & 0x7FFFFFFF


def make_prm(kind: str, models: dict, prompts, mask, solutions):
    if kind == "oracle":
        return prm.oracle_prm_fn(solutions)
    rm, rp = models["rm"]
    return prm.learned_prm_fn(rm, rp, prompts, mask)


def compiled(name: str, kind: str, n: int, config, models: dict):
    """One jitted search per (method, PRM, N, models), reused across seeds and difficulties."""
    lm, cfg = models["lm_fns"], step_config(config)
    budget, kw = _budget_args(name, n, config.search, cfg.max_steps)
    fn = _search_fn(name)

    def run(k, prompts, mask, solutions):
        prm_fn = make_prm(kind, models, prompts, mask, solutions)
        return fn(k, lm, prm_fn, budget, prompts=prompts, prompt_mask=mask, config=cfg, **kw)

    static = (name, kind, budget, id(models["rm"]), cfg, tuple(sorted(kw.items())))
    return common.jit_once("search", lm, static, lambda: run)


def evaluate(config, models: dict, problems, key) -> dict:
    """Every search method at every budget with every PRM on one set of problems.

    Returns:
        ``{"accuracy": {method: {prm: {N: acc}}}, "correct": {method: {prm: {N: [0/1
            per problem]}}}, "tokens": {...}, "prm_calls": {...}}`` (tokens and PRM calls
            per problem; the per-problem outcomes are the verdicts' paired units);
            ``particle_filter_vote`` is the particle filter's PRM-weighted vote over its
            final particles.
    """
    s = config.search
    p_len, new = shapes(config)
    prompts = padded_prompts(problems, p_len)
    mask = prompts != ar.PAD
    sol = ar.solutions(problems, new)
    truth = np.asarray([p.answer for p in problems])
    out: dict = {"accuracy": {}, "correct": {}, "tokens": {}, "prm_calls": {}}
    args = (jnp.asarray(prompts), jnp.asarray(mask), jnp.asarray(sol))
    for name in s.methods:
        for kind in s.prms:
            for n in s.budgets:
                k = jax.random.fold_in(key, name_index(name, kind, n))
                res, info = compiled(name, kind, n, config, models)(k, *args)
                budget, _ = _budget_args(name, n, s, step_config(config).max_steps)
                spent = {u: int(np.max(np.asarray(v))) for u, v in info.spent().items()}
                if budget.exceeded(spent):  # the contract: never over budget, per problem
                    raise RuntimeError(f"{name} spent {spent} over {budget} at N = {n}")
                flat = res.tokens.reshape(-1, res.tokens.shape[-1])
                answers = np.asarray(ar.extract_answer_jax(flat)).reshape(res.tokens.shape[:2])
                chosen = np.take_along_axis(answers, np.asarray(res.choice)[:, None], 1)[:, 0]
                hits = {name: chosen == truth}
                if name == "particle_filter":
                    vote = ls.weighted_vote(answers, np.asarray(res.weights), 10)
                    hits["particle_filter_vote"] = np.asarray(vote) == truth
                for m, h in hits.items():
                    out["accuracy"].setdefault(m, {}).setdefault(kind, {})[n] = float(np.mean(h))
                    out["correct"].setdefault(m, {}).setdefault(kind, {})[n] = (
                        h.astype(int).tolist())  # fmt: skip
                    out["tokens"].setdefault(m, {}).setdefault(kind, {})[n] = float(
                        info.generated_tokens) / len(problems)  # fmt: skip
                    out["prm_calls"].setdefault(m, {}).setdefault(kind, {})[n] = float(
                        info.prm_calls) / len(problems)  # fmt: skip
    return out
