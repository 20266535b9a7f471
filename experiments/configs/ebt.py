r"""Config of the Energy-Based Transformer reproduction (Gladstone et al. 2025).

Claims: (1) more optimisation steps at inference improve the task metric ("thinking
longer"); (2) keeping the lowest-energy of G optimised candidates improves it further
("self-verification"); (3) an EBT gains more from extra inference compute than a
feed-forward model of the same size, also on harder / out-of-distribution inputs.

Run (full, 5 seeds; the models are cached under <workdir>/models):

    python -m inferax.experiments.ebt --config=ebt --workdir=runs/ebt

Quick (3 seeds, used by `make demo`; the tests shrink it further):

    python -m inferax.experiments.ebt --config=ebt:quick --workdir=runs/ebt_quick

Any field can be overridden, e.g. ``--config.seed=100 --config.steps=1,2,4``.

Measured, quick config (3 seeds 0-2; 2026-12-02; 3 min 45 s on 2 loaded CPU cores, load
average ~8, training included; mean [95% t-interval]):
- digits, held-out MSE of the bottom half: 1 step 0.657 [0.625, 0.689], 4 steps 0.321
  [0.314, 0.328], 16 steps 0.296 [0.295, 0.298] (more steps: holds); at 4 steps G = 1
  0.320 [0.302, 0.337] vs G = 16 0.301 [0.298, 0.305] (self-verification: holds, small);
  feed-forward baseline 0.248 [0.239, 0.257] (the EBT at its best is WORSE: fails).
  Noisy contexts (std 0.4, OOD): the same picture (1 step 0.678, 4 steps 0.329, G = 16
  0.305, feed-forward 0.270). Energy vs true error of the candidates: Spearman 0.38
  [0.29, 0.48] within a context (low energy is a weak but real verifier).
- tokens, held-out cross-entropy: 1 step 2.58 [2.37, 2.79], 4 steps 1.84 [1.43, 2.25]
  (holds), 16 steps 2.47 (worse again: trained with 2-3 steps); G = 16 1.89 vs G = 1 1.85
  (self-verification fails: energy does not rank the token candidates, Spearman 0.04
  within a context); feed-forward 1.17 [1.08, 1.26] (fails). On the result digits (the
  harder positions) extra steps do not help (tie) and G hurts.
So at this scale "more steps help" holds on both tasks, self-verification helps a little on
digits only, and the same-size feed-forward model is better everywhere (the paper's
advantage of EBTs appears with scale, which a 2-core demo cannot reach).

Fields:
    seed: first seed; seeds seed, ..., seed + num_seeds - 1. A seed initialises and
        trains every model, draws the training batches and the inference starts.
    num_seeds: seeds per number (mean and 95% t-interval over them).
    cache_dir: where trained models are cached ("" = <workdir>/models).
    steps: inference steps at which the metric is read (one run of max(steps) steps).
    candidates: G values of self-verification (the first G of max(G) candidates).
    verify_steps: inference steps of every candidate in the G sweep.
    claim_steps: the "several steps" of claim (1), compared with 1 step.
    <task>.enabled: run the task ("digits": complete the bottom half of 8x8 digits,
        metric MSE in [-1, 1] pixel units and PSNR; "tokens": next token of the
        arithmetic traces, metric cross-entropy / perplexity).
    <task>.d_model / num_layers / num_heads: the transformer (EBT and baseline alike).
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
    c.num_seeds = 5
    c.cache_dir = ""
    c.steps = [1, 2, 4, 8, 16]
    c.candidates = [1, 2, 4, 8, 16]
    c.verify_steps = 4
    c.claim_steps = 4

    c.digits = ml_collections.ConfigDict()
    c.digits.enabled = True
    c.digits.d_model = 64
    c.digits.num_layers = 2
    c.digits.num_heads = 4
    c.digits.train_steps = 3000
    c.digits.batch_size = 64
    c.digits.num_eval = 359
    c.digits.ood_noise = 0.4
    _training(c.digits)

    c.tokens = ml_collections.ConfigDict()
    c.tokens.enabled = True
    c.tokens.d_model = 64
    c.tokens.num_layers = 2
    c.tokens.num_heads = 4
    c.tokens.train_steps = 3000
    c.tokens.batch_size = 64
    c.tokens.num_eval = 1024
    c.tokens.ops = [2, 3]
    c.tokens.num_problems = 1024
    _training(c.tokens, lr=3e-3, alpha_init=20.0, init_scale=0.1)

    if variant == "quick":
        c.num_seeds = 3
        c.digits.d_model = 32
        c.digits.num_layers = 1
        c.digits.train_steps = 300
        c.digits.batch_size = 32
        c.digits.warmup_steps = 20
        c.digits.num_eval = 256
        c.tokens.d_model = 32
        c.tokens.num_layers = 1
        c.tokens.train_steps = 200
        c.tokens.batch_size = 32
        c.tokens.warmup_steps = 20
        c.tokens.num_eval = 384
        c.tokens.num_problems = 256
    return c
