"""The orbax Checkpointer wrapper: round trips, integrity records, locks."""

import os
import subprocess
import sys
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from inferax.models.checkpoint import (
    Checkpointer,
    CorruptCheckpointError,
    DirectoryLock,
    DirectoryLockedError,
    NonFiniteError,
    abstract_tree,
)
from inferax.models.flow_matching import init_train_state


class Pair(NamedTuple):
    a: jax.Array
    b: dict


def make_tree(seed=0):
    k = jax.random.key(seed)
    return Pair(
        a=jax.random.normal(k, (3, 4)),
        b={"i": jnp.arange(5, dtype=jnp.int32) + seed, "h": jnp.ones((2,), jnp.bfloat16) * seed},
    )


def assert_tree_equal(x, y):
    assert jax.tree.structure(x) == jax.tree.structure(y)
    for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(y), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(np.asarray(a, np.float64), np.asarray(b, np.float64))


def test_round_trip_against_abstract_target(tmp_path):
    tree = make_tree(1)
    with Checkpointer(tmp_path / "ck") as ckpt:
        assert ckpt.latest_step() is None
        assert ckpt.save(7, tree)
        ckpt.wait()
        target = jax.eval_shape(lambda: make_tree(0))
        assert isinstance(jax.tree.leaves(target)[0], jax.ShapeDtypeStruct)
        restored = ckpt.restore(7, target)
    assert isinstance(restored, Pair)
    assert_tree_equal(restored, tree)


def test_train_state_round_trip(tmp_path):
    params = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.zeros(3)}
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))
    state = init_train_state(params, opt, ema_decay=0.99)
    state = state._replace(step=jnp.int32(12))
    with Checkpointer(str(tmp_path)) as ckpt:
        ckpt.save(12, state)
    # A fresh Checkpointer (a new process, in effect) finds and restores it.
    with Checkpointer(str(tmp_path)) as ckpt:
        assert ckpt.latest_step() == 12
        restored = ckpt.restore(12, init_train_state(params, opt, ema_decay=0.99))
    assert_tree_equal(restored, state)
    without_ema = init_train_state(params, opt)
    assert without_ema.ema_params is None
    with Checkpointer(str(tmp_path / "noema")) as ckpt:
        ckpt.save(1, without_ema)
        assert_tree_equal(ckpt.restore(1, without_ema), without_ema)


def test_max_to_keep_and_interval(tmp_path):
    with Checkpointer(tmp_path, max_to_keep=2, save_interval_steps=5) as ckpt:
        assert ckpt.save(0, make_tree(0))
        assert not ckpt.save(3, make_tree(3))  # not a multiple of 5
        assert ckpt.save(3, make_tree(3), force=True)
        assert ckpt.save(5, make_tree(5))
        assert ckpt.save(10, make_tree(10))
        ckpt.wait()
        assert ckpt.all_steps() == [5, 10]
        assert ckpt.latest_step() == 10
        assert_tree_equal(ckpt.restore(5, make_tree()), make_tree(5))
        with pytest.raises(ValueError, match=r"step: expected one of the saved steps \[5, 10\]"):
            ckpt.restore(0, make_tree())
    # Rotation removes the integrity records of the deleted steps too.
    assert sorted(os.listdir(tmp_path)) == ["10", "5", "integrity"]
    assert sorted(os.listdir(tmp_path / "integrity")) == ["10.json", "5.json"]


def test_relative_directory_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with Checkpointer("rel/ck") as ckpt:
        assert os.path.isabs(ckpt.directory)
        ckpt.save(1, make_tree())
    assert os.path.isdir(tmp_path / "rel" / "ck" / "1")


