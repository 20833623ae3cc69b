"""opcd.sweeps: the results table of a Hydra multirun directory, on job folders written here."""
import csv
import io
import json

import pytest

from opcd import sweeps


def make_job(root, name, overrides, final=None, metrics=None, num=None, raw_metrics=None):
    """A job folder as opcd.train under Hydra multirun leaves it."""
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if num is not None:
        (d / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  job:\n    name: train\n    num: {num}\n")
    if final is not None:
        (d / "final_metrics.json").write_text(json.dumps(final))
    if metrics is not None or raw_metrics is not None:
        text = raw_metrics if raw_metrics is not None else "".join(json.dumps(m) + "\n" for m in metrics)
        (d / "metrics.jsonl").write_text(text)
    return d


def steps(n, seconds=2.0):
    """metrics.jsonl rows: the step-0 evaluation, then n training steps."""
    return [{"step": 0, "eval/distilled/none": 0.0}] + [
        {"step": i, "loss/kl": 1.0 / i, "step/seconds": seconds} for i in range(1, n + 1)]


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "multirun" / "2026-01-01_00-00-00"
    common = ["logger=none", "steps=3"]
    make_job(root, "0_algo.lr=1e-06,algo.nca_beta=0", [*common, "algo.lr=1e-6", "algo.nca_beta=0"],
             final={"eval/distilled/none": 0.5, "eval/other/system": 0.97}, metrics=steps(3, 2.0), num=0)
    make_job(root, "1_algo.lr=1e-06,algo.nca_beta=0.5", [*common, "algo.lr=1e-6", "algo.nca_beta=0.5"],
             final={"eval/distilled/none": 0.75, "eval/other/system": 0.98, "eval/extra": 1.0},
             metrics=steps(3, 4.0), num=1)
    # Killed mid-run: no final metrics, a half-written last line.
    make_job(root, "2_algo.lr=5e-06,algo.nca_beta=0", [*common, "algo.lr=5e-6", "algo.nca_beta=0"],
             raw_metrics="".join(json.dumps(m) + "\n" for m in steps(2, 3.0)) + '{"step": 3, "loss', num=2)
    # Never started writing metrics; number only in the folder name.
    make_job(root, "10_algo.lr=5e-06,algo.nca_beta=0.5", [*common, "algo.lr=5e-6", "algo.nca_beta=0.5"])
    (root / "multirun.yaml").write_text("hydra: {}\n")  # Hydra's sweep-level file is not a job
    return root


def test_find_jobs_in_job_order(sweep):
    assert [d.name.split("_")[0] for d in sweeps.find_jobs(sweep)] == ["0", "1", "2", "10"]


def test_load_job_reads_overrides_final_and_progress(sweep):
    jobs = [sweeps.load_job(d) for d in sweeps.find_jobs(sweep)]
    assert jobs[0].overrides == ["logger=none", "steps=3", "algo.lr=1e-6", "algo.nca_beta=0"]
    assert jobs[0].final == {"eval/distilled/none": 0.5, "eval/other/system": 0.97}
    assert (jobs[0].steps, jobs[0].seconds_per_step) == (3, 2.0)
    assert jobs[2].final is None and (jobs[2].steps, jobs[2].seconds_per_step) == (2, 3.0)
    assert jobs[3].final is None and (jobs[3].num, jobs[3].steps, jobs[3].seconds_per_step) == (10, 0, None)


def test_parse_and_progress_are_pure():
    rows = sweeps.parse_metrics_lines('{"step": 0}\n\n{"step": 1, "step/seconds": 1.5}\n{"step": 2, "step/sec')
    assert rows == [{"step": 0}, {"step": 1, "step/seconds": 1.5}]
    assert sweeps.progress(rows) == (1, 1.5)
    assert sweeps.progress([]) == (0, None)


def test_table_shows_varying_overrides_every_metric_and_incomplete_jobs(sweep):
    jobs = [sweeps.load_job(d) for d in sweeps.find_jobs(sweep)]
    header, rows, shared = sweeps.build_table(jobs)
    assert header == ["job", "overrides", "status", "eval/distilled/none", "eval/extra", "eval/other/system",
                      "steps", "s/step"]
    assert shared == ["logger=none", "steps=3"]
    assert rows[0] == [0, "algo.lr=1e-6 algo.nca_beta=0", "done", 0.5, None, 0.97, 3, 2.0]
    assert rows[1] == [1, "algo.lr=1e-6 algo.nca_beta=0.5", "done", 0.75, 1.0, 0.98, 3, 4.0]
    assert rows[2] == [2, "algo.lr=5e-6 algo.nca_beta=0", "incomplete", None, None, None, 2, 3.0]
    assert rows[3] == [10, "algo.lr=5e-6 algo.nca_beta=0.5", "incomplete", None, None, None, 0, None]

    md = sweeps.to_markdown(header, rows, shared).splitlines()
    assert md[0] == "Shared overrides: `logger=none steps=3`"
    assert md[2].startswith("| job | overrides | status | eval/distilled/none |") and md[3].startswith("| --- |")
    assert md[4] == "| 0 | algo.lr=1e-6 algo.nca_beta=0 | done | 0.5 | — | 0.97 | 3 | 2 |"
    assert md[6] == "| 2 | algo.lr=5e-6 algo.nca_beta=0 | incomplete | — | — | — | 2 | 3 |"
    assert len(md) == 8


def test_markdown_escapes_pipes_and_single_job_keeps_all_overrides(tmp_path):
    job = sweeps.load_job(make_job(tmp_path, "0_x", ["logger.name=a|b"], final={"m": 1 / 3}, metrics=steps(1)))
    header, rows, shared = sweeps.build_table([job])
    assert shared == [] and rows[0][1] == "logger.name=a|b"
    assert "| logger.name=a\\|b | done | 0.3333 |" in sweeps.to_markdown(header, rows, shared)


def test_cli_writes_markdown_and_csv(sweep, tmp_path, capsys):
    out = tmp_path / "report" / "table.md"
    assert sweeps.main([str(sweep), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert out.read_text() == printed.out and "4 jobs (2 done, 2 incomplete)" in printed.err
    rows = list(csv.reader(io.StringIO(out.with_suffix(".csv").read_text())))
    assert rows[0][:3] == ["job", "overrides", "status"] and len(rows) == 5
    assert rows[1][1] == "logger=none steps=3 algo.lr=1e-6 algo.nca_beta=0"  # the CSV keeps every override
    assert rows[3][2] == "incomplete" and rows[3][3] == ""
    # Without --out: Markdown on stdout, the CSV inside the sweep directory.
    assert sweeps.main([str(sweep)]) == 0
    assert (sweep / "results.csv").exists()


def test_cli_refuses_a_directory_without_jobs(tmp_path):
    with pytest.raises(SystemExit) as e:
        sweeps.main([str(tmp_path)])
    assert e.value.code == 2
