"""The ``Example:`` sections of the docstrings run as doctests (issue 19).

``inferax.search.lm``'s package docstring builds the shared setup (a tiny
random-weight transformer through the decoding protocol, prompts, a PRM and a
``StepConfig``); the examples of its modules start from it, so they run here with
its names in their globals. Every public function of ``MODULES`` that a user
calls directly has an example (``test_public_entry_points_have_examples``).
"""

import doctest
import importlib

import pytest

import inferax.search.lm as lm_pkg

MODULES = [
    "inferax.search.lm.beam",
    "inferax.search.lm.conformance",
    "inferax.search.lm.decoding",
    "inferax.search.lm.gibbs",
    "inferax.search.lm.mcts",
    "inferax.search.lm.particle",
    "inferax.search.lm.rebase",
    "inferax.search.lm.steer",
    "inferax.search.lm.voting",
]
# The entry points a user calls (every registered LM search, sampling, voting, the kit).
ENTRY_POINTS = {
    "inferax.search.lm.beam": ["beam_search", "dvts"],
    "inferax.search.lm.conformance": ["check_lm"],
    "inferax.search.lm.decoding": ["start", "generate", "sample"],
    "inferax.search.lm.gibbs": ["particle_gibbs"],
    "inferax.search.lm.mcts": ["mcts"],
    "inferax.search.lm.particle": ["particle_filter"],
    "inferax.search.lm.rebase": ["rebase"],
    "inferax.search.lm.steer": ["smc_steer"],
    "inferax.search.lm.voting": ["best_of_n", "weighted_vote", "majority_vote", "pass_at_k"],
}
# Slow tier: compiling nine LM searches takes ~35 s of CPU (2 quiet cores: about that
# wall time); ``pytest -m "not slow"`` leaves it out.
pytestmark = pytest.mark.slow
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
_SETUP: dict = {}


def _run(test: doctest.DocTest) -> None:
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    out: list[str] = []
    runner.run(test, out=out.append, clear_globs=False)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0, test.name
    assert result.failed == 0, "".join(out)


def _setup() -> dict:
    """The package example's globals (run once)."""
    if not _SETUP:
        (test,) = doctest.DocTestFinder(recurse=False).find(lm_pkg, "inferax.search.lm")
        _run(test)
        _SETUP.update(test.globs)
    return _SETUP


def _tests(name: str) -> list[doctest.DocTest]:
    module = importlib.import_module(name)
    found = doctest.DocTestFinder().find(module, name)
    return [t for t in found if t.examples and t.name.startswith(name)]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    tests = _tests(name)
    assert tests, name
    for test in tests:
        test.globs = dict(test.globs, **_setup())
        _run(test)


def test_public_entry_points_have_examples():
    for name, functions in ENTRY_POINTS.items():
        module = importlib.import_module(name)
        for fn in functions:
            doc = getattr(module, fn).__doc__ or ""
            assert "    Example:" in doc and ">>> " in doc, f"{name}.{fn}: no Example section"
