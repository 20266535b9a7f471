"""The ``Example:`` sections of the docstrings run as doctests (issue 19).

``inferax.search.lm``'s package docstring builds the shared setup (a tiny
random-weight transformer through the decoding protocol, prompts, a PRM and a
``StepConfig``); the examples of its modules start from it, so they run here with
its names in their globals. ``inferax.sampling`` and ``inferax.search.flow`` do
the same with a 2-D Gaussian target (exact velocity), a key and noise or a
reward and a ``Dynamics`` (``SETUPS``: the package whose setup a module's
examples get). Every public function of ``MODULES`` that a user calls directly
has an example (``test_public_entry_points_have_examples``).
"""

import doctest
import importlib

import pytest

MODULES = [
    "inferax.sampling._fk_sample",  # feynman_kac.sample lives here (re-exported)
    "inferax.sampling.energy",
    "inferax.sampling.feynman_kac",
    "inferax.sampling.flow",
    "inferax.sampling.mala",
    "inferax.sampling.resampling",
    "inferax.sampling.schedules",
    "inferax.sampling.sde",
    "inferax.sampling.smc",
    "inferax.search.core",
    "inferax.search.flow.beam",
    "inferax.search.flow.dynamics",
    "inferax.search.flow.noise",
    "inferax.search.flow.particles",
    "inferax.search.flow.paths",
    "inferax.search.flow.rollover",
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
# The entry points a user calls (every registered flow and LM search, LM sampling, voting,
# the kit; the flow samplers, SMC, Feynman-Kac correctors, resamplers, energy, MALA).
ENTRY_POINTS = {
    "inferax.sampling.energy": ["minimize"],
    "inferax.sampling.feynman_kac": ["sample", "anneal", "geometric_transition"],
    "inferax.sampling.flow": ["sample", "integrate"],
    "inferax.sampling.mala": ["step"],
    "inferax.sampling.resampling": ["ess", "systematic"],
    "inferax.sampling.schedules": ["uniform", "sway", "make"],
    "inferax.sampling.sde": ["sample", "euler_maruyama", "drift"],
    "inferax.sampling.smc": ["build", "init"],
    "inferax.search.core": ["Budget", "as_budget"],
    "inferax.search.flow.beam": ["beam_search"],
    "inferax.search.flow.dynamics": ["make_dynamics"],
    "inferax.search.flow.noise": ["random_search", "zero_order_search"],
    "inferax.search.flow.particles": ["best_of_n", "svdd", "code", "smc"],
    "inferax.search.flow.paths": ["search_over_paths"],
    "inferax.search.flow.rollover": ["rbf"],
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
# The package whose docstring example sets up a module's examples (longest prefix wins).
SETUPS = ("inferax.search.lm", "inferax.search.flow", "inferax.sampling")
# Slow tier: compiling nine LM searches takes ~35 s of CPU, the flow searches and samplers
# about as much (2 quiet cores: about that wall time); ``pytest -m "not slow"`` leaves it out.
pytestmark = pytest.mark.slow
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
_SETUP: dict[str, dict] = {}


def _run(test: doctest.DocTest) -> None:
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    out: list[str] = []
    runner.run(test, out=out.append, clear_globs=False)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0, test.name
    assert result.failed == 0, "".join(out)


def _setup(name: str) -> dict:
    """The globals of the example of the package that sets up module ``name`` (run once)."""
    pkg = next((p for p in SETUPS if name.startswith(p + ".")), None)
    if pkg is None:
        return {}
    if pkg not in _SETUP:
        module = importlib.import_module(pkg)
        (test,) = doctest.DocTestFinder(recurse=False).find(module, pkg)
        _run(test)
        _SETUP[pkg] = test.globs
    return _SETUP[pkg]


def _tests(name: str) -> list[doctest.DocTest]:
    module = importlib.import_module(name)
    found = doctest.DocTestFinder().find(module, name)
    return [t for t in found if t.examples and t.name.startswith(name)]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    tests = _tests(name)
    assert tests, name
    for test in tests:
        test.globs = dict(test.globs, **_setup(name))
        _run(test)


def test_public_entry_points_have_examples():
    for name, functions in ENTRY_POINTS.items():
        module = importlib.import_module(name)
        for fn in functions:
            doc = getattr(module, fn).__doc__ or ""
            assert "    Example:" in doc and ">>> " in doc, f"{name}.{fn}: no Example section"
