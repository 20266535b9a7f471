r"""Config of the language-model sampling reproduction (Large Language Monkeys, Brown et al. 2024;
best-of-N / voting as in search-and-learn).

Claims checked: (1) coverage (pass@k) keeps rising with the number of samples
k, along the law coverage(k) = exp(a k^b); (2) majority voting plateaus:
its gain from N/4 to N is smaller than coverage's; best-of-N with a
reward model sits between them; (3) step-level search (``lm_search``): particle
filtering scales better than beam search and best-of-N under the learned PRM,
and the gap closes with the oracle PRM (Puri et al. 2025).

Run (full):

    python -m inferax.experiments.lm_scaling --config=lm_scaling --workdir=runs/lm_scaling

Quick (used by `make demo` and the tests, which shrink it further):

    python -m inferax.experiments.lm_scaling --config=lm_scaling:quick --workdir=runs/lm_quick

Any field can be overridden, e.g. ``--config.difficulty=3,5 --config.budgets=1,4,16``.

Design of the verdicts (``lm_scaling_report``, ``lm_search_report``): the paired unit
is the held-out PROBLEM, not the seed. Every method (each selection rule over the
same N samples, each step-level search) runs on the same problems, and its 0/1
outcome per problem is stored in ``results.json`` (``per_problem`` / ``correct``).
A seed only redraws the problems and the sampling noise, so the verdicts pool the
problems of all seeds (``num_seeds x num_problems`` units per difficulty) and use
the exact paired sign-flip tests of ``experiments/stats.py`` over them, with Holm's
correction within each family of verdicts; the noise floor is one problem (1 / units).
Every verdict row reports its minimum detectable effect at this size; where the
paper's effect (the reports' ``EFFECT_SIZES``) is below it the verdict is "not
decidable at this size, MDE = ...". Intervals in the tables are over problems.

- Coverage rises: per problem, unbiased pass@kmax - pass@(kmax/4) from all samples.
- Majority plateaus: coverage's gain from N/4 to N is estimated from the FIRST half of
  each problem's samples and majority vote's from the SECOND half (disjoint sample sets,
  N the largest budget that fits in a half).
- Along the law: exp(a k^b) fitted to the pooled coverage at the smaller k; the
  per-problem residuals at the largest k are tested against ``LAW_TOLERANCE``.
- Reward model: the within-problem AUC of the learned PRM (a problem's correct steps
  ranked above its wrong ones) against 0.5 and against the oracle's, per problem; the
  AUC over all steps is reported beside it.
- Scaling rates (Puri et al.): per problem, the least-squares slope of the outcome
  against log2 N over ``search.budgets`` (its mean is the slope of the accuracy curve);
  the particle filter's rate is compared with beam search's and best-of-N's, paired
  per problem.

The quick variant trades seeds for problems (the decoding loop and every search are
compiled once and batched over a seed's problems) and runs particle filtering, beam
search and DVTS; the full variant adds particle Gibbs. MCTS (``search.methods``) is
available but off in both: none of the claims checked here concerns it.
The measured numbers are in the committed quick run,
``results/quick/lm_scaling/results.json`` (report: ``results/quick/REPORT.md``), not
here; the full config's committed run is ``results/full/lm_scaling/results.json`` (report:
``results/full/REPORT.md``; about 30 minutes on 2 CPU cores).

Fields:
    seed: first seed; seeds seed .. seed + num_seeds - 1 each draw the held-out
        problems and the sampling noise. The models are trained once, from
        ``model_seed`` (training them per seed would multiply the run time).
    num_seeds: seeds; each draws num_problems held-out problems and their noise (the
        verdicts pool the problems of all seeds).
    model_seed: key of the LM and PRM training runs.
    cache_dir: where trained models are cached ("" = <workdir>/models).
    difficulty: numbers of operations of the held-out problems (2..7).
    budgets: sample counts N for best-of-N and voting (each <= num_samples).
    num_samples: samples per problem (coverage is reported for k up to it).
    num_problems: held-out problems per difficulty per seed (batched in one call).
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
    prm.num_layers / d_model / num_heads: the reward model (3 layers: read a line,
        check it, carry "an earlier step was wrong" to the later delimiters).
    prm.num_problems: training problems per difficulty for the PRM data (none from
        the held-out pool); the LM's samples on them, plus
        ``lm_scaling.SYNTHETIC_PER_SAMPLE`` x as many NumPy traces with the LM's error
        modes (``prm.synthetic_traces``) on other training problems.
    prm.samples_per_problem: LM samples (and synthetic traces) per problem, labelled
        by the checker at every token, with the value of every written line
        (``prm.training_labels``). With the old data (100 problems x 4 samples, one
        label per step) the PRM memorised its 1200 traces and its held-out AUC was
        0.64-0.71; with 24k LM traces but one bit per step it was ~0.78-0.82.
    prm.train_steps / batch_size / lr: training. The quick PRM needs its 2400 steps:
        on the same data, 1200 steps end at loss ~0.20 and held-out AUC 0.87-0.90, 2400
        at loss ~0.06 and AUC 0.99 (pooled and within problems, 2 init seeds; it learns
        the mod-10 tables late, then the AUC jumps).
"""

import ml_collections


def get_config(variant: str = "full") -> ml_collections.ConfigDict:
    if variant not in ("full", "quick"):
        raise ValueError(f"variant: expected 'full' or 'quick', got {variant!r}")
    quick = variant == "quick"
    # The full variant keeps the quick models (the PRM already reaches a held-out AUC of
    # ~0.97) and buys statistical power instead: 3 x 128 held-out problems per difficulty,
    # 64 samples, five search budgets for the rates, particle Gibbs beside the filter;
    # about half an hour on 2 CPU cores.
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_seeds = 2 if quick else 3
    c.model_seed = 0
    c.cache_dir = ""
    c.difficulty = [2, 4]
    c.budgets = [1, 2, 4, 8, 16, 32] if quick else [1, 2, 4, 8, 16, 32, 64]
    c.num_samples = 32 if quick else 64
    c.num_problems = 64 if quick else 128
    c.temperature = 1.0
    c.aggregation = "min"

    c.lm = ml_collections.ConfigDict()
    c.lm.num_layers = 2
    c.lm.d_model = 64
    c.lm.num_heads = 4
    c.lm.train_difficulty = (2, 4)
    c.lm.num_train = 2000
    c.lm.p_wrong = 0.1
    c.lm.train_steps = 600
    c.lm.batch_size = 64
    c.lm.lr = 3e-3

    c.search = ml_collections.ConfigDict()
    c.search.methods = (
        ["beam", "dvts", "particle_filter"]
        if quick
        else ["beam", "dvts", "particle_filter", "particle_gibbs"]
    )
    c.search.prms = ["learned", "oracle"]
    c.search.budgets = [1, 4, 16] if quick else [1, 2, 4, 8, 16]
    c.search.beam_width = 4
    c.search.tau = 1.0
    c.search.gibbs_iterations = 2
    c.search.mcts_candidates = 4

    c.prm = ml_collections.ConfigDict()
    c.prm.num_layers = 3
    c.prm.d_model = 64
    c.prm.num_heads = 4
    c.prm.num_problems = 2000
    c.prm.samples_per_problem = 4
    c.prm.train_steps = 2400
    c.prm.batch_size = 64
    c.prm.lr = 3e-3
    return c
