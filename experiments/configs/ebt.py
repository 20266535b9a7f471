r"""Config of the Energy-Based Transformer reproduction (Gladstone et al. 2025).

Claims: (1) more optimisation steps at inference improve the task metric ("thinking
longer"); (2) keeping the lowest-energy of G optimised candidates improves it further
("self-verification"); (3) an EBT gains more than a feed-forward model of the same size
both from model size (its improvement from the smallest to the largest model is larger)
and from extra inference compute, and its gains from more steps and from
self-verification grow with model size (the paper's scaling trends, Figs. 5-7), also on
harder / out-of-distribution inputs.

Run (full: three widths d_model 16, 32, 64 per task, one layer, 1000 / 800 training
steps, 8 seeds so that Holm over a family of four can decide (2^-n < 0.05 / 4 needs
n >= 7); about 15 minutes on 2 CPU cores; the models are cached under <workdir>/models):

    python -m inferax.experiments.ebt --config=ebt --workdir=runs/ebt

Quick (three tiny widths d_model 8, 16, 32, one layer, 3 seeds, a few hundred
training steps; used by `make demo`; the tests shrink it further). It costs about 2.4
times the CPU time of one width (most of it compiling each width's programs once for
the first seed; the later seeds take seconds), an estimated ~2.5 min on a quiet 2-core
machine:

    python -m inferax.experiments.ebt --config=ebt:quick --workdir=runs/ebt_quick

Any field can be overridden, e.g. ``--config.seed=100 --config.steps=1,2,4
--config.digits.d_models=16,32,64``.

What a run reports: per task, subset (clean / noisy digit contexts; all positions / the
result digits of the traces) and model width, the EBT's metric after 1..max(steps)
inference steps and with G = 1..max(candidates) self-verification candidates, the
feed-forward model's metric, and the Spearman correlation of a candidate's energy with
its true error, each as a mean with a 95% t-interval over seeds; then the verdicts
(``ebt_report.verdicts``, also stored in results.json): at each width the four claims
(Holm over four), and the trend from the smallest to the largest width (Holm over
three): "EBT's improvement from the smallest to the largest size exceeds the
feed-forward model's", "EBT's gain from claim_steps steps over 1 step grows with size",
"EBT's gain from self-verification grows with size". Each verdict states its MDE against
the paper's effect (``effect_size_relative`` of the baseline's mean metric) and reads
"not decidable at this size" when the MDE is larger; with 3 seeds (quick) the exact
test cannot reach 5 %, so every quick verdict is "not decidable".
The measured numbers are in the committed quick run,
``results/quick/ebt/results.json`` (report: ``results/quick/REPORT.md``), not
here; the full config's committed run is ``results/full/ebt/results.json`` (report:
``results/full/REPORT.md``).

Fields:
    seed: first seed; seeds seed, ..., seed + num_seeds - 1. A seed initialises and
        trains every model, draws the training batches and the inference starts.
    num_seeds: seeds per number (mean and 95% t-interval over them).
    cache_dir: where trained models are cached ("" = <workdir>/models).
    steps: inference steps at which the metric is read (one run of max(steps) steps).
    candidates: G values of self-verification (the first G of max(G) candidates).
    verify_steps: inference steps of every candidate in the G sweep.
    claim_steps: the "several steps" of claim (1), compared with 1 step.
    noise_floors.mse / noise_floors.ce: the metrics' resolution (MSE of [-1, 1] pixels,
        CE in nats): a mean difference within it is a tie.
    effect_size_relative: the paper's effect as a fraction of the baseline's mean metric
        (Gladstone et al. 2025 report gains of several percent from thinking longer,
        self-verification and scale, Figs. 5-7: 0.05); a verdict whose MDE exceeds it is
        "not decidable at this size".
    <task>.enabled: run the task ("digits": complete the bottom half of 8x8 digits,
        metric MSE in [-1, 1] pixel units and PSNR; "tokens": next token of the
        arithmetic traces, metric cross-entropy / perplexity).
    <task>.d_models: the model widths (d_model) compared, EBT and baseline alike; the
        trend verdicts go from the smallest to the largest.
    <task>.num_layers / num_heads: the transformer's depth and heads (every width).
    <task>.train_steps / batch_size: updates and rows per update (both models).
    <task>.num_eval: held-out examples evaluated.
    <task>.lr, weight_decay, warmup_steps, clip_norm: optimiser (both models).
    <task>.alpha_init / alpha_lr_mult: the learnable step size and its lr multiplier.
    <task>.steps_min / steps_max: optimisation steps per training prediction (random
        in between per batch: the "random number of steps" regulariser).
    <task>.truncate: one-step-deep backpropagation (False: through the whole chain).
    <task>.random_alpha: per-example step size alpha * U[1/2, 2].
    <task>.noise: std of the unscaled Langevin noise in training (0: none).
    <task>.replay_fraction / replay_size: the replay buffer of earlier predictions.
    <task>.init_scale: std of the random starts y0 (training and inference).
    digits.ood_noise: std of Gaussian noise added to the held-out contexts (the harder,
        out-of-distribution inputs).
    tokens.ops: numbers of operations of the training / test problems.
    tokens.num_problems: training problems per number of operations.
"""

