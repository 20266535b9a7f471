r"""Config of the sway-sampling reproduction (F5-TTS, Chen et al. 2024, Table 5).

Claim: on a trained flow model, the sway grid t = u + s (cos(pi u / 2) - 1 + u)
with s < 0 (more steps near the noise end) at N steps is as good as the uniform
grid at 2N steps.

Run (full, 10 seeds so that Holm over a setting's family of up to ~20 checks can decide:
2^-n < 0.05 / 20 needs n >= 9; most of the time is training the models per seed, cached):

    python -m inferax.experiments.sway --config=sway --workdir=runs/sway

Quick (3 seeds, used by `make demo`; the tests shrink it further):

    python -m inferax.experiments.sway --config=sway:quick --workdir=runs/sway_quick

Any field can be overridden, e.g. ``--config.seed=100 --config.nfes=4,8,16``.

What a run reports: per setting (the 2-D model and the exact oracle velocity on
8 Gaussians, energy distance to held-out data; the class-conditional digits model per
CFG strength, classifier Fréchet distance; the infilling model per CFG strength, ref-MSE
to a fine reference solve) and solver, every grid (uniform, sway for each coefficient,
EPSS and the tuned grid for infilling) at every NFE, as a mean with a 95% t-interval over
seeds, beside the real-data floor; then a verdict per grid and N on "grid at N NFE is at
least as good as uniform at 2N NFE": paired over seeds, exact one-sided sign-flip test,
Holm over each setting's family (every grid at every N), the metric's noise floor, and
the paper's effect (``effect_size_relative`` of uniform at 2N) against which each
verdict's MDE is checked ("not decidable at this size" when larger). Settings with
fewer than 2 steps are left out. With 3 seeds (quick) the exact test cannot reach 5 %,
so every quick verdict is "not decidable"; the full run's 10 seeds can decide a whole
family. `results.json` holds every number, `sway.log` the
verdict per setting.
The measured numbers are in the committed quick run,
``results/quick/sway/results.json`` (report: ``results/quick/REPORT.md``), not
here; the full config's committed run is ``results/full/sway/results.json`` (report:
``results/full/REPORT.md``; about 25 minutes on 2 CPU cores).

Fields:
    seed: first seed; the run uses seeds seed, seed + 1, ..., seed + num_seeds - 1.
        A seed draws the 2-D data, trains both flow models and draws the sampling
        noise; the digits feature classifier (the metric) is trained once, seed-free.
    num_seeds: seeds per number (mean and 95% t-interval over them; >= 3 for verdicts
        with an interval of finite width that means something).
    cache_dir: where trained models are cached ("" = <workdir>/models).
    nfes: NFE budgets per sample; steps = NFE / (evals per step x CFG factor).
    sway_coefs: sway coefficients s; s = 0 is the uniform grid.
    effect_size_relative: the paper's effect as a fraction of the baseline's mean metric
        (uniform at 2N): 0.14 from F5-TTS (Chen et al. 2024) Table 5, WER 2.43 (sway, 16
        steps) vs 2.84 (uniform, 32 steps). A verdict whose MDE exceeds it is "not
        decidable at this size".
    solvers: ODE solvers ("euler": 1 NFE/step, "midpoint": 2).
    toy.dataset: 2-D data set; "eight_gaussians" has an exact oracle (NLL).
    toy.num_train / num_eval: training points / generated and held-out samples.
    toy.hidden / depth: VelocityMLP width and number of hidden layers.
    toy.train_steps / batch_size / lr: flow-matching training.
    toy.warmup_steps: linear learning-rate warm-up steps (< train_steps).
    toy.use_oracle: also evaluate the exact oracle velocity (no training error).
    digits.enabled: run the class-conditional digits part.
    digits.model: "conv" (ConvVelocity) or "mlp" (VelocityMLP on flattened images, ~10x
        faster to train on a CPU).
    digits.channels: ConvVelocity width; digits.hidden / depth: the MLP's.
    digits.train_steps / batch_size / lr / p_uncond: training (p_uncond = label dropout).
    digits.warmup_steps: linear learning-rate warm-up steps (< train_steps).
    digits.classifier_steps: steps of the feature classifier.
    digits.samples_per_class: generated images per class per setting.
    digits.cfg_scales: CFG strengths w (v_c + w (v_c - v_u)); 0 = conditional only.
    infill.enabled: run the infilling part (models.infill: bottom half of a digit given
        its top half, mask-conditioned velocity; experiments.sway_infill).
    infill.mask: training masks, "bottom" (top half observed) or "random" (pixels observed
        with probability 1/2); evaluation always completes the bottom half.
    infill.masks_per_image: masks drawn per training image (for "random").
    infill.hidden / depth: InfillVelocity width and residual blocks.
    infill.train_steps / batch_size / lr / warmup_steps / p_uncond: training (p_uncond =
        probability of dropping the whole condition, for CFG).
    infill.cfg_scales: CFG strengths w on the infilling model; 0 = conditional only.
    infill.num_eval: test images completed per setting.
    infill.reference_steps: midpoint steps of the reference solve (ref_mse's reference).
    infill.tune_nfes: NFEs at which a grid is tuned (schedule_tuning.tune, ES), on the
        first seed's model, and applied to every seed.
    infill.tune_batch / tune_iters / tune_coefs: tuning batch (training images), ES
        iterations, sway coefficients tried.
"""

