"""The experiment plumbing: command line with overrides, validation first, workdir locks,
plots, and an import that changes no global state."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from inferax.experiments import common, configs
from inferax.models.checkpoint import (
    CorruptCheckpointError,
    DirectoryLockedError,
    DivergedError,
    NonFiniteError,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]


def clean_env():
    env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "XLA_FLAGS")}
    env["JAX_PLATFORMS"] = "cpu"
    return env


def test_list_and_scalar_overrides_take_effect():
    argv = ["prog", "--config=sway:quick", "--config.nfes=4,8,16",
            "--config.sway_coefs=(-1, 0.5)", "--config.solvers", "euler",
            "--config.toy.lr=1e-3", "--noconfig.toy.use_oracle", "--config.toy.depth=5",
            "--workdir=/tmp/somewhere"]  # fmt: skip
    config, workdir = common.parse_command_line(argv, "sway")
    assert config.nfes == [4, 8, 16] and all(type(n) is int for n in config.nfes)
    assert config.sway_coefs == [-1.0, 0.5] and all(type(c) is float for c in config.sway_coefs)
    assert config.solvers == ["euler"]
    assert config.toy.lr == 1e-3 and config.toy.use_oracle is False and config.toy.depth == 5
    assert workdir == "/tmp/somewhere"
    # Negative control: without overrides the quick config's own values stand.
    default, workdir = common.parse_command_line(["prog", "--config=sway:quick"], "sway")
    assert default.nfes == configs.load("sway:quick").nfes != [4, 8, 16]
    assert default.toy.use_oracle is True and workdir == "runs/sway"


def test_config_names_and_paths():
    assert {"sway", "fkc"} <= set(configs.names())
    shipped = configs.path("fkc")
    assert os.path.isfile(shipped) and shipped.startswith(str(ROOT / "experiments" / "configs"))
    # The file path form keeps working, with a variant and overrides.
    config, _ = common.parse_command_line(
        ["prog", f"--config={shipped}:quick", "--config.num_steps=7"], "fkc"
    )
    assert config.num_steps == 7
    assert config.to_dict() != configs.load("fkc").to_dict()  # quick differs from full
    with pytest.raises(ValueError, match=r"config: expected one of \[.*'sway'.*\].*got 'swayy'"):
        common.parse_command_line(["prog", "--config=swayy:quick"], "sway")
    with pytest.raises(ValueError, match="--config: required"):
        common.parse_command_line(["prog"], "sway")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--config.nfe=4", r"--config.nfe: no such field; expected one of \[.*'nfes'"),
        ("--config.toy=3", "--config.toy: is a section"),
        ("--config.toy.lr=fast", "--config.toy.lr: expected a float like 0.002, got 'fast'"),
        ("--config.nfes=4,eight", "--config.nfes: expected a int like 4, got 'eight'"),
        ("--config.toy.use_oracle=maybe", "expected a bool"),
        ("--config.seed.x=1", "'seed' is not a section"),
    ],
)
def test_bad_overrides_name_the_field(override, message):
    with pytest.raises(ValueError, match=message):
        common.parse_command_line(["prog", "--config=sway:quick", override], "sway")


def test_parse_value_forms():
    assert common.parse_value("[1, 2]", (3,), "f") == (1, 2)
    assert common.parse_value("2", [1.0], "f") == [2.0]
    assert common.parse_value("(euler, heun)", ["midpoint"], "f") == ["euler", "heun"]
    assert common.parse_value("1,2.5", [], "f") == [1, 2.5]
    assert common.parse_value("None", None, "f") is None
    assert common.parse_value("abc", None, "f") == "abc"


FAKE_BINARY = """
import json, sys
from inferax.experiments import common

def validate(config):
    if "rk9" in config.solvers:
        raise ValueError(f"solvers: expected known solvers, got {list(config.solvers)}")

def run(config, workdir):
    with open(sys.argv[-1].split("=", 1)[1] + ".json", "w") as f:
        json.dump(config.to_dict(), f)

if __name__ == "__main__":
    common.main(run, "sway")
