"""Plumbing shared by the experiment binaries: workdirs, locks, logs, results, plots,
and the command line.

The command line of every binary (``main``)::

    python -m inferax.experiments.sway --config=sway:quick --workdir=runs/sway \
        --config.nfes=4,8,16 --config.sway_coefs="(-1, 0.5)" --config.toy.lr=1e-3

``--config`` names a config shipped in ``inferax.experiments.configs``
(``NAME`` or ``NAME:VARIANT``, from any directory) or a file
(``path/to/config.py[:VARIANT]``, loaded by ``ml_collections.config_flags``).
``--config.<field>=<value>`` overrides any field, lists and tuples included
(``4,8,16``, ``(4, 8, 16)`` or ``[4, 8, 16]``; elements take the type of the
field's current elements). The experiment's ``validate(config)`` runs on the
final config before ``run``, so a bad setting fails before any training.

``--distributed`` (or ``INFERAX_DISTRIBUTED=1``) starts JAX's multi-controller
runtime before the run (``experiments.multihost``): with
``--coordinator_address``, ``--num_processes`` and ``--process_id``, or, without
them, from the environment ``jax.distributed.initialize`` detects (Cloud TPU pod
slices, SLURM, Open MPI). Every process runs the experiment; only process 0
takes the workdir lock and writes the log file, ``results.json`` and plots
(``is_main_process``); checkpoints are saved by all processes through orbax.

Importing this module changes no global state (no matplotlib backend, no
logging filters); ``prepare_workdir`` and ``main`` configure logging when a
run starts.
"""

from __future__ import annotations

import ast
import json
import logging as py_logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from inferax.experiments import multihost
from inferax.experiments.multihost import is_main_process
from inferax.experiments.plots import image_grid, line_plot, scatter_grid  # noqa: F401 (re-exported)


class _RunLogHandler(py_logging.FileHandler):
    """The run's log file; holds the workdir's lock until ``close_log``."""

    workdir_lock: Any = None