import ml_collections


def _training(c, **kw) -> None:
    c.lr = 2e-3
    c.weight_decay = 0.0
    c.warmup_steps = 50
    c.clip_norm = 1.0
    c.alpha_init = 0.3
    c.alpha_lr_mult = 1.0
    c.steps_min = 2
    c.steps_max = 3
    c.truncate = True
    c.random_alpha = True
    c.noise = 0.0
    c.replay_fraction = 0.0
    c.replay_size = 1024
    c.init_scale = 0.5
    for k, v in kw.items():
        setattr(c, k, v)


def get_config(variant: str = "full") -> ml_collections.ConfigDict:
    if variant not in ("full", "quick"):
        raise ValueError(f"variant: expected 'full' or 'quick', got {variant!r}")
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_seeds = 8
    c.cache_dir = ""
    c.steps = [1, 2, 4, 8, 16]
    c.candidates = [1, 2, 4, 8, 16]
    c.verify_steps = 4
    c.claim_steps = 4
    # Verdict settings (ebt_report.NOISE_FLOORS / EFFECT_SIZE_RELATIVE, the same values):
    # effect 5 % of the baseline, Gladstone et al. 2025, Figs. 5-7.
    c.noise_floors = ml_collections.ConfigDict({"mse": 0.002, "ce": 0.01})
    c.effect_size_relative = 0.05

    c.digits = ml_collections.ConfigDict()
    c.digits.enabled = True
    # Sized for about half an hour on 2 CPU cores: 8 seeds x 3 widths x 2 tasks x (EBT, FF).
    c.digits.d_models = [16, 32, 64]
    c.digits.num_layers = 1
    c.digits.num_heads = 4
    c.digits.train_steps = 1000
    c.digits.batch_size = 32
    c.digits.num_eval = 359
    c.digits.ood_noise = 0.4
    _training(c.digits)

    c.tokens = ml_collections.ConfigDict()
    c.tokens.enabled = True
    c.tokens.d_models = [16, 32, 64]
    c.tokens.num_layers = 1
    c.tokens.num_heads = 4
    c.tokens.train_steps = 800
    c.tokens.batch_size = 32
    c.tokens.num_eval = 1024
    c.tokens.ops = [2, 3]
    c.tokens.num_problems = 1024
    _training(c.tokens, lr=3e-3, alpha_init=20.0, init_scale=0.1)
    # Over 1000 steps the quick learning rates let some seeds' EBT loss climb back up (seed
    # 3, digits, d_model 16: 0.26 at step 500, 0.47 at step 1000, a DivergedError); the full
    # run trains at lower rates with a longer warm-up.
    c.digits.lr, c.digits.warmup_steps = 1e-3, 100
    c.tokens.lr, c.tokens.warmup_steps = 2e-3, 100

    if variant == "quick":
        c.num_seeds = 3
        c.digits.d_models = [8, 16, 32]
        c.digits.train_steps = 300
        c.digits.lr = 2e-3
        c.digits.warmup_steps = 20
        c.digits.num_eval = 256
        c.tokens.d_models = [8, 16, 32]
        c.tokens.train_steps = 200
        c.tokens.lr = 3e-3
        c.tokens.warmup_steps = 20
        c.tokens.num_eval = 384
        c.tokens.num_problems = 256
    return c
