"""One schema per experiment config: every field's type and range, checked before training.

``check(config, name)`` walks every leaf of an experiment's ``ConfigDict`` and
checks it against ``SCHEMAS[name]`` (a dict ``"section.field" -> Field``): the
type (an int is not a float, a bool is not an int, a list of ints has only
ints), the range (``lr > 0``, ``num_particles >= 1``, a pair ``(lo, hi)`` of
exactly two ints) and the choices. A field the schema does not know, or a
schema field the config lacks, is an error too, so a new config field cannot
go unchecked. Every problem is reported at once, one ``config.FIELD: expected
..., got ...`` clause each, in a ``ValueError`` (a ``TypeError`` when every
problem is a type).

The schema checks fields one by one; what depends on several fields or on the
data (``num_eval`` no larger than the split, ``warmup_steps < train_steps``)
stays in the experiment's ``validate``, which calls ``check`` first. Every
``run(config, workdir)`` calls its ``validate`` before it takes the workdir
or trains anything, and ``common.main`` runs ``check`` for every binary whose
name has a schema here.

``describe(name)`` renders a schema as text (one line per field), for
``--help`` and the docs.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

from inferax.sampling import sde

__all__ = ["SCHEMAS", "ConfigError", "Field", "check", "describe"]


class ConfigError(ValueError):
    """A config that fails its schema (every problem in one message)."""


@dataclass(frozen=True)
class Field:
    """The type and range of one config field.

    Attributes:
        kind: ``"int"``, ``"float"`` (an int is accepted), ``"bool"``, ``"str"``,
            ``"list"`` / ``"tuple"`` (elements checked by ``item``), or
            ``"float_or_str"`` (a number, or one of ``choices``).
        lo / hi: inclusive bounds (numbers, or each element of a list).
        lo_open / hi_open: make the bound exclusive.
        choices: allowed values (strings).
        item: the element schema of a list or tuple.
        min_len / length: a list's minimum length / a tuple's exact length.
        sorted_unique: a list's elements must be distinct (order is free).
    """

    kind: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple | None = None
    item: Field | None = None
    min_len: int = 0
    length: int | None = None
    sorted_unique: bool = False

    def describe(self) -> str:
        """What the field expects, in words (``"an int >= 1"``)."""
        if self.kind in ("list", "tuple"):
            size = f"exactly {self.length}" if self.length is not None else f">= {self.min_len}"
            distinct = ", distinct" if self.sorted_unique else ""
            return f"a {self.kind} of {size} items{distinct}, each {self.item.describe()}"
        if self.kind == "float_or_str":
            return f"a number {self._range()}or one of {list(self.choices)}".replace("  ", " ")
        if self.choices is not None:
            return f"one of {list(self.choices)}"
        article = {"int": "an int", "float": "a float", "bool": "a bool", "str": "a string"}
        return (article[self.kind] + " " + self._range()).strip()

    def _range(self) -> str:
        parts = []
        if self.lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {self.lo:g}")
        if self.hi is not None:
            parts.append(f"{'<' if self.hi_open else '<='} {self.hi:g}")
        return " and ".join(parts) + (" " if parts else "")

    def problem(self, value: Any) -> tuple[type, str] | None:
        """``(error type, reason)`` when ``value`` does not fit, else None."""
        if self.kind in ("list", "tuple"):
            if not isinstance(value, list | tuple):
                return TypeError, "not a list"
            if self.length is not None and len(value) != self.length:
                return ValueError, f"{len(value)} items"
            if len(value) < self.min_len:
                return ValueError, f"{len(value)} items"
            if self.sorted_unique and len(set(value)) != len(value):
                return ValueError, "repeated items"
            for v in value:
                bad = self.item.problem(v)
                if bad is not None:
                    return bad[0], f"item {v!r}: {bad[1]}"
            return None
        if self.kind == "float_or_str" and isinstance(value, str):
            return None if value in self.choices else (ValueError, "unknown name")
        if self.kind == "bool":
            return None if isinstance(value, bool) else (TypeError, "not a bool")
        if self.kind == "str":
            if not isinstance(value, str):
                return TypeError, "not a string"
            if self.choices is not None and value not in self.choices:
                return ValueError, "unknown choice"
            return None
        if isinstance(value, bool):
            return TypeError, "a bool"
        if self.kind == "int" and not isinstance(value, numbers.Integral):
            return TypeError, "not an int"
        if not isinstance(value, numbers.Real):
            return TypeError, "not a number"
        if not math.isfinite(value):
            return ValueError, "not finite"
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return ValueError, "below the range"
        if self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi):
            return ValueError, "above the range"
        return None


def Int(lo: int | None = None, hi: int | None = None) -> Field:  # noqa: N802
    """An int in ``[lo, hi]``."""
    return Field("int", lo, hi)


def Float(lo=None, hi=None, *, lo_open=False, hi_open=False) -> Field:  # noqa: N802
    """A finite real number in the range (an int is accepted)."""
    return Field("float", lo, hi, lo_open, hi_open)


def Bool() -> Field:  # noqa: N802
    """True or False."""
    return Field("bool")


def Str(*choices: str) -> Field:  # noqa: N802
    """A string, one of ``choices`` when given."""
    return Field("str", choices=tuple(choices) if choices else None)


def List(item: Field, min_len: int = 1, distinct: bool = False) -> Field:  # noqa: N802
    """A list (or tuple) of at least ``min_len`` items of schema ``item``."""
    return Field("list", item=item, min_len=min_len, sorted_unique=distinct)


def Pair(item: Field) -> Field:  # noqa: N802
    """Exactly two items of schema ``item``."""
    return Field("tuple", item=item, length=2)


G_NAMES = tuple(sorted(sde.G_SCHEDULES))  # the named noise schedules g(t)
POS_INT = Int(1)
NONNEG_INT = Int(0)
POS_FLOAT = Float(0.0, lo_open=True)
NONNEG_FLOAT = Float(0.0)
PROB = Float(0.0, 1.0)
SEED = Int(0, 2**31 - 1)
CACHE_DIR = Str()


# ------------------------------------------------------------------ schemas
def _ebt_task(prefix: str) -> dict[str, Field]:
    return {
        f"{prefix}.enabled": Bool(),
        f"{prefix}.d_models": List(POS_INT, distinct=True),
        f"{prefix}.num_layers": POS_INT,
        f"{prefix}.num_heads": POS_INT,
        f"{prefix}.train_steps": POS_INT,
        f"{prefix}.batch_size": POS_INT,
        f"{prefix}.num_eval": POS_INT,
        f"{prefix}.lr": POS_FLOAT,
        f"{prefix}.weight_decay": NONNEG_FLOAT,
        f"{prefix}.warmup_steps": NONNEG_INT,
        f"{prefix}.clip_norm": POS_FLOAT,
        f"{prefix}.alpha_init": Float(1e-4),  # ebt.ALPHA_MIN
        f"{prefix}.alpha_lr_mult": NONNEG_FLOAT,
        f"{prefix}.steps_min": POS_INT,
        f"{prefix}.steps_max": POS_INT,
        f"{prefix}.truncate": Bool(),
        f"{prefix}.random_alpha": Bool(),
        f"{prefix}.noise": NONNEG_FLOAT,
        f"{prefix}.replay_fraction": Float(0.0, 1.0, hi_open=True),
        f"{prefix}.replay_size": POS_INT,
        f"{prefix}.init_scale": POS_FLOAT,
    }


EBT = {
    "seed": SEED,
    "num_seeds": POS_INT,
    "cache_dir": CACHE_DIR,
    "steps": List(POS_INT, distinct=True),
    "candidates": List(POS_INT, distinct=True),
    "verify_steps": POS_INT,
    "claim_steps": POS_INT,
    "noise_floors.mse": NONNEG_FLOAT,
    "noise_floors.ce": NONNEG_FLOAT,
    "effect_size_relative": POS_FLOAT,
    **_ebt_task("digits"),
    "digits.ood_noise": NONNEG_FLOAT,
    **_ebt_task("tokens"),
    "tokens.ops": List(Int(2, 7), distinct=True),  # arithmetic.MIN_OPS, MAX_OPS
    "tokens.num_problems": POS_INT,
}

_SOLVERS = ("euler", "midpoint", "heun")
_TOY = ("eight_gaussians", "moons", "checkerboard", "rings")
SWAY = {
    "seed": SEED,
    "num_seeds": POS_INT,
    "cache_dir": CACHE_DIR,
    "solvers": List(Str(*_SOLVERS), distinct=True),
    "nfes": List(POS_INT, distinct=True),
    "sway_coefs": List(Float(-1.0, 2.0 / (math.pi - 2.0)), distinct=True),
    "effect_size_relative": POS_FLOAT,
    "toy.dataset": Str(*_TOY),
    "toy.use_oracle": Bool(),
    "toy.num_train": POS_INT,
    "toy.num_eval": POS_INT,
    "toy.hidden": POS_INT,
    "toy.depth": POS_INT,
    "toy.lr": POS_FLOAT,
    "toy.train_steps": POS_INT,
    "toy.warmup_steps": NONNEG_INT,
    "toy.batch_size": POS_INT,
    "digits.enabled": Bool(),
    "digits.model": Str("mlp", "conv"),
    "digits.hidden": POS_INT,
    "digits.depth": POS_INT,
    "digits.channels": POS_INT,
    "digits.lr": POS_FLOAT,
    "digits.train_steps": POS_INT,
    "digits.warmup_steps": NONNEG_INT,
    "digits.batch_size": POS_INT,
    "digits.p_uncond": Float(0.0, 1.0, hi_open=True),
    "digits.cfg_scales": List(NONNEG_FLOAT),
    "digits.samples_per_class": POS_INT,
    "digits.classifier_steps": POS_INT,
    "infill.enabled": Bool(),
    "infill.mask": Str(),  # checked against infill.MASKS by sway_infill.validate
    "infill.masks_per_image": POS_INT,
    "infill.hidden": POS_INT,
    "infill.depth": POS_INT,
    "infill.lr": POS_FLOAT,
    "infill.train_steps": POS_INT,
    "infill.warmup_steps": NONNEG_INT,
    "infill.batch_size": POS_INT,
    "infill.p_uncond": Float(0.0, 1.0, hi_open=True),
    "infill.cfg_scales": List(NONNEG_FLOAT),
    "infill.num_eval": POS_INT,
    "infill.reference_steps": POS_INT,
    "infill.tune_nfes": List(POS_INT, min_len=0, distinct=True),
    "infill.tune_batch": POS_INT,
    "infill.tune_coefs": POS_INT,
    "infill.tune_iters": NONNEG_INT,
}

FKC = {
    "seed": SEED,
    "num_seeds": POS_INT,
    "cache_dir": CACHE_DIR,
    "velocities": List(Str("oracle", "model"), distinct=True),
    "transport": Str(),  # checked against feynman_kac.TRANSPORTS by fkc.validate
    "transport_power": POS_FLOAT,
    "g": Field("float_or_str", lo=0.0, choices=G_NAMES),
    "num_steps": POS_INT,
    "num_particles": List(Int(2), distinct=True),
    "num_repeats": POS_INT,
    "num_reference": POS_INT,
    "num_target_samples": POS_INT,
    "grid_resolution": Int(2),
    "langevin_steps": NONNEG_INT,
    "langevin_step_size": POS_FLOAT,
    "langevin_adjusted": Bool(),
    "anneal.betas": List(POS_FLOAT),
    "anneal.data_scale": POS_FLOAT,
    "anneal.loc_scale": NONNEG_FLOAT,
    "anneal.log_weight_range": NONNEG_FLOAT,
    "anneal.num_components": POS_INT,
    "anneal.scale": POS_FLOAT,
    "cfg.components_per_class": POS_INT,
    "cfg.cond_class": NONNEG_INT,
    "cfg.loc_scale": NONNEG_FLOAT,
    "cfg.num_classes": Int(2),
    "cfg.scale": POS_FLOAT,
    "cfg.ws": List(NONNEG_FLOAT),
    "product.data_scale": POS_FLOAT,
    "product.p1.loc_scale": NONNEG_FLOAT,
    "product.p1.num_components": POS_INT,
    "product.p1.scale": POS_FLOAT,
    "product.p2.loc_scale": NONNEG_FLOAT,
    "product.p2.num_components": POS_INT,
    "product.p2.scale": POS_FLOAT,
    "train.batch_size": POS_INT,
    "train.depth": POS_INT,
    "train.hidden": POS_INT,
    "train.lr": POS_FLOAT,
    "train.p_uncond": Float(0.0, 1.0, hi_open=True),
    "train.train_steps": POS_INT,
    "train.warmup_steps": NONNEG_INT,
}

FLOW_SCALING = {
    "seed": SEED,
    "num_seeds": POS_INT,
    "cache_dir": CACHE_DIR,
    "budgets": List(POS_INT, distinct=True),
    "classes": List(Int(0, 9), distinct=True),
    "conditional": Bool(),
    "g": Field("float_or_str", lo=0.0, choices=G_NAMES),
    "methods": List(Str(), distinct=True),  # names checked by flow_scaling.validate
    "num_steps": POS_INT,
    "rbf_block": POS_INT,
    "rbf_chains": POS_INT,
    "rbf_initial": POS_INT,
    "smc_alpha": POS_FLOAT,
    "noise_floors.reward": NONNEG_FLOAT,
    "noise_floors.held_out": NONNEG_FLOAT,
    "noise_floors.diversity": NONNEG_FLOAT,
    "effect_sizes.reward": POS_FLOAT,
    "effect_sizes.held_out": POS_FLOAT,
    "effect_sizes.diversity": POS_FLOAT,
    "digits.batch_size": POS_INT,
    "digits.classifier_steps": POS_INT,
    "digits.depth": POS_INT,
    "digits.hidden": POS_INT,
    "digits.lr": POS_FLOAT,
    "digits.p_uncond": Float(0.0, 1.0, hi_open=True),
    "digits.train_steps": POS_INT,
    "digits.warmup_steps": NONNEG_INT,
}

LM_SCALING = {
    "seed": SEED,
    "model_seed": SEED,
    "num_seeds": POS_INT,
    "cache_dir": CACHE_DIR,
    "aggregation": Str(),  # checked against lm_scaling's AGGREGATIONS by its validate
    "budgets": List(POS_INT, distinct=True),
    "difficulty": List(Int(2, 7), distinct=True),
    "num_problems": POS_INT,
    "num_samples": POS_INT,
    "temperature": POS_FLOAT,
    "lm.batch_size": POS_INT,
    "lm.d_model": POS_INT,
    "lm.lr": POS_FLOAT,
    "lm.num_heads": POS_INT,
    "lm.num_layers": POS_INT,
    "lm.num_train": POS_INT,
    "lm.p_wrong": Float(0.0, 1.0),
    "lm.train_difficulty": Pair(Int(2, 7)),
    "lm.train_steps": POS_INT,
    "prm.batch_size": POS_INT,
    "prm.d_model": POS_INT,
    "prm.lr": POS_FLOAT,
    "prm.num_heads": POS_INT,
    "prm.num_layers": POS_INT,
    "prm.num_problems": POS_INT,
    "prm.samples_per_problem": POS_INT,
    "prm.train_steps": POS_INT,
    "search.beam_width": POS_INT,
    "search.budgets": List(POS_INT, min_len=0, distinct=True),
    "search.gibbs_iterations": POS_INT,
    "search.mcts_candidates": POS_INT,
    "search.methods": List(Str(), min_len=0, distinct=True),  # names: lm_search.validate
    "search.prms": List(Str("learned", "oracle"), min_len=0, distinct=True),
    "search.tau": POS_FLOAT,
}

SCHEMAS: dict[str, dict[str, Field]] = {
    "ebt": EBT,
    "sway": SWAY,
    "fkc": FKC,
    "flow_scaling": FLOW_SCALING,
    "lm_scaling": LM_SCALING,
}


def _leaves(config, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if hasattr(value, "keys") and hasattr(value, "items"):
            out.update(_leaves(value, path + "."))
        else:
            out[path] = value
    return out


def check(config, name: str) -> None:
    """Checks every field of ``config`` against ``SCHEMAS[name]``.

    Args:
        config: the experiment's ``ConfigDict`` (or a nested dict).
        name: the experiment (a key of ``SCHEMAS``).

    Raises:
        ConfigError (a ValueError): naming every field that is out of range,
            unknown to the schema, or missing; TypeError when every problem
            is a wrong type. Each clause reads ``config.FIELD: expected ...,
            got VALUE``.
    """
    if name not in SCHEMAS:
        raise ValueError(f"name: expected one of {sorted(SCHEMAS)}, got {name!r}")
    schema = SCHEMAS[name]
    leaves = _leaves(config)
    problems: list[tuple[type, str]] = []
    for path, value in leaves.items():
        field = schema.get(path)
        if field is None:
            problems.append((ValueError, f"config.{path}: no such field in the {name} schema "
                             f"(add it to experiments/schema.py), got {value!r}"))  # fmt: skip
            continue
        bad = field.problem(value)
        if bad is not None:
            problems.append(
                (bad[0], f"config.{path}: expected {field.describe()}, got {value!r} ({bad[1]})")
            )
    for path in schema:
        if path not in leaves:
            problems.append((ValueError, f"config.{path}: missing (the {name} schema needs it)"))
    if problems:
        message = "; ".join(p[1] for p in problems)
        if all(p[0] is TypeError for p in problems):
            raise TypeError(message)
        raise ConfigError(message)


def describe(name: str) -> str:
    """The schema of experiment ``name``, one ``FIELD: expected ...`` line per field."""
    return "\n".join(f"{path}: {f.describe()}" for path, f in sorted(SCHEMAS[name].items()))
