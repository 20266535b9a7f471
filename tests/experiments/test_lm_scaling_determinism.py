"""results.json of lm_scaling is byte-for-byte the same when the tiniest config runs twice
in two processes with different ``PYTHONHASHSEED`` (keys from names use zlib.crc32, never
``hash()``; the second run restores the models the first trained, from the same cache)."""

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import sys
    from inferax.experiments import lm_scaling
    from inferax.experiments.configs import lm_scaling as lm_config

    c = lm_config.get_config("quick")
    c.num_seeds = 1
    c.difficulty = [2]
    c.budgets = [1, 2]
    c.num_samples = 2
    c.num_problems = 3
    c.lm.num_layers = 1
    c.lm.d_model = 16
    c.lm.num_heads = 2
    c.lm.train_difficulty = (2, 2)
    c.lm.num_train = 50
    c.lm.train_steps = 4
    c.prm.num_layers = 1
    c.prm.d_model = 16
    c.prm.num_heads = 2
    c.prm.num_problems = 4
    c.prm.samples_per_problem = 2
    c.prm.train_steps = 4
    c.search.methods = ["particle_filter"]  # keyed by name_index (crc32)
    c.search.prms = ["learned"]
    c.search.budgets = [2]
    lm_scaling.run(c, sys.argv[1])
    """
)


@pytest.mark.slow
def test_results_json_identical_across_processes_and_hash_seeds(tmp_path):
    workdir = str(tmp_path / "run")
    outputs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "JAX_PLATFORMS": "cpu"}
        proc = subprocess.run([sys.executable, "-c", SCRIPT, workdir], env=env,
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        with open(os.path.join(workdir, "results.json"), "rb") as f:
            outputs.append(f.read())
    assert len(os.listdir(os.path.join(workdir, "models", "lm"))) == 1  # trained once
    assert outputs[0] == outputs[1]