"""


def run_fake_binary(tmp_path, *args):
    script = tmp_path / "fake_binary.py"
    script.write_text(textwrap.dedent(FAKE_BINARY))
    out = tmp_path / "out"
    cmd = [sys.executable, str(script), *args, f"--workdir={out}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=clean_env())
    return proc, pathlib.Path(str(out) + ".json")


def test_main_validates_before_run_and_passes_overrides(tmp_path):
    proc, written = run_fake_binary(tmp_path, "--config=sway:quick", "--config.nfes=(4, 8)")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(written.read_text())["nfes"] == [4, 8]
    written.unlink()
    # The module's validate() rejects the override before run() starts.
    proc, written = run_fake_binary(tmp_path, "--config=sway:quick", "--config.solvers=euler,rk9")
    assert proc.returncode != 0 and not written.exists()
    assert "invalid config: solvers: expected known solvers, got ['euler', 'rk9']" in (
        proc.stdout + proc.stderr
    )
    # --help lists --config and --workdir (flags defined by common.main, shown as the binary's).
    proc, _ = run_fake_binary(tmp_path, "--help")
    assert "--config:" in proc.stdout and "--workdir:" in proc.stdout
    assert "toy.num_eval: an int >= 1" in proc.stdout  # the schema, shared with --help


def test_prepare_workdir_locks_the_workdir(tmp_path):
    first = common.prepare_workdir(str(tmp_path), "a.log")
    try:
        with pytest.raises(DirectoryLockedError, match=rf"workdir {tmp_path} is in use.*PID"):
            common.prepare_workdir(str(tmp_path), "b.log")
        assert not (tmp_path / "b.log").exists()  # refused before touching any file
    finally:
        common.close_log(first)
    common.close_log(common.prepare_workdir(str(tmp_path), "b.log"))  # free again


def test_import_changes_no_global_state(tmp_path):
    code = textwrap.dedent("""
        import sys
        import matplotlib
        import inferax.experiments.common, inferax.models, inferax.experiments.configs
        from absl import logging
        assert matplotlib.rcParams._get_backend_or_none() is None, "backend selected"
        assert "matplotlib.pyplot" not in sys.modules, "pyplot imported"
        assert not logging.get_absl_logger().filters, logging.get_absl_logger().filters
        print("clean")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=clean_env(), cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0 and "clean" in proc.stdout, proc.stderr


def test_plots_are_written(tmp_path):
    series = {"a": ([1, 2, 4], [0.3, 0.2, 0.1])}
    for path in [
        common.line_plot(str(tmp_path / "l.png"), [("p", series)], xlabel="x", ylabel="y"),
        common.scatter_grid(str(tmp_path / "s.png"), [("pts", np.zeros((5, 2)))]),
        common.image_grid(str(tmp_path / "i.png"), [("row", np.zeros((2, 8, 8, 1)))]),
    ]:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


FAILING_BINARY = """
import logging
from inferax.experiments import common

def run(config, workdir):
    for _ in range(200):  # what orbax's retries on a damaged checkpoint look like
        logging.getLogger("asyncio").error("Task exception was never retrieved")
    common.close_log(common.prepare_workdir(workdir, "sway.log"))

if __name__ == "__main__":
    common.main(run, "sway")
"""


def test_a_refused_lock_is_one_line_and_exit_status_1(tmp_path):
    # The binary end to end: asyncio's noise stays off the terminal, the lock refusal is
    # one line naming the workdir and the holder, and the exit status is 1.
    from inferax.models.lock import DirectoryLock

    script = tmp_path / "failing_binary.py"
    script.write_text(textwrap.dedent(FAILING_BINARY))
    out = tmp_path / "out"
    out.mkdir()
    cmd = [sys.executable, str(script), "--config=sway:quick", f"--workdir={out}"]
    with DirectoryLock(str(out), what="workdir"):  # held by this process: the run is refused
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=clean_env())
    assert proc.returncode == 1, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr  # no asyncio noise, no traceback
    assert lines[0].startswith(f"sway: FAILED: DirectoryLockedError: workdir {out} is in use")
    assert "PID" in lines[0]


def _raise(error):
    def run(config, workdir):
        raise error

    return run


@pytest.mark.parametrize(
    "error, expected",
    [
        (
            lambda d: NonFiniteError("fit: loss nan at step 7 is not finite"),
            "NonFiniteError: fit: loss nan at step 7 is not finite",
        ),
        (
            lambda d: DivergedError("fit: loss 2.4e+33 at step 9 is above the ceiling 2000\nmore"),
            "DivergedError: fit: loss 2.4e+33 at step 9 is above the ceiling 2000",
        ),
        (
            lambda d: CorruptCheckpointError(
                "no usable checkpoint: every step failed: /ck/2, /ck/1"
            ),
            "CorruptCheckpointError: no usable checkpoint: every step failed: /ck/2, /ck/1",
        ),
        (
            lambda d: OSError(28, "No space left on device", os.path.join(d, "x.npy")),
            "OSError: [Errno 28] No space left on device: '{d}/x.npy'",
        ),
    ],
    ids=["NaN stop", "diverged", "corrupt checkpoint", "full disk"],
)
def test_a_failing_run_is_one_line_with_its_traceback_file(tmp_path, capsys, error, expected):
    with pytest.raises(SystemExit) as exit_info:
        common.run_reporting_failures(_raise(error(str(tmp_path))), None, str(tmp_path), "sway")
    assert exit_info.value.code == 1
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("sway: FAILED: " + expected.format(d=tmp_path)), lines[0]
    assert lines[0].endswith(f"[traceback: {tmp_path}/sway.traceback.txt]")
    assert "Traceback" in (tmp_path / "sway.traceback.txt").read_text()
