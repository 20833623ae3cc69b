"""The documents' figures come from committed JSON: every rendered region re-renders to exactly what
is committed, and no result-like figure stands outside one (``benchmarks/render_docs.py``)."""
import json
import re

import pytest

import benchmarks.regions  # noqa: F401  (registers every region)
from benchmarks import render_docs
from benchmarks.common import regions as G
from benchmarks.common.regions import fill, outside, region, render, spans, wrap

# ---------------------------------------------------------------------------------------------
# What counts as a result figure outside a rendered region
# ---------------------------------------------------------------------------------------------
# Percentages, "×"/"x" ratios written against the number (1.28×, 2x), and times (3 min 14 s, ~80 s,
# 25 minutes, 14.1 s/step). Not matched: products ("8 prompts x 1 sample", "3x3", "6 × 135M").
FIGURE = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*(?:%|×|x\b|\s?(?:min|minutes?|hours?|h|seconds?|sec|s|ms)\b)")
# A number after a comparison sign is a target or a bound, not a result ("≥ 0.9×", "< 5%").
THRESHOLD = re.compile(r"(?:[≥≤<]=?|(?<!-)>=?|target|targets)\s*~?$")  # "->" is an arrow, not a bound
# Non-result numbers that look like results, each with why it is one.
ALLOWED = {
    "95% interval": "the confidence level of an interval",
    "95% intervals": "the confidence level of an interval",
    "95% Wilson": "the confidence level of an interval",
}
NOT_A_RESULT = re.compile(r"<!-- not-a-result: [^>]+ -->(.*?)<!-- /not-a-result -->", re.S)


def result_figures(text: str) -> list[tuple[int, str]]:
    """``(line, figure)`` of every result-like figure in ``text`` outside rendered regions and outside
    ``not-a-result`` blocks (on-paper estimates, quoted external figures)."""
    blanked = NOT_A_RESULT.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    found = []
    for n, line in outside(blanked):
        if "<!--" in line:
            continue
        for m in FIGURE.finditer(line):
            start = line[:m.start()]
            if THRESHOLD.search(start.rstrip()) or any(line[m.start():].startswith(a) for a in ALLOWED):
                continue
            found.append((n, m.group(0)))
    return found


def test_the_scan_catches_result_figures_and_leaves_targets():
    flagged = [f for _, f in result_figures(
        "reaches 98.7% in 3 min 14 s (1.28× TRL, ~3.5 min, 25 minutes, 14.1 s/step, 0.94x, 2% -> 100%)\n"
        "target ≥ 0.9×, < 5% of a step, ≥ 2x; 95% interval; 8 prompts x 1 sample; 3x3 lakes; 6 × 135M\n"
        "<!-- rendered: r -->\n100% inside a region\n<!-- /rendered -->\n"
        "<!-- not-a-result: on paper -->\n≈ 310 s a step\n<!-- /not-a-result -->\n")]
    assert flagged == ["98.7%", "3 min", "14 s", "1.28×", "3.5 min", "25 minutes", "14.1 s", "0.94x", "2%", "100%"]


# ---------------------------------------------------------------------------------------------
# The committed documents
# ---------------------------------------------------------------------------------------------
def test_documents_are_what_their_json_renders():
    diffs = render_docs.stale()
    assert not diffs, "run `python -m benchmarks.render_docs`:\n" + "\n".join(diffs.values())


@pytest.mark.parametrize("doc", render_docs.documents(), ids=lambda p: str(p.relative_to(render_docs.ROOT)))
def test_no_result_figure_outside_a_rendered_region(doc):
    found = result_figures(doc.read_text())
    assert not found, (f"{doc.name}: result-like figures outside rendered regions (render them from a JSON, "
                       f"or mark an estimate <!-- not-a-result: why -->): {found}")


def test_every_document_region_is_registered():
    for doc in render_docs.documents():
        for *_, name, _arg, _prefix in spans(doc.read_text()):
            assert name in G.REGIONS, f"{doc.name}: unknown region {name!r}"


def test_readme_keeps_the_quickstart_and_status_regions():
    names = {s[2] for s in spans((render_docs.ROOT / "README.md").read_text())}
    assert {"quickstart", "status", "vs_trl_smollm2_summary", "reproduction_toy_summary"} <= names


# ---------------------------------------------------------------------------------------------
# The machinery, on synthetic documents and results
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setattr(G, "REGIONS", dict(G.REGIONS))  # registrations made here do not leak

    @region("t_rate", "t.json")
    def _rate(d):
        return f"rate {100 * d['rate']:.1f}%\nsecond line"

    @region("t_opt", "t.json", "absent.json?")
    def _opt(d, a):
        return f"{d['rate']} {a}"

    @region("t_arg", "t_{arg}.json")
    def _arg(d, arg):
        return f"{arg}: {d['rate']}"

    (tmp_path / "t.json").write_text(json.dumps({"rate": 0.5}))
    (tmp_path / "t_x.json").write_text(json.dumps({"rate": 0.25}))
    return tmp_path