def prepare_workdir(workdir: str, log_name: str) -> py_logging.Handler:
    """Locks ``workdir`` for this run and mirrors absl logging into ``workdir/log_name``.

    The lock (``<workdir>/.lock``, ``fcntl.flock``) is taken before the log
    file is opened, so a second run on the same workdir fails at once (naming
    the lock and the PID that holds it) without touching the first run's
    files. ``close_log`` releases it.

    Raises:
        DirectoryLockedError: if another run holds ``workdir``.
    """
    from inferax.models.checkpoint import DirectoryLock, quiet_orbax_logging

    if not is_main_process():  # process 0 owns the workdir's lock and log file
        quiet_orbax_logging()
        return py_logging.NullHandler()
    lock = DirectoryLock(workdir, what="workdir").acquire()
    try:
        handler = _RunLogHandler(os.path.join(workdir, log_name), mode="w")
    except BaseException:
        lock.release()
        raise
    handler.workdir_lock = lock
    handler.setFormatter(py_logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.get_absl_logger().addHandler(handler)
    logging.set_verbosity(logging.INFO)
    quiet_orbax_logging()
    return handler


def close_log(handler: py_logging.Handler) -> None:
    """Detaches and closes the run's log file and releases the workdir lock."""
    logging.get_absl_logger().removeHandler(handler)
    handler.close()
    lock = getattr(handler, "workdir_lock", None)
    if lock is not None:
        lock.release()


def cache_dir(config, workdir: str, name: str) -> str:
    """Where model ``name`` is cached: ``config.cache_dir/name`` or ``workdir/models/name``.

    ``train.train_or_restore`` keys entries below it by everything that
    determines the model, so one cache directory serves several seeds and
    configs.
    """
    root = config.cache_dir or os.path.join(workdir, "models")
    return os.path.join(root, name)


def _to_jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _to_jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_to_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if hasattr(x, "tolist"):
        return np.asarray(x).tolist()
    return x


def write_results(workdir: str, results: dict) -> str:
    path = os.path.join(workdir, "results.json")
    if not is_main_process():
        return path
    with open(path, "w") as f:
        json.dump(_to_jsonable(results), f, indent=1, sort_keys=True)
    return path


# ------------------------------------------------------------------ command line
_CONFIG_FLAG = "--config"


def resolve_config_arg(value: str) -> str:
    """``NAME[:VARIANT]`` -> the shipped file's ``path:VARIANT``; a file path is kept.

    Raises:
        ValueError: for a name that no shipped config has.
    """
    from inferax.experiments import configs

    name, sep, variant = value.partition(":")
    if os.sep in name or name.endswith(".py") or os.path.exists(name):
        return value
    return configs.path(name) + sep + variant


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Separates ``--config.FIELD=VALUE`` overrides from the other arguments.

    Also accepts ``--config.FIELD VALUE``, a bare ``--config.FIELD`` (true) and
    ``--noconfig.FIELD`` (false), and resolves ``--config=NAME[:VARIANT]``.

    Returns:
        ``(argv without overrides, [(field path, raw value), ...])`` in order.
    """
    rest: list[str] = []
    overrides: list[tuple[str, str]] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg.startswith(("--config.", "--noconfig.")):
            field, eq, value = arg.split(".", 1)[1].partition("=")
            if arg.startswith("--noconfig."):
                value = "false"
            elif not eq:
                take = i < len(args) and not args[i].startswith("--")
                value, i = (args[i], i + 1) if take else ("true", i)
            overrides.append((field, value))
        elif arg == _CONFIG_FLAG and i < len(args):
            rest += [arg, resolve_config_arg(args[i])]
            i += 1
        elif arg.startswith(_CONFIG_FLAG + "="):
            rest.append(_CONFIG_FLAG + "=" + resolve_config_arg(arg.split("=", 1)[1]))
        else:
            rest.append(arg)
    return rest, overrides


def _scalar(raw: Any, like: Any, name: str) -> Any:
    """``raw`` (a string, or a literal already parsed) as the type of ``like``."""
    text = str(raw).strip()
    try:
        if isinstance(like, bool):
            if text.lower() in ("true", "1", "yes"):
                return True
            if text.lower() in ("false", "0", "no"):
                return False
            raise ValueError
        if isinstance(like, int):
            return int(text)
        if isinstance(like, float):
            return float(text)
        if isinstance(like, str):
            return raw if isinstance(raw, str) else text
    except ValueError:
        raise ValueError(
            f"--config.{name}: expected a {type(like).__name__} like {like!r}, got {text!r}"
        ) from None
    try:  # a field without a typed default (None): any Python literal, else a string
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_value(raw: str, current: Any, name: str) -> Any:
    """Parses an override for a field whose current value is ``current``.

    Lists and tuples accept ``a,b,c``, ``(a, b, c)``, ``[a, b, c]`` or a single
    element; their elements take the type of ``current``'s first element (any
    literal when it is empty). Scalars take ``current``'s type.
    """
    if not isinstance(current, list | tuple):
        return _scalar(raw, current, name)
    text = raw.strip()
    try:
        items = ast.literal_eval(text)
        if not isinstance(items, list | tuple):
            items = [items]
    except (ValueError, SyntaxError):
        inner = text[1:-1] if text[:1] in "([" and text[-1:] in ")]" else text
        items = [x.strip() for x in inner.split(",") if x.strip()]
    like = current[0] if current else None
    return type(current)(_scalar(x, like, name) for x in items)


def apply_overrides(config, overrides: Sequence[tuple[str, str]]):
    """Sets each ``(field path, raw value)`` on ``config`` (in place) and returns it.

    Raises:
        ValueError: naming the override, for an unknown field, a section, or a
            value that does not parse as the field's type.
    """
    for path, raw in overrides:
        *parents, leaf = path.split(".")
        node = config
        for part in parents:
            node = node.get(part) if hasattr(node, "get") else None
            if not hasattr(node, "keys"):
                raise ValueError(f"--config.{path}: {part!r} is not a section of the config")
        if leaf not in node:
            raise ValueError(
                f"--config.{path}: no such field; expected one of {sorted(node.keys())}"
            )
        current = node[leaf]
        if hasattr(current, "keys"):
            raise ValueError(f"--config.{path}: is a section; override its fields instead")
        node[leaf] = parse_value(raw, current, path)
    return config


def parse_command_line(argv: Sequence[str], name: str, flag_values=None) -> tuple[Any, str]:
    """Parses a binary's command line into ``(config, workdir)`` (for tests and ``main``).

    Defines ``--config`` and ``--workdir`` on ``flag_values`` (a fresh
    ``absl.flags.FlagValues`` by default), parses ``argv`` (``argv[0]`` is the
    program) and applies the overrides.
    """
    from absl import flags

    fv = flags.FlagValues() if flag_values is None else flag_values
    rest, overrides = split_overrides(argv)
    config_flag, workdir_flag = _define_flags(name, fv, rest)
    unparsed = fv(rest)
    if len(unparsed) > 1:
        raise ValueError(f"argv: unexpected positional arguments {unparsed[1:]}")
    if config_flag.value is None:
        raise ValueError(f"--config: required, e.g. --config={name}:quick")
    return apply_overrides(config_flag.value, overrides), workdir_flag.value


def _define_flags(name: str, fv, argv: Sequence[str]):
    from absl import flags
    from ml_collections import config_flags

    from inferax.experiments import schema

    for flag in ("config", "workdir"):  # main() may run more than once in a process
        if flag in fv:
            delattr(fv, flag)
    fields = ""
    if name in schema.SCHEMAS:  # --help lists every field with its type and range
        fields = "; fields (experiments/schema.py):\n" + schema.describe(name)
    config_flag = config_flags.DEFINE_config_file(
        "config",
        None,
        f"config: a shipped name ({name}, {name}:quick) or a file (path/{name}.py:quick); "
        f"override fields with --config.FIELD=VALUE (lists: --config.FIELD=1,2,3){fields}",
        flag_values=fv,
        sys_argv=list(argv),
    )
    workdir_flag = flags.DEFINE_string(
        "workdir", f"runs/{name}", "output directory (locked while a run uses it)", flag_values=fv
    )
    for flag in ("config", "workdir"):  # list them under --help (the main module's flags)
        fv.register_key_flag_for_module(sys.argv[0], fv[flag])
    return config_flag, workdir_flag


# Loggers and source paths whose records are noise on a terminal (orbax's retries on a
# damaged checkpoint print hundreds of asyncio/absl error lines before the fallback
# succeeds); they still reach the run's log file, and --verbose shows them.
_NOISY_LOGGERS = ("asyncio", "tensorstore", "etils")
_NOISY_PATHS = ("orbax", "tensorstore", "etils", "asyncio")


class _TerminalNoiseFilter(py_logging.Filter):
    """Drops orbax / asyncio / tensorstore records (any level) from the terminal."""

    def filter(self, record: py_logging.LogRecord) -> bool:
        if record.name.split(".")[0] in _NOISY_LOGGERS:
            return False
        path = record.pathname.replace("\\", "/")
        return not any(f"/{p}/" in path or f"/{p}." in path for p in _NOISY_PATHS)


def quiet_terminal() -> None:
    """Keeps orbax's and asyncio's log records off the terminal (idempotent).

    The filter sits on absl's stderr handler only, so the run's log file (a
    handler of the absl logger, see ``prepare_workdir``) keeps every record.
    """
    handler = logging.get_absl_handler()
    if not any(isinstance(f, _TerminalNoiseFilter) for f in handler.filters):
        handler.addFilter(_TerminalNoiseFilter())
    # asyncio logs through its own logger to the root logger's handlers.
    root = py_logging.getLogger()
    for h in root.handlers:
        if not any(isinstance(f, _TerminalNoiseFilter) for f in h.filters):
            h.addFilter(_TerminalNoiseFilter())


def failure_line(name: str, error: BaseException) -> str:
    """The one line a binary prints when its run fails: the error's type, its first line
    (the messages of inferax's errors name the path: the lock file, the checkpoint
    directory, the step) and the file an ``OSError`` concerns (a full disk)."""
    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(error, OSError) and error.filename and str(error.filename) not in first:
        first = f"{first} ({error.filename})"
    return f"{name}: FAILED: {type(error).__name__}: {first}"


def _traceback_file(workdir: str, name: str) -> str | None:
    """Writes the current exception's traceback to ``<workdir>/<name>.traceback.txt``."""
    import traceback

    path = os.path.join(workdir, f"{name}.traceback.txt")
    try:
        os.makedirs(workdir, exist_ok=True)
        with open(path, "w") as f:
            traceback.print_exc(file=f)
    except OSError:  # a full disk, a read-only workdir: the line still says why
        return None
    return path


