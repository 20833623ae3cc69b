"""The reliability table (docs/reliability.py -> benchmarks/results/reliability.json) renders every
measured row, with the README's lines shortened and Markdown-safe."""
from benchmarks.regions.reliability import SHORT, reliability, table

D = {"environment": {"cpu": "2 cores, X", "date": "2025-01-01"}, "load": 1.0, "minutes": 9.6,
     "rows": [{"case": "a | b", "line": "opcd.train: error: " + "x" * 300, "exit": 1, "seconds": 7.4,
               "tracebacks": 0, "kept": "nothing written"},
              {"case": "Ctrl-C", "line": "opcd.train: stopped by Ctrl-C; resume ...", "exit": 130, "seconds": 71.2,
               "tracebacks": 2, "kept": "checkpoints 1"}]}


def test_full_table_keeps_each_line_and_readme_region_shortens_it():
    full = table(D).splitlines()
    assert len(full) == 4 and "x" * 300 in full[2] and "a \\| b" in full[2] and "| 1 | 7 s |" in full[2]
    assert "(and 2 traceback(s))" in full[3]
    short = reliability(D)
    assert "x" * 300 not in short and ("x" * (SHORT - 19)) + " …" in short
    assert "2 cases" in short and "load average 1.0" in short and "docs/reliability.md" in short
