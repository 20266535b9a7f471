"""The sway reproduction end to end on a shrunken quick config."""

import json
import os

import pytest

from inferax.experiments import sway
from inferax.experiments.configs import sway as sway_config


def tiny_config():
    c = sway_config.get_config("quick")
    c.nfes = [4, 8, 16]
    c.sway_coefs = [-1.0, 0.0]
    c.toy.num_train = 4000
    c.toy.num_eval = 600
    c.toy.hidden = 64
    c.toy.train_steps = 400
    c.digits.hidden = 128
    c.digits.train_steps = 300
    c.digits.classifier_steps = 300
    c.digits.samples_per_class = 10
    return c


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("sway"))
    return workdir, sway.run(tiny_config(), workdir)


def test_writes_results_plots_and_log(results):
    workdir, res = results
    for name in ["results.json", "sway.log", "toy_energy_distance.png", "toy_samples.png",
                 "digits_frechet.png", "digits_samples.png"]:  # fmt: skip
        assert os.path.getsize(os.path.join(workdir, name)) > 0, name
    with open(os.path.join(workdir, "results.json")) as f:
        saved = json.load(f)
    # metric by dataset, velocity/CFG, solver, schedule, NFE
    entry = saved["toy"]["velocity"]["model"]["euler"]["sway-1"]["8"]
    assert set(entry) == {"steps", "energy_distance", "nll"} and entry["steps"] == 8
    assert saved["toy"]["velocity"]["oracle"]["midpoint"]["uniform"]["16"]["steps"] == 8
    digits = saved["digits"]["cfg"]["w=2"]["euler"]["uniform"]["16"]
    assert digits["steps"] == 8 and 0.0 <= digits["accuracy"] <= 1.0
    with open(os.path.join(workdir, "sway.log")) as f:
        log = f.read()
    assert "uniform at 2N" in log


def test_numbers_are_sane(results):
    _, res = results
    oracle = res["toy"]["velocity"]["oracle"]
    # With the exact velocity, more NFE gets closer to the data: NLL approaches the held-out NLL.
    nll_16 = oracle["midpoint"]["uniform"][16]["nll"]
    assert abs(nll_16 - res["toy"]["nll_held_out"]) < 0.25
    assert (
        oracle["euler"]["uniform"][4]["energy_distance"]
        > oracle["euler"]["uniform"][16]["energy_distance"]
    )
    assert res["digits"]["classifier_test_accuracy"] > 0.9
    # The verdict compares sway at N with uniform at 2N only where both exist.
    assert set(res["verdicts"]["toy/model/euler"]["sway-1"]) == {4, 8}


def test_report_mentions_claim_and_numbers(results):
    _, res = results
    md = sway.report(res)
    assert "F5-TTS" in md and "| sway-1 |" in md and "Verdict" in md
    rows = sway.summary(res)
    assert {r[1].split(":")[0] for r in rows} == {
        "toy/model/euler",
        "toy/model/midpoint",
        "digits/w=2/euler",
        "digits/w=2/midpoint",
    }


def test_padded_grid_is_a_no_op_after_t1():
    import jax.numpy as jnp

    ts = sway.grid(-1.0, 4, pad_to=7)
    assert ts.shape == (8,) and float(ts[4]) == 1.0 and bool(jnp.all(ts[4:] == 1.0))