def test_abstract_tree():
    tree = make_tree()
    abstract = abstract_tree(tree)
    assert jax.tree.structure(abstract) == jax.tree.structure(tree)
    leaf = abstract.b["h"]
    assert isinstance(leaf, jax.ShapeDtypeStruct) and leaf.dtype == jnp.bfloat16
    assert abstract_tree(abstract) == abstract


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="max_to_keep: expected a positive int, got 0"):
        Checkpointer(tmp_path, max_to_keep=0)
    with pytest.raises(ValueError, match="save_interval_steps"):
        Checkpointer(tmp_path, save_interval_steps=-1)
    with pytest.raises(TypeError, match="directory"):
        Checkpointer(None)
    ckpt = Checkpointer(tmp_path)
    with pytest.raises(ValueError, match="step: expected a non-negative int, got -1"):
        ckpt.save(-1, make_tree())
    with pytest.raises(ValueError, match="step: expected a non-negative int"):
        ckpt.save(1.5, make_tree())
    with pytest.raises(TypeError, match="max_to_keep: expected a positive int, got True"):
        Checkpointer(tmp_path, max_to_keep=True)
    ckpt.close()
    ckpt.close()  # idempotent
    with pytest.raises(ValueError, match="is closed"):
        ckpt.save(1, make_tree())


def largest_file(folder):
    files = [os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs]
    return max(files, key=os.path.getsize)


def big_tree(seed):
    return {"w": jax.random.normal(jax.random.key(seed), (64, 64)), "b": jnp.ones(3) * seed}


def test_corrupted_parameter_file_is_detected_and_skipped(tmp_path):
    with Checkpointer(tmp_path, max_to_keep=3) as ckpt:
        for step in (1, 2):
            ckpt.save(step, big_tree(step))
    # Eight bytes overwritten in the middle of step 2's largest data file.
    victim = largest_file(tmp_path / "2")
    with open(victim, "r+b") as f:
        f.seek(os.path.getsize(victim) // 2)
        f.write(b"\xff" * 8)
    target = jax.eval_shape(lambda: big_tree(0))
    with Checkpointer(tmp_path, max_to_keep=3) as ckpt:
        with pytest.raises(CorruptCheckpointError, match=r"checkpoint .*/2 (is corrupted|cannot)"):
            ckpt.restore(2, target)
        step, tree = ckpt.restore_latest(target)  # falls back to the previous good step
        assert step == 1
        assert_tree_equal(tree, big_tree(1))
        assert ckpt.all_steps() == [1, 2]  # nothing deleted unless asked
        # Step 1 damaged as well: one line naming both step directories.
        victim = largest_file(tmp_path / "1")
        with open(victim, "r+b") as f:
            f.seek(os.path.getsize(victim) // 2)
            f.write(b"\x00\x01" * 4)
        with pytest.raises(CorruptCheckpointError) as err:
            ckpt.restore_latest(target)
        msg = str(err.value)
        assert "\n" not in msg and f"{tmp_path}/2" in msg and f"{tmp_path}/1" in msg


def test_missing_record_and_delete_bad(tmp_path):
    with Checkpointer(tmp_path, max_to_keep=3) as ckpt:
        for step in (1, 2, 3):
            ckpt.save(step, big_tree(step))
    os.remove(tmp_path / "integrity" / "3.json")
    with Checkpointer(tmp_path, max_to_keep=3) as ckpt:
        with pytest.raises(CorruptCheckpointError, match="/3 has no readable integrity record"):
            ckpt.restore(3, big_tree(0))
        step, tree = ckpt.restore_latest(big_tree(0), delete_bad=True)
        assert step == 2 and ckpt.all_steps() == [1, 2]
        assert_tree_equal(tree, big_tree(2))
        assert ckpt.save(3, big_tree(7))  # the deleted step can be written again
        ckpt.wait()
        assert_tree_equal(ckpt.restore(3, big_tree(0)), big_tree(7))
        # A target of another architecture is a one-line ValueError, not a fallback.
        with pytest.raises(ValueError, match="different model"):
            ckpt.restore(3, {"w": jnp.zeros((64, 32)), "b": jnp.zeros(3)})


def test_non_finite_state_is_never_saved(tmp_path):
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, big_tree(1))
        bad = {"w": big_tree(2)["w"].at[3, 4].set(jnp.nan), "b": jnp.ones(3)}
        with pytest.raises(NonFiniteError, match=r"/2 not saved: leaf \['w'\] is not finite"):
            ckpt.save(2, bad)
        with pytest.raises(NonFiniteError, match="not finite"):
            ckpt.save(3, Pair(a=jnp.ones(2), b={"h": jnp.array([jnp.inf], jnp.bfloat16)}))
        assert ckpt.save(4, bad, allow_non_finite=True)  # explicit opt-out
        ckpt.wait()
        assert ckpt.all_steps() == [1, 4]
        # The opt-out checkpoint is intact but not finite: restore still refuses it ...
        with pytest.raises(CorruptCheckpointError, match=r"/4 holds non-finite values in \['w'\]"):
            ckpt.restore(4, bad)
        # ... unless asked, and the SHA-256 still matches (NaN bytes round-trip).
        assert np.isnan(np.asarray(ckpt.restore(4, bad, check_finite=False)["w"][3, 4]))
        assert ckpt.restore_latest(bad)[0] == 1


def test_architecture_change_is_one_line(tmp_path):
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, big_tree(1))
        with pytest.raises(ValueError) as err:
            ckpt.restore(1, {"w": jnp.zeros((64, 32)), "b": jnp.zeros(3)})
        msg = str(err.value)
        assert "\n" not in msg and len(msg) < 300
        assert "leaf ['w'] is float32[64, 64] there, float32[64, 32] in the target" in msg
        with pytest.raises(ValueError, match=r"leaf \['extra'\] is not in the checkpoint"):
            ckpt.restore(1, {**big_tree(0), "extra": jnp.zeros(1)})


