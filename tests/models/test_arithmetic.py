"""Tests for inferax.models.arithmetic: the task, the tokenizer and the exact checker.

Truths: the chain is recomputed by brute force in plain Python; corrupted
traces are built with known wrong steps.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from inferax.models import arithmetic as ar


def test_tokenizer_round_trip_and_errors():
    text = "3+4=7;7*2=4;#4"
    ids = ar.encode(text, bos=True, eos=True)
    assert ids[0] == ar.BOS and ids[-1] == ar.EOS and ids.dtype == np.int32
    assert ar.decode(ids) == text
    assert ar.decode(np.concatenate([ids, ar.encode("99")])) == text  # stops at EOS
    assert ar.encode(";")[0] == ar.STEP_ID and ar.encode("#")[0] == ar.ANSWER_ID
    assert ar.VOCAB_SIZE == 3 + len(ar.CHARS)
    with pytest.raises(ValueError, match="text.*'x'"):
        ar.encode("3x4")


def _brute(p):
    a = p.start
    for op, d in p.ops:
        a = {"+": a + d, "-": a - d, "*": a * d}[op] % 10
    return a


@pytest.mark.parametrize("num_ops", [2, 4, 7])
def test_splits_answers_and_lengths(num_ops):
    train = ar.split("train", num_ops, 64)
    test = ar.split("test", num_ops, 64)
    assert train == ar.split("train", num_ops, 64)  # fixed
    assert all(p.num_ops == num_ops for p in train + test)
    assert all(p.answer == _brute(p) for p in train + test)
    if num_ops <= 4:
        assert not set(test) & set(ar.split("train", num_ops, 4096))
    pr = ar.prompts(train)
    assert pr.shape == (64, ar.prompt_length(num_ops))
    sol = ar.solutions(train, ar.solution_length(num_ops))
    assert np.all(sol[:, -1] == ar.EOS)
    # answers are spread over the digits (the task is not degenerate)
    assert len({p.answer for p in train}) >= 6
    with pytest.raises(ValueError, match="num_ops"):
        ar.split("train", 8, 4)
    with pytest.raises(ValueError, match="name"):
        ar.split("valid", 3, 4)


def test_checker_accepts_correct_and_rejects_every_corruption():
    rng = np.random.default_rng(0)
    for p in ar.split("test", 5, 40):
        good = ar.encode(p.solution_text(), eos=True)
        res = ar.check(p, good)
        assert res["all_correct"] and res["answer_correct"] and all(res["steps"])
        assert len(res["steps"]) == 5 and res["answer"] == p.answer
        i = int(rng.integers(5))
        wrong = [None] * 5
        wrong[i] = (p.values()[i] + int(rng.integers(1, 10))) % 10
        bad = ar.encode(ar.corrupted_solution_text(p, wrong), eos=True)
        res = ar.check(p, bad)
        assert not res["all_correct"]
        assert res["steps"][:i] == [True] * i and not res["steps"][i]
        # JAX checker: prefix correct exactly up to the corrupted step
        sol = jnp.asarray(ar.solutions([p], ar.solution_length(5)))
        for cut in range(len(bad) + 1):
            ok = ar.prefix_correct(jnp.asarray(bad)[None], jnp.array([cut]), sol)
            assert bool(ok[0]) == (cut <= ar.STEP_LEN * i + 4), (cut, i)
    assert ar.check(p, ar.encode("1+2=3;"))["answer"] is None


def test_extract_answer():
    gen = np.stack(
        [
            np.pad(ar.encode("3+4=7;#7", eos=True), (0, 3)),
            np.pad(ar.encode("3+4=7;7+1=8;"), (0, 0)),
            np.pad(ar.encode("3+4=7;#"), (0, 5)),
        ]
    )
    assert ar.extract_answer(gen).tolist() == [7, -1, -1]


def test_training_sequences_mask_and_corruption_rate():
    probs = ar.split("train", 3, 400)
    rng = np.random.default_rng(1)
    toks, mask = ar.training_sequences(probs, rng, 0.2, 32)
    n_bad = 0
    for p, t, m in zip(probs, toks, mask, strict=True):
        plen = ar.prompt_length(3)
        assert ar.decode(t[:plen]) == p.prompt_text()
        # loss on the positions predicting the solution tokens (incl. EOS)
        assert m.sum() == ar.solution_length(3) and m[plen - 1] == 1 and m[plen - 2] == 0
        n_bad += not ar.check(p, t[plen:])["all_correct"]
    # P(at least one of 3 steps corrupted) = 1 - 0.8^3 = 0.488
    assert abs(n_bad / 400 - 0.488) < 0.08
    clean, _ = ar.training_sequences(probs[:20], rng, 0.0, 32)
    assert all(
        ar.check(p, t[ar.prompt_length(3) :])["all_correct"]
        for p, t in zip(probs[:20], clean, strict=True)
    )
