r"""Config of the language-model sampling reproduction (Large Language Monkeys, Brown et al. 2024;
best-of-N / voting as in search-and-learn).

Claims checked: (1) coverage (pass@k) keeps rising with the number of samples
k, along the law coverage(k) = exp(a k^b); (2) majority voting plateaus:
its gain from N/4 to N samples is smaller than coverage's; best-of-N with a
reward model sits between them.

Run (full):

    python -m inferax.experiments.lm_scaling --config=lm_scaling --workdir=runs/lm_scaling

Quick (used by `make demo` and the tests, which shrink it further):

    python -m inferax.experiments.lm_scaling --config=lm_scaling:quick --workdir=runs/lm_quick

Any field can be overridden, e.g. ``--config.difficulty=3,5 --config.budgets=1,4,16``.

Measured (quick, 3 seeds, 16 problems per difficulty, 2026-12-01 on 2 CPU cores under
load 15 from other jobs: training about 6 min (LM ~3.5, reward model ~2.5), then
evaluation 3.5 min; a rerun with the cached models: 3.5 min).
Single-sample accuracy 0.49 (2 ops) / 0.39 (4 ops); coverage at k = 32 is 1.00 at both,
following exp(a k^b) within 0.03 / 0.045 (a = -0.74 / -1.03, b = -1.2 / -1.0); majority
vote at N = 32 reaches 0.83 / 0.67, below coverage by 0.17 [-0.07, 0.40] (tie) / 0.33
[0.01, 0.66] (holds): the plateau shows at 4 operations. The gain from N = 8 to 32 is
a tie (coverage is already ~0.96 at k = 8). Best-of-N with the oracle PRM reaches 0.98 /
0.96; with the learned PRM (AUC 0.72 / 0.69, oracle 1.0) or the outcome RM it *falls*
with N (0.35 / 0.19 at N = 32): the small reward model is informative on average but its
highest scores go to wrong traces, so picking the argmax of more samples finds more of
them (reward over-optimisation). ``results.json`` holds every number per seed.

Step-level search (quick, 3 seeds, fresh-clone demo of 2026-12-02 on a quiet 2-core
machine, lm_scaling 287 s in all with training; N = 1, 4, 16): with the oracle PRM
particle filtering / Gibbs, beam search and DVTS reach 0.96-1.00 at N = 16 (best-of-N
0.90 / 0.96) and particle filter minus beam is a tie (-0.02 [-0.11, 0.07] at 2 ops,
0.04 [-0.05, 0.13] at 4 ops): the gap closes. With the learned PRM nothing scales:
particle filter minus beam at N = 16 is -0.08 [-0.17, 0.01] / 0.04 [-0.28, 0.36], minus
best-of-N 0.00 / 0.04 [-0.20, 0.28] (ties), and the filter falls below single-sample
accuracy at 4 ops (0.27 vs 0.39). Beam search over-exploits the learned PRM: oracle
minus learned at N = 16 is 0.52 [0.34, 0.70] / 0.73 [0.28, 1.18] (holds). Puri et al.'s
4-16x better scaling of the filter does not show with this reward model.

Fields:
    seed: first seed; seeds seed .. seed + num_seeds - 1 each draw the held-out
        problems and the sampling noise. The models are trained once, from
        ``model_seed`` (training them per seed would multiply the run time).
    num_seeds: seeds per number (mean and 95% t-interval).
    model_seed: key of the LM and PRM training runs.
    cache_dir: where trained models are cached ("" = <workdir>/models).
    difficulty: numbers of operations of the held-out problems (2..7).
    budgets: sample counts N for best-of-N and voting (each <= num_samples).
    num_samples: samples per problem (coverage is reported for k up to it).
    num_problems: held-out problems per difficulty per seed.
    temperature: sampling temperature.
    aggregation: PRM aggregation for best-of-N ("last", "min", "prod").
    lm.num_layers / d_model / num_heads: the transformer.
    lm.train_difficulty: the training problems' operation counts (min, max).
    lm.num_train: training problems per difficulty.
    lm.p_wrong: probability that a training step's result is corrupted.
    lm.train_steps / batch_size / lr: training.
    search.methods: step-level searches run beside best-of-N ("beam", "dvts",
        "particle_filter", "particle_gibbs", "mcts"; [] skips the search part).
    search.prms: the PRMs they search with ("learned", "oracle").
    search.budgets: N per method (beams, particles, MCTS simulations per step);
        a subset of ``budgets`` (best-of-N at the same N is the baseline).
    search.beam_width: M of beam search and DVTS (min(M, N) at small N).
    search.tau: the particle filter's temperature on logit(PRM score).
    search.gibbs_iterations: particle-Gibbs sweeps (each spends N sequences).
    search.mcts_candidates: candidate next steps per MCTS node (its actions).
    prm.num_layers / d_model / num_heads: the reward model.
    prm.num_problems: training problems per difficulty for the PRM data.
    prm.samples_per_problem: LM samples per problem labelled by the checker.
    prm.train_steps / batch_size / lr: training.
"""

import ml_collections


def get_config(variant: str = "full") -> ml_collections.ConfigDict:
    if variant not in ("full", "quick"):
        raise ValueError(f"variant: expected 'full' or 'quick', got {variant!r}")
    quick = variant == "quick"
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_seeds = 3
    c.model_seed = 0
    c.cache_dir = ""
    c.difficulty = [2, 4] if quick else [2, 3, 4, 5, 6]
    c.budgets = [1, 2, 4, 8, 16, 32] if quick else [1, 2, 4, 8, 16, 32, 64]
    c.num_samples = 32 if quick else 256
    c.num_problems = 16 if quick else 100
    c.temperature = 1.0
    c.aggregation = "min"

    c.lm = ml_collections.ConfigDict()
    c.lm.num_layers = 2 if quick else 3
    c.lm.d_model = 64 if quick else 128
    c.lm.num_heads = 4
    c.lm.train_difficulty = (2, 4) if quick else (2, 6)
    c.lm.num_train = 2000 if quick else 8000
    c.lm.p_wrong = 0.1
    c.lm.train_steps = 600 if quick else 4000
    c.lm.batch_size = 64
    c.lm.lr = 3e-3 if quick else 1e-3

    c.search = ml_collections.ConfigDict()
    c.search.methods = ["beam", "dvts", "particle_filter", "particle_gibbs", "mcts"]
    c.search.prms = ["learned", "oracle"]
    c.search.budgets = [1, 4, 16] if quick else [1, 2, 4, 8, 16, 32, 64]
    c.search.beam_width = 4
    c.search.tau = 1.0
    c.search.gibbs_iterations = 2
    c.search.mcts_candidates = 4

    c.prm = ml_collections.ConfigDict()
    c.prm.num_layers = 2
    c.prm.d_model = 48 if quick else 64
    c.prm.num_heads = 4
    c.prm.num_problems = 100 if quick else 400
    c.prm.samples_per_problem = 4
    c.prm.train_steps = 500 if quick else 2000
    c.prm.batch_size = 64
    c.prm.lr = 3e-3 if quick else 1e-3
    return c