def test_fill_replaces_bodies_with_what_the_json_renders(results):
    def r(name, arg):
        return render(name, arg, results)

    doc = "a\n<!-- rendered: t_rate -->\nstale 12%\n<!-- /rendered -->\nb\n"
    assert fill(doc, r) == "a\n<!-- rendered: t_rate -->\nrate 50.0%\nsecond line\n<!-- /rendered -->\nb\n"
    assert fill(fill(doc, r), r) == fill(doc, r)  # idempotent: a rendered document is up to date
    yaml = "# <!-- rendered: t_rate -->\n# <!-- /rendered -->\nkey: 1\n"
    assert fill(yaml, r) == "# <!-- rendered: t_rate -->\n# rate 50.0%\n# second line\n# <!-- /rendered -->\nkey: 1\n"
    with_arg = "<!-- rendered: t_arg x -->\n<!-- /rendered -->"
    assert fill(with_arg, r) == "<!-- rendered: t_arg x -->\nx: 0.25\n<!-- /rendered -->"
    assert render("t_opt", None, results) == "0.5 None"  # an optional source that does not exist


def test_a_missing_source_renders_not_measured_yet(results):
    G.REGIONS["t_missing"] = G.Region("t_missing", ("nope.json",), lambda d: "never")
    assert render("t_missing", None, results) == "_Not measured yet: `benchmarks/results/nope.json` does not exist._"
    assert "Not measured yet" in render("quickstart", None, results)  # the README's quickstart before its run


def test_malformed_regions_are_refused(results):
    with pytest.raises(ValueError, match="not closed"):
        spans("<!-- rendered: t_rate -->\nx\n")
    with pytest.raises(ValueError, match="without a region"):
        spans("x\n<!-- /rendered -->\n")
    with pytest.raises(KeyError, match="no rendered region named 'nope'"):
        render("nope", None, results)
    # a marker quoted inside a sentence is not a marker
    assert spans("use `<!-- rendered: x -->` and `<!-- /rendered -->` like this\n") == []


def test_wrap_writes_a_region_that_fills_to_itself(results):
    text = wrap("t_rate", "rate 50.0%\nsecond line")
    assert fill(text, lambda n, a: render(n, a, results)) == text


def test_quickstart_renders_ranges_over_the_recorded_runs(tmp_path):
    from benchmarks.record_quickstart import add, run_record

    rows = [{"step": 0, "eval/distilled/none": 0.016, "eval/distilled/system": 1.0, "eval/other/system": 0.996},
            {"step": 200, "eval/distilled/none": 1.0, "eval/distilled/system": 0.969,
             "eval/distilled/harm_system": 0.031, "eval/other/system": 0.987}]
    q = add({}, "run", run_record(rows, 666.0, 200.0, True), "2 cores, AMD EPYC", 64)
    rows[-1]["eval/other/system"] = 0.98
    q = add(q, "run", run_record(rows, 351.0, 0.0, False), "2 cores, AMD EPYC", 64)
    (tmp_path / "quickstart.json").write_text(json.dumps(q))
    md = render("quickstart", None, tmp_path)
    assert "| other 7 rules, with their system prompts | 99.6% | 98.0–98.7% |" in md
    assert "from a fresh clone 11 min 06 s (setup 3 min 20 s); again, set up already 5 min 51 s" in md
    assert "2 cores, AMD EPYC" in md and "2 runs of 200 steps, 64 test prompts per rule" in md
    assert "99.6% -> 98.0–98.7%" in render("toy_opcd_comment", None, tmp_path)
    with pytest.raises(ValueError, match="one machine per file"):
        add(q, "run", q["runs"][0], "another machine", 64)
    with pytest.raises(ValueError, match="before and after"):
        run_record(rows[:1], 1.0, 0.0, True)


def test_check_mode_reports_a_stale_document(tmp_path, monkeypatch):
    doc = tmp_path / "README.md"
    doc.write_text("<!-- rendered: experience_smollm2 -->\n5.0% typed by hand\n<!-- /rendered -->\n")
    monkeypatch.setattr(render_docs, "documents", lambda root=None: [doc])
    diffs = render_docs.stale(tmp_path)
    assert list(diffs) == [doc] and "-5.0% typed by hand" in diffs[doc]
    assert render_docs.main(["--check"]) == 1
    assert render_docs.main([]) == 0 and render_docs.stale(tmp_path) == {}
