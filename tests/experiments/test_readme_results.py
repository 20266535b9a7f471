"""The README's results block is generated from results files, and --check catches a stale one."""

import json
import os

import ml_collections
import pytest

from inferax.experiments import common, flow_scaling, readme_results, stats

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
README = "# inferax\n\nIntro.\n\n## Results\n\n{b}\nold text\n{e}\n\n## After\n\nKept.\n"


def _write_flow_results(results_dir, shift=0.0):
    """A flow_scaling results.json with per-seed values (no training), as run() writes it."""
    raw = {m: {32: {"reward": [-1.0 + 0.5 * (m == "rbf:vp") + shift + 0.01 * i for i in range(9)],
                    "held_out": [-1.0] * 9, "diversity": [5.0] * 9}}
           for m in ("rbf:vp", "rbf:ode")}  # fmt: skip
    raw["base"] = {4: {"reward": [-2.0] * 9, "held_out": [-0.5] * 9, "diversity": [6.0] * 9}}
    config = ml_collections.ConfigDict({"budgets": [32], "num_steps": 4})
    results = {
        "config": config.to_dict(),
        "raw": raw,
        "verdicts": flow_scaling.verdicts(raw, config),
    }
    os.makedirs(os.path.join(results_dir, "flow_scaling"), exist_ok=True)
    common.write_results(os.path.join(results_dir, "flow_scaling"), results)
    return results


def _summaries():
    return {"flow_scaling": flow_scaling.summary, "sway": lambda r: 1 / 0}  # sway: no file


def test_rewrites_only_the_block_and_check_detects_staleness(tmp_path, capsys):
    results_dir, readme = str(tmp_path / "results"), str(tmp_path / "README.md")
    res = _write_flow_results(results_dir)
    with open(readme, "w") as f:
        f.write(README.format(b=readme_results.BEGIN, e=readme_results.END))
    assert not readme_results.update(readme, results_dir, _summaries(), check=True)
    assert not readme_results.update(readme, results_dir, _summaries())  # rewrote it
    text = open(readme).read()
    assert text.startswith("# inferax\n\nIntro.\n\n## Results\n\n" + readme_results.BEGIN)
    assert text.endswith(readme_results.END + "\n\n## After\n\nKept.\n")
    assert "old text" not in text and "results/flow_scaling/results.json" in text
    # Each verdict row of the run is in the block, with its verdict as the summary states it.
    for claim, v in res["verdicts"].items():
        assert f"| {claim} |" in text and stats.describe(v) in text
    assert readme_results.update(readme, results_dir, _summaries(), check=True)
    # A changed results file makes the committed block stale: --check fails, the README stays.
    _write_flow_results(results_dir, shift=-1.0)  # rbf:vp now loses against the base
    assert not readme_results.update(readme, results_dir, _summaries(), check=True)
    assert open(readme).read() == text


def test_main_check_exit_codes(tmp_path, monkeypatch):
    results_dir, readme = str(tmp_path / "r"), str(tmp_path / "README.md")
    _write_flow_results(results_dir)
    with open(readme, "w") as f:
        f.write(README.format(b=readme_results.BEGIN, e=readme_results.END))
    monkeypatch.setattr(readme_results, "default_summaries", _summaries)
    argv = ["--readme", readme, "--results", results_dir, "--variant", "quick"]
    assert readme_results.main([*argv, "--check"]) == 1
    assert readme_results.main(argv) == 0
    assert readme_results.main([*argv, "--check"]) == 0
    with pytest.raises(SystemExit):  # one folder cannot fill every block
        readme_results.main(["--readme", readme, "--results", results_dir])


def test_keys_round_trip_and_errors(tmp_path):
    tree = {2: {"8": [1, {16: "x"}]}, "name": {"-1": 0}}
    assert readme_results.restore_keys(json.loads(json.dumps(tree))) == {
        2: {8: [1, {16: "x"}]}, "name": {-1: 0}}  # fmt: skip
    readme = str(tmp_path / "README.md")
    with open(readme, "w") as f:
        f.write("no markers\n")
    with pytest.raises(ValueError, match="readme: expected one"):
        readme_results.update(readme, str(tmp_path), _summaries())
    with open(readme, "w") as f:
        f.write(README.format(b=readme_results.BEGIN, e=readme_results.END))
    with pytest.raises(FileNotFoundError, match="results_dir"):
        readme_results.update(readme, str(tmp_path / "empty"), _summaries())