def run_reporting_failures(
    run: Callable[[Any, str], Any], config, workdir: str, name: str, verbose: bool = False
) -> Any:
    """``run(config, workdir)``; a failure becomes one line on stderr and exit status 1.

    The line names the error and the path it concerns (``failure_line``); the
    traceback goes to ``<workdir>/<name>.traceback.txt`` (named on the line),
    and to the terminal too with ``verbose``. Interrupts (Ctrl-C) and
    ``SystemExit`` pass through unchanged.

    Raises:
        SystemExit: with status 1 when ``run`` raised.
    """
    try:
        return run(config, workdir)
    except Exception as e:  # noqa: BLE001 - the binary's top level: report, exit 1
        from inferax.models.lock import DirectoryLockedError

        line = failure_line(name, e)
        if verbose:
            import traceback

            traceback.print_exc()
        if not isinstance(e, DirectoryLockedError):  # that workdir belongs to another run
            where = _traceback_file(workdir, name)
            if where is not None:
                line += f" [traceback: {where}]"
        print(line, file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def main(
    run: Callable[[Any, str], Any],
    name: str,
    validate: Callable[[Any], None] | None = None,
    argv: Sequence[str] | None = None,
) -> None:
    """Entry point of an experiment binary: parse flags, ``validate(config)``, ``run``.

    A failing run prints one line (``failure_line``: the error and the path it
    concerns, the traceback's file) and exits with status 1; ``--verbose`` also
    prints the traceback and orbax's / asyncio's log records, which otherwise
    stay off the terminal (they are in the run's log file).

    The flags are defined here, when the binary starts, not at import time, so
    that every experiment module can be imported into one process (the demo,
    the tests and the notebooks do).

    Args:
        run: ``run(config, workdir)``.
        name: the experiment's name (default config and workdir).
        validate: checks the final config and raises ``ValueError`` /
            ``TypeError``; defaults to the ``validate`` function of ``run``'s
            module, if it has one. Runs before ``run``, so before any training.
        argv: the command line (default ``sys.argv``).
    """
    from absl import app, flags

    argv = list(sys.argv if argv is None else argv)
    try:
        rest, overrides = split_overrides(argv)
    except ValueError as e:
        raise SystemExit(f"FATAL: {e}") from None
    config_flag, workdir_flag = _define_flags(name, flags.FLAGS, rest)
    if "verbose" in flags.FLAGS:
        delattr(flags.FLAGS, "verbose")
    verbose_flag = flags.DEFINE_bool(
        "verbose", False, "on a failure, print the traceback and orbax's log lines too"
    )
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS["verbose"])
    distributed_flags = multihost.define_flags(flags.FLAGS)
    if validate is None:
        validate = getattr(sys.modules.get(run.__module__), "validate", None)

    def _main(unparsed):
        if len(unparsed) > 1:
            raise app.UsageError(f"unexpected positional arguments: {unparsed[1:]}")
        if config_flag.value is None:
            raise app.UsageError(f"--config is required, e.g. --config={name}:quick")
        try:
            config = apply_overrides(config_flag.value, overrides)
            if validate is not None:
                validate(config)
            from inferax.experiments import schema

            if name in schema.SCHEMAS:  # every binary's fields, whatever its validate covers
                schema.check(config, name)
        except (ValueError, TypeError) as e:  # one line, not the module's whole usage text
            print(f"{name}: invalid config: {e}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        from inferax.models.checkpoint import quiet_orbax_logging

        quiet_orbax_logging()
        if not verbose_flag.value:
            quiet_terminal()
        try:
            multihost.start(*(f.value for f in distributed_flags))
        except ValueError as e:
            raise app.UsageError(str(e)) from None
        run_reporting_failures(run, config, workdir_flag.value, name, verbose_flag.value)

    app.run(_main, argv=rest)


def train_digits_flow(cfg, key, cache_dir: str, spec: dict, model, data, labels):
    """Trains (or restores from the config-keyed cache) a class-conditional flow on digits.

    ``cfg`` is a config section with ``lr``, ``train_steps``, ``warmup_steps``,
    ``batch_size`` and ``p_uncond``. Returns ``(params, losses)``.
    """
    from inferax.models import mlp, train

    params0 = model.init(jax.random.key(0), data[:2], jnp.zeros(2), jnp.zeros(2, jnp.int32))
    return train.train_or_restore(
        key,
        workdir=cache_dir,
        spec=spec,
        apply_fn=model.apply,
        params_init=params0,
        data=data,
        labels=labels,
        optimizer=train.make_optimizer(cfg.lr, cfg.train_steps, warmup_steps=cfg.warmup_steps),
        num_steps=cfg.train_steps,
        batch_size=cfg.batch_size,
        p_uncond=cfg.p_uncond,
        null_label=mlp.null_label(10),
        checkpoint_every=max(cfg.train_steps // 4, 1),
        log_every=max(cfg.train_steps // 5, 1),
    )


_JITTED: dict = {}


def jit_once(tag: str, owner: Any, static: tuple, make: Callable[[], Callable]) -> Callable:
    """One ``jax.jit(make())`` per (tag, model object, static settings) in this process.

    An experiment evaluates the same model for many seeds and difficulties; the
    compiled function is kept while ``owner`` (the model's functions or parameters)
    is the same object, so it compiles once per run.
    """
    key = (tag, id(owner), *static)
    hit = _JITTED.get(key)
    if hit is None or hit[0] is not owner:
        hit = (owner, jax.jit(make()))
        _JITTED[key] = hit
    return hit[1]
