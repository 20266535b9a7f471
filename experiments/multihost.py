"""Experiment binaries on JAX's multi-controller runtime (one process per host).

``experiments.common.main`` defines the flags below and calls ``start`` before
the run; ``common`` writes the workdir's lock, log file, ``results.json`` and
plots on process 0 only (``is_main_process``). Checkpoints are saved by every
process through orbax (``models.checkpoint``), which writes each process's
shards and lets the primary host write the metadata.

Commands: see the README section "Scaling out".
"""

from __future__ import annotations

import os
import sys

from absl import logging


def is_main_process() -> bool:
    """True in a single-process run and on process 0 of a multi-process one."""
    import jax

    return not jax.distributed.is_initialized() or jax.process_index() == 0


def define_flags(fv):
    """Defines ``--distributed``, ``--coordinator_address``, ``--num_processes``, ``--process_id``.

    ``--distributed`` defaults to ``$INFERAX_DISTRIBUTED`` (1/true/yes).
    """
    from absl import flags

    for flag in ("distributed", "coordinator_address", "num_processes", "process_id"):
        if flag in fv:  # main() may run more than once in a process
            delattr(fv, flag)
    env = os.environ.get("INFERAX_DISTRIBUTED", "").lower() in ("1", "true", "yes")
    defs = (
        flags.DEFINE_bool(
            "distributed", env, "start JAX's multi-controller runtime (default: "
            "$INFERAX_DISTRIBUTED); without the next three flags the cluster is "
            "detected from the environment (TPU pod slice, SLURM, Open MPI)", flag_values=fv,
        ),
        flags.DEFINE_string("coordinator_address", None, "host:port of process 0", flag_values=fv),
        flags.DEFINE_integer("num_processes", None, "number of processes", flag_values=fv),
        flags.DEFINE_integer("process_id", None, "this process's index", flag_values=fv),
    )  # fmt: skip
    for flag in defs:  # listed under --help
        fv.register_key_flag_for_module(sys.argv[0], fv[flag.name])
    return defs


def start(enabled, coordinator_address=None, num_processes=None, process_id=None) -> None:
    """Starts JAX's multi-controller runtime when ``enabled`` (``--distributed``).

    Uses ``inferax.sampling.multiprocess.initialize`` (bounded timeouts; gloo
    collectives on CPU). Processes other than 0 then log warnings only.

    Raises:
        ValueError: if cluster flags are given without ``enabled``.
    """
    if not enabled:
        if (coordinator_address, num_processes, process_id) != (None, None, None):
            raise ValueError(
                "--coordinator_address/--num_processes/--process_id: expected them with "
                "--distributed, got them without it"
            )
        return
    import jax

    from inferax.sampling import multiprocess

    multiprocess.initialize(coordinator_address, num_processes, process_id)
    if not is_main_process():
        logging.set_verbosity(logging.WARNING)
    logging.info("distributed: process %d of %d", jax.process_index(), jax.process_count())