import ml_collections


def get_config(variant: str = "full") -> ml_collections.ConfigDict:
    if variant not in ("full", "quick"):
        raise ValueError(f"variant: expected 'full' or 'quick', got {variant!r}")
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_seeds = 10  # Holm over a setting's grids x Ns (up to ~20) needs n >= 9
    c.cache_dir = ""
    c.nfes = [4, 8, 16, 32, 64]
    c.sway_coefs = [-1.0, -0.8, 0.0, 0.5]
    c.solvers = ["euler", "midpoint"]
    # The paper's effect, relative to uniform at 2N (the MDE is checked against it): F5-TTS
    # (Chen et al. 2024, Table 5, midpoint, LibriSpeech-PC): sway (s = -1) at 16 steps
    # WER 2.43 vs uniform at 32 steps 2.84, (2.84 - 2.43) / 2.84 = 14 %.
    c.effect_size_relative = 0.14

    # Sized for about half an hour on 2 CPU cores (10 seeds, each training its own models).
    c.toy = ml_collections.ConfigDict()
    c.toy.dataset = "eight_gaussians"
    c.toy.num_train = 20_000
    c.toy.num_eval = 4000
    c.toy.hidden = 128
    c.toy.depth = 3
    c.toy.train_steps = 4000
    c.toy.batch_size = 256
    c.toy.lr = 2e-3
    c.toy.warmup_steps = 100
    c.toy.use_oracle = True

    c.digits = ml_collections.ConfigDict()
    c.digits.enabled = True
    c.digits.model = "mlp"
    c.digits.channels = 32
    c.digits.hidden = 256
    c.digits.depth = 4
    c.digits.train_steps = 4000
    c.digits.batch_size = 128
    c.digits.lr = 2e-3
    c.digits.warmup_steps = 100
    c.digits.p_uncond = 0.2
    c.digits.classifier_steps = 1500
    c.digits.samples_per_class = 60
    c.digits.cfg_scales = [0.0, 2.0]

    c.infill = ml_collections.ConfigDict()
    c.infill.enabled = True
    c.infill.mask = "bottom"
    c.infill.masks_per_image = 1
    c.infill.hidden = 128
    c.infill.depth = 3
    c.infill.train_steps = 1000
    c.infill.batch_size = 64
    c.infill.lr = 2e-3
    c.infill.warmup_steps = 50
    c.infill.p_uncond = 0.2
    c.infill.cfg_scales = [0.0, 2.0]
    c.infill.num_eval = 359
    c.infill.reference_steps = 128
    c.infill.tune_nfes = [4, 8, 16]
    c.infill.tune_batch = 64
    c.infill.tune_iters = 40
    c.infill.tune_coefs = 8

    if variant == "quick":
        c.num_seeds = 3
        c.nfes = [4, 8, 16, 32]
        c.toy.num_train = 10_000
        c.toy.num_eval = 1500
        c.toy.train_steps = 1500
        c.digits.train_steps = 2000
        c.digits.classifier_steps = 400
        c.digits.samples_per_class = 30
        c.digits.cfg_scales = [2.0]
        c.infill.hidden = 64
        c.infill.depth = 2
        c.infill.train_steps = 300
        c.infill.warmup_steps = 30
        c.infill.num_eval = 200
        c.infill.reference_steps = 64
        c.infill.tune_nfes = [8]
        c.infill.tune_batch = 48
        c.infill.tune_iters = 20
        c.infill.tune_coefs = 6
    return c
