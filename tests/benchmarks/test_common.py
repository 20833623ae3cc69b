"""benchmarks.common: the subprocess runner, number formatting, memory measurement and the TRL
reference choice, on small real inputs."""
import sys

import pytest
import torch

from benchmarks.common import memory, report, runs, timing
from benchmarks.common.process import read_jsonl, run_process


def test_run_process_stamps_watched_rows_and_reports_failures(tmp_path):
    watch = tmp_path / "metrics.jsonl"
    code = ("import json, time\n"
            f"f = open({str(watch)!r}, 'a')\n"
            "for i in (1, 2):\n"
            "    f.write(json.dumps({'step': i}) + '\\n'); f.flush(); time.sleep(0.6)\n")
    rec = run_process([sys.executable, "-c", code], tmp_path / "log", watch=watch)
    assert set(rec["step_stamps"]) == {"1", "2"}
    assert rec["t_start"] <= rec["step_stamps"]["1"] < rec["step_stamps"]["2"] <= rec["t_end"] + 0.5
    assert read_jsonl(watch) == [{"step": 1}, {"step": 2}]
    with pytest.raises(RuntimeError, match=r"(?s)exit 3.*boom"):
        run_process([sys.executable, "-c", "print('boom'); raise SystemExit(3)"], tmp_path / "log2")
    with pytest.raises(TimeoutError):
        run_process([sys.executable, "-c", "import time; time.sleep(30)"], tmp_path / "log3", timeout=0.5)


def test_trl_runs_go_through_the_worker_module(tmp_path):
    assert runs.trl_command(tmp_path / "job.json")[1:] == ["-m", "benchmarks.common.trl_worker",
                                                          str(tmp_path / "job.json")]


def test_formatting():
    assert (report.pct(0.5), report.pct(None), report.num(1.234), report.num(3.0, "{:.0f}")) == ("50.0%", "–", "1.23", "3")
    assert report.mmss(125.4) == "2 min 05 s" and report.mmss(None) == "–"


def test_fastest_trl():
    ms = {"trl": {"timing": {"s_per_step": 3.0}}, "trl_vllm": {"timing": {"s_per_step": 2.0}},
          "opcd": {"timing": {"s_per_step": 1.0}}}  # opcd is never the TRL reference
    assert timing.fastest_trl(ms) == "trl_vllm"
    ms["trl_vllm"]["timing"]["s_per_step"] = None  # not timed: the other one
    assert timing.fastest_trl(ms) == "trl"
    assert timing.fastest_trl({"opcd": ms["opcd"]}) is None


def test_peak_of_an_allocation_timeline():
    allocs = [(0, 100, 1, "a"), (1, 50, 2, "b"), (2, -100, 1, "a"), (3, 80, 3, "c"), (4, -50, 2, "b")]
    peak, live = memory.peak_of(allocs)
    assert peak == 150 and live == {"a": {"bytes": 100, "count": 1}, "b": {"bytes": 50, "count": 1}}


def test_profile_peak_sees_a_temporary_tensor():
    def fn():
        x = torch.ones(1 << 20)  # 4 MiB, freed before the return
        return float(x.sum())

    result, peak, live = memory.profile_peak(fn)
    assert result == float(1 << 20)
    assert 4 << 20 <= peak < 8 << 20 and any(g["bytes"] >= 4 << 20 for g in live.values())
