"""The search contract (inferax.search.core): budgets, registries, the methods table."""

from __future__ import annotations

import numpy as np
import pytest

from inferax import search
from inferax.search import core


def test_budget_names_its_units_and_is_static():
    b = core.Budget(sequences=16, tokens=640)
    assert b.units() == {"sequences": 16, "tokens": 640}
    assert hash(b) == hash(core.Budget(sequences=16, tokens=640))  # usable as a jit static
    assert repr(b) == "Budget(sequences=16, tokens=640)"
    assert b.exceeded({"sequences": 16, "tokens": 641}) == ["tokens"]
    assert b.exceeded({"sequences": 16, "tokens": 640, "nfe": 10**9}) == []  # nfe not capped
    assert b.require("tokens", "m") == 640
    with pytest.raises(ValueError, match="budget: m needs a limit in 'prm_calls'"):
        b.require("prm_calls", "m")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "at least one of the units"),
        ({"nfe": 0}, r"budget.nfe: expected None or a positive int, got 0"),
        ({"tokens": -3}, r"budget.tokens: .* got -3"),
        ({"sequences": 2.5}, r"budget.sequences: .* got 2.5"),
        ({"prm_calls": True}, r"budget.prm_calls: .* got True"),
    ],
)
def test_bad_budgets_name_the_unit(kwargs, match):
    with pytest.raises(ValueError, match=match):
        core.Budget(**kwargs)


def test_as_budget_reads_a_plain_int_in_the_primary_unit():
    assert core.as_budget(200, "nfe") == core.Budget(nfe=200)
    assert core.as_budget(np.int64(8), "sequences") == core.Budget(sequences=8)
    b = core.Budget(simulations=4)
    assert core.as_budget(b, "nfe") is b
    with pytest.raises(ValueError, match="budget: expected a positive int \\(nfe\\), got 0"):
        core.as_budget(0, "nfe")
    with pytest.raises(TypeError, match="budget: expected a Budget or a positive int"):
        core.as_budget(2.0, "nfe")
    with pytest.raises(TypeError, match="n_budget"):
        core.as_budget("8", "tokens", name="n_budget")
    with pytest.raises(ValueError, match="unit: expected one of"):
        core.as_budget(8, "flops")


def test_register_rejects_bad_entries_and_get_lists_names():
    def fn(key, model, verifier, budget):
        return None, None

    def plan(budget):
        return {}

    good = core.SearchEntry("tmp_probe", "flow", fn, ("nfe",), "argmax", plan)
    bad = [
        (good._replace(family="audio"), ValueError, "family"),
        (good._replace(units=("flops",)), ValueError, "entry.units"),
        (good._replace(units=()), ValueError, "entry.units"),
        (good._replace(target="best"), ValueError, "entry.target"),
        (good._replace(plan=None), TypeError, "plan"),
    ]
    for entry, err, match in bad:
        with pytest.raises(err, match=match):
            core.register(entry)
    with pytest.raises(TypeError, match="entry: expected a SearchEntry"):
        core.register({"name": "x"})
    try:
        core.register(good)
        assert core.get("flow", "tmp_probe") is good
        assert "`tmp_probe`" in core.methods_table()
        other = good._replace(fn=lambda *a: None)
        with pytest.raises(ValueError, match="already registered"):
            core.register(other)
    finally:
        core.FLOW_SEARCHES.pop("tmp_probe", None)
    with pytest.raises(ValueError, match="name: expected one of"):
        core.get("flow", "tmp_probe")


def test_every_registered_method_keeps_the_contract_shape():
    """Every entry's fn takes (key, model, verifier, budget) positionally, then options."""
    import inspect

    entries = list(search.FLOW_SEARCHES.values()) + list(search.LM_SEARCHES.values())
    assert entries, "no search registered"
    for e in entries:
        params = list(inspect.signature(e.fn).parameters.values())
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        assert len(positional) == 4, (e.name, [p.name for p in positional])
        assert positional[0].name == "key" and positional[3].name == "budget", e.name
        for opt in list(e.options) + list(e.fixed):
            assert opt in inspect.signature(e.fn).parameters, (e.name, opt)
        row = f"| {e.family} | `{e.name}` |"
        assert row in core.methods_table(), row