def test_directory_lock(tmp_path):
    with DirectoryLock(tmp_path / "run", what="workdir") as lock:
        assert open(lock.path).read().strip() == str(os.getpid())
        # A second lock in this process and one in another process are both refused at once.
        with pytest.raises(DirectoryLockedError, match=rf"held by PID {os.getpid()}"):
            DirectoryLock(tmp_path / "run").acquire()
        code = (
            "import sys\n"
            "from inferax.models.checkpoint import DirectoryLock, DirectoryLockedError\n"
            "try:\n"
            f"    DirectoryLock({str(tmp_path / 'run')!r}, what='workdir').acquire()\n"
            "except DirectoryLockedError as e:\n"
            "    print(e); sys.exit(3)\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode == 3, out.stderr
        assert f"workdir {tmp_path / 'run'} is in use" in out.stdout
        assert f"held by PID {os.getpid()}" in out.stdout
    # Released: it can be taken again.
    with DirectoryLock(tmp_path / "run") as again:
        assert open(again.path).read().strip() == str(os.getpid())


@pytest.mark.parametrize(
    "damage", ["item folder deleted", "item folder emptied", "manifest emptied", "metadata emptied"]
)
def test_intact_older_step_restores_whatever_happened_to_a_newer_one(tmp_path, damage):
    # Regression: deleting the newest step's item folder made orbax's manager refuse
    # every later restore ("every step failed its integrity check"), though step 1
    # restored fine on its own.
    with Checkpointer(tmp_path, max_to_keep=3) as ckpt:
        ckpt.save(1, make_tree(1))
        ckpt.save(2, make_tree(2))
    item = os.path.join(tmp_path, "2", "default")
    assert os.path.isdir(item)
    import shutil

    if damage.startswith("item folder"):
        shutil.rmtree(item)
    if damage == "item folder emptied":
        os.makedirs(item)
    if damage != "item folder deleted":  # an empty file where orbax expects JSON / a manifest
        name = {"manifest emptied": "manifest.ocdbt", "metadata emptied": "_METADATA"}
        if damage in name:
            open(os.path.join(item, name[damage]), "w").close()
    with Checkpointer(tmp_path, max_to_keep=3) as ckpt:
        with pytest.raises(CorruptCheckpointError, match="/2"):
            ckpt.restore(2, abstract_tree(make_tree()))
        # The same manager, after the failed read, still restores the intact step ...
        assert_tree_equal(ckpt.restore(1, abstract_tree(make_tree())), make_tree(1))
        # ... and the fallback finds it.
        step, tree = ckpt.restore_latest(abstract_tree(make_tree()))
        assert step == 1
        assert_tree_equal(tree, make_tree(1))