@pytest.mark.parametrize("variant", sorted(readme_results.BLOCKS))
def test_repository_readme_agrees_with_committed_results(monkeypatch, variant):
    """Each committed README block equals what the committed results files generate."""
    begin, end, folder = readme_results.BLOCKS[variant]
    readme = os.path.join(ROOT, "README.md")
    with open(readme) as f:
        has_block = begin in f.read()
    assert has_block and os.path.isdir(os.path.join(ROOT, folder)), (
        f"README's {variant} results block or {folder} is missing"
    )
    monkeypatch.chdir(ROOT)  # the block names the files relative to the repository root
    assert readme_results.update("README.md", folder, check=True, markers=(begin, end)), (
        f"README.md's {variant} results block disagrees with {folder}/*/results.json: run "
        "python -m inferax.experiments.readme_results"
    )


def test_demo_report_is_rebuilt_from_results_files(tmp_path):
    """`demo --report_only`: REPORT.md from one experiment's results file and timings.json."""
    import shutil

    from inferax.experiments import demo, flow_scaling

    src = os.path.join(ROOT, readme_results.RESULTS_DIR, "flow_scaling")
    assert os.path.isdir(src), f"{src}: the committed quick run is missing"
    workdir = str(tmp_path / "run")
    shutil.copytree(src, os.path.join(workdir, "flow_scaling"))
    stamp = {"seconds": {"flow_scaling": 12.0}, "date": "2026-01-01 00:00 UTC", "machine": "m"}
    with open(os.path.join(workdir, "timings.json"), "w") as f:
        json.dump(stamp, f)
    text = open(demo.write_report(workdir)).read()
    assert "Run 2026-01-01 00:00 UTC on m; total 0.2 min." in text
    assert "| flow_scaling | 12 |" in text and "## Summary" in text and "sway" not in text
    with open(os.path.join(src, "results.json")) as f:
        res = readme_results.restore_keys(json.load(f))
    for setting, measured, verdict in flow_scaling.summary(res)["rows"]:
        assert f"| {setting} | {measured} | {verdict} |" in text
    with pytest.raises(FileNotFoundError, match="workdir"):
        demo.write_report(str(tmp_path / "empty"))
    assert text.startswith("# inferax demo report\n\n" + demo.HEADINGS["quick"])
    stamp["variant"] = "full"  # a full run says so in its opening line
    with open(os.path.join(workdir, "timings.json"), "w") as f:
        json.dump(stamp, f)
    full = open(demo.write_report(workdir)).read()
    assert full.startswith("# inferax demo report\n\n" + demo.HEADINGS["full"])
    assert full.replace(demo.HEADINGS["full"], demo.HEADINGS["quick"]) == text
    with pytest.raises(ValueError, match="variant: expected one of .*got 'paper'"):
        demo.run_all(str(tmp_path / "x"), str(tmp_path / "c"), variant="paper")


@pytest.mark.parametrize("variant", ["quick", "full"])
def test_committed_report_matches_the_committed_results(tmp_path, variant):
    """results/<variant>/REPORT.md is what its results files and timings.json generate."""
    import shutil

    from inferax.experiments import demo

    src = os.path.join(ROOT, "results", variant)
    assert os.path.isdir(src), f"{src}: the committed {variant} run is missing"
    dst = str(tmp_path / variant)
    shutil.copytree(src, dst)
    assert open(demo.write_report(dst)).read() == open(os.path.join(src, "REPORT.md")).read()
    with open(os.path.join(src, "timings.json")) as f:
        assert json.load(f).get("variant", "quick") == variant


def test_demo_command_line_reaches_the_run_and_the_report(tmp_path):
    """The binary's flags land where they belong: ``--only`` with an unknown name reaches
    ``run_all`` (its ValueError, nothing run), ``--variant=paper`` is refused by absl, and
    ``--report_only`` rebuilds the report (a flag mix-up once sent every run to the
    report path)."""
    import shutil
    import subprocess
    import sys

    def demo(*args):
        cmd = [sys.executable, "-m", "inferax.experiments.demo", *args]
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)

    out = demo(f"--workdir={tmp_path / 'w'}", "--only=bogus")
    assert out.returncode != 0 and "only: expected names from" in out.stderr, out.stderr[-2000:]
    out = demo(f"--workdir={tmp_path / 'w'}", "--variant=paper")
    assert out.returncode != 0 and "variant" in out.stderr, out.stderr[-2000:]
    src = os.path.join(ROOT, "results", "quick", "flow_scaling")
    shutil.copytree(src, str(tmp_path / "r" / "flow_scaling"))
    out = demo(f"--workdir={tmp_path / 'r'}", "--report_only", "--variant=full")
    assert out.returncode == 0 and "wrote" in out.stdout, out.stderr[-2000:]
    assert os.path.exists(tmp_path / "r" / "REPORT.md")
