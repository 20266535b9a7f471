"""Test configuration: the test process sees 4 CPU devices.

The flag must be set before JAX initialises its backends, so it is set at
import time of this file, which pytest loads before any test module.
"""

import os

# Compile cheaply: the suite's time is mostly XLA:CPU compilation, not running the
# compiled programs, and XLA:CPU's new fusion emitters make compilation several times
# slower (a 16-step flow sampler: 1.3 s -> 0.5 s without them) while the small test
# programs run about as fast. (LLVM at level 0 would halve it again but changes the
# rounding of sharded programs, and the suite checks 1 vs 4 devices bit for bit.)
# Experiments, benchmarks and users run with XLA's defaults.
FAST_COMPILE = os.environ.get("INFERAX_TEST_XLA_FLAGS", "--xla_cpu_use_fusion_emitters=false")
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4 " + FAST_COMPILE
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One on-disk compilation cache for the whole run: the xdist workers and every
# subprocess the suite starts (experiment binaries, notebooks, README examples,
# multi-process runs) compile many of the same programs, and a test that builds a
# fresh closure recompiles an identical program. Keyed by the program and the XLA
# flags, so it never changes a result. A fresh clone starts it empty.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(_ROOT, ".pytest_cache", "jax-compilation-cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def devices():
    devs = jax.devices()
    assert len(devs) == 4, f"conftest expected 4 CPU devices, got {len(devs)}"
    return devs


# ------------------------------------------------------------------ the quick tier
# `pytest -m "not slow"` is the quick tier (DESIGN.md, Tests). The slow tests are
# marked here, by path, rather than by decorators in every file: whatever trains a
# model, runs an experiment or a notebook, starts processes, times a benchmark, or
# compiles the language-model searches, and the compile-heavy exactness modules (the
# Feynman-Kac convergence tests, the flow-search registry and particle searches against
# closed forms, the conv net) so that the quick tier stays near 3 minutes on 2 cores.
# A test in a slow module whose name says it checks bad input before any work is done
# stays quick (it fails before training).
SLOW_PATHS = (
    "tests/test_notebooks.py",
    "tests/test_readme.py",
    "tests/benchmarks/",
    "tests/experiments/test_ebt_experiment.py",
    "tests/experiments/test_fkc.py",
    "tests/experiments/test_lm_scaling.py",
    "tests/experiments/test_sway.py",
    "tests/experiments/test_readme_results.py",
    "tests/models/test_classifier.py",
    "tests/models/test_convnet.py",
    "tests/models/test_ebt.py",
    "tests/models/test_infill.py",
    "tests/models/test_prm.py",
    "tests/models/test_train.py",
    "tests/sampling/test_distributed.py",
    "tests/sampling/test_feynman_kac.py",
    "tests/sampling/test_feynman_kac_hard.py",
    "tests/sampling/test_feynman_kac_moves.py",
    "tests/sampling/test_multiprocess.py",
    "tests/sampling/test_schedule_tuning.py",
    "tests/search/test_flow_registry.py",
    "tests/search/test_flow_scaling_experiment.py",
    "tests/search/test_lm_",
    "tests/search/test_particle_search.py",
    "tests/search/test_search_sharded.py",
)
# Single tests of quick modules measured at > 10 s on 2 loaded cores (--durations), or
# starting a subprocess binary.
SLOW_TESTS = (
    "tests/sampling/test_flow.py::test_a_user_solver_plugs_in_with_its_order_and_cost",
    "tests/sampling/test_resampling.py::test_resampled_moments_match_weighted",
    "tests/sampling/test_resampling.py::test_variance_ordering",
    "tests/sampling/test_energy.py::test_same_result_sharded_over_4_devices",
    "tests/experiments/test_common.py::test_a_refused_lock_is_one_line_and_exit_status_1",
    "tests/experiments/test_common.py::test_main_validates_before_run_and_passes_overrides",
    "tests/experiments/test_common.py::test_import_changes_no_global_state",
    "tests/sampling/test_flow.py::test_euler_many_steps_reproduces_mixture_moments",
    "tests/sampling/test_resampling.py::test_zero_weights_never_chosen",
)
QUICK_NAMES = ("bad_config", "fails_before", "bad_input", "ceiling", "does_not_improve")


def pytest_collection_modifyitems(config, items):
    root = str(config.rootpath)
    for item in items:
        node = item.nodeid.replace("\\", "/")
        path = node.split("::", 1)[0]
        if not path.startswith("tests/"):  # run from another directory
            path = os.path.relpath(str(item.path), root).replace("\\", "/")
            node = path + "::" + node.split("::", 1)[-1]
        slow = path.startswith(SLOW_PATHS) or node.startswith(SLOW_TESTS)
        if slow and not any(k in item.name for k in QUICK_NAMES):
            item.add_marker(pytest.mark.slow)
