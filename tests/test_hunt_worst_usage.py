"""The hunt's worst usage in results.json and on the page: ``nutshell report`` and ``nutshell run``
copy the reports folder's hunt.json into its results.json (validated by the results schema), and
the page shows concepts × hunted backends, the findings and their bundles."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_report import results_doc, section, write
from test_report_browser import CHROMIUM, DevTools, check_page, screenshots

from nutshell import spec as spec_mod
from nutshell.conformance import merge, report, schema
from nutshell.conformance.results import load_results
from nutshell.errors import SpecError

VERSION = spec_mod.load().version
LSTM_BUNDLE = "reports/hunt/torch-lstm-wrong-20260101T000500"
FFT_BUNDLE = "reports/hunt/onnx-conv2d_fft-crash-20260101T001000"


def call(concept: str, mode: str, dims: dict, attrs: dict | None = None, seed: int = 12, scale: float = 1.0) -> dict:
    """A drawn call as hunt.json holds it (hunt_cases.Case.to_json)."""
    return {"concept": concept, "mode": mode, "dtype": "float32", "dims": dims, "attrs": attrs or {}, "seed": seed,
            "scale": scale}


CONV = call("conv2d", "vjp", {"N": 1, "Cg": 25, "Og": 24, "kh": 4, "kw": 4, "H": 7, "W": 2, "bias": 0},
            {"stride": [1, 1], "pads": [2, 1, 1, 1], "dilation": [3, 1], "groups": 1}, seed=4711)


def hunt_doc() -> dict:
    """A hunt.json as ``nutshell hunt`` on torch, then on onnx, writes it: torch with a wrong lstm
    (bound usage 344) and an exact relu, onnx with a crash in conv2d_fft."""
    torch = {"device": "cpu", "versions": {"numpy": "2.4.6", "torch": "2.13.0"}, "seed": 1, "spec_version": VERSION,
             "budget_s": 600.0, "elapsed_s": 600.1, "calls": 7440, "finished": "2026-01-01T00:10:00+00:00",
             "worst_usage": {
                 "conv2d": {"usage": 0.4991, "calls": 622, "call": CONV,
                            "case": "conv2d vjp float32 x[1, 25, 7, 2] w[24, 25, 4, 4] pads=[2, 1, 1, 1]"},
                 "relu": {"usage": 0.0, "calls": 415, "case": "", "call": None},
                 "lstm": {"usage": 0.4127, "calls": 98, "case": "lstm vjp float32 x[10, 1, 18]",
                          "call": call("lstm", "vjp", {"T": 10, "N": 1, "I": 18, "Hd": 18})}},
             "found": [{"kind": "wrong", "usage": 344.0, "bundle": LSTM_BUNDLE, "fault": "backend", "library": None,
                        "library_tried": False, "script_fails": True, "first_found_s": 81.8,
                        "case": call("lstm", "vjp", {"T": 10, "N": 1, "I": 18, "Hd": 18}, seed=170871, scale=30.0),
                        "message": "gradient 'w_hh': 4/1296 elements (0.3%) outside the bound; bound usage 344"}]}
    onnx = {"device": "cpu", "versions": {"onnxruntime": "1.32.0"}, "seed": 3, "budget_s": 300.0, "calls": 2746,
            "finished": "2026-01-01T00:20:00+00:00",
            "worst_usage": {"conv2d": {"usage": 0.3125, "calls": 100, "case": "conv2d forward float32 x[2, 3, 5, 5]"}},
            "found": [{"kind": "crash", "usage": None, "bundle": FFT_BUNDLE, "fault": "library",
                       "library": "onnxruntime", "message": "worker crash (signal SIGFPE)",
                       "case": call("conv2d_fft", "forward", {"N": 1, "C": 11})}]}
    return {"kind": "nutshell-hunt", "backends": {"torch": torch, "onnx": onnx}}


def reports_with(tmp_path: Path, hunt: dict | None) -> Path:
    """A reports folder as ``nutshell run`` leaves it, with ``hunt`` as its hunt.json when given."""
    reports = tmp_path / "reports"
    reports.mkdir()
    write(reports / "results.json", results_doc("box-a", pictures=False))
    if hunt is not None:
        write(reports / "hunt.json", hunt)
    return reports


class Table(HTMLParser):
    """The rows of the page's table ``id``: per row its cells, each with its tag, attributes, link and
    text as a reader sees it (white space collapsed)."""

    def __init__(self, page: str, table_id: str):
        super().__init__(convert_charrefs=True)
        self.table_id, self.depth, self.rows = table_id, 0, []
        self.feed(page)
        for cell in (c for r in self.rows for c in r["cells"]):
            cell["text"] = " ".join(cell["text"].split())

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and (self.depth or a.get("id") == self.table_id):
            self.depth += 1
        elif self.depth and tag == "tr":
            self.rows.append({"attrs": a, "cells": []})
        elif self.depth and tag in ("td", "th"):
            self.rows[-1]["cells"].append({"tag": tag, "attrs": a, "text": ""})
        elif self.depth and tag == "a" and self.rows[-1]["cells"]:
            self.rows[-1]["cells"][-1]["href"] = a["href"]
        elif self.depth and tag == "br":
            self.handle_data(" ")

    def handle_endtag(self, tag):
        if tag == "table" and self.depth:
            self.depth -= 1

    def handle_data(self, data):
        if self.depth and self.rows and self.rows[-1]["cells"]:
            self.rows[-1]["cells"][-1]["text"] += data


def usage_matrix(page: str) -> dict[tuple[str, str], dict]:
    """(concept, hunt column) -> its cell, from the page's worst-usage table."""
    head, *rows = Table(page, "hunt-usage").rows
    names = [c["text"] for c in head["cells"][1:]]
    return {(r["cells"][0]["text"], name): cell for r in rows for name, cell in zip(names, r["cells"][1:], strict=True)}


def test_results_json_carries_the_hunt_and_validates(tmp_path):
    reports = reports_with(tmp_path, hunt_doc())
    before = json.loads((reports / "results.json").read_text())
    report.write_from_reports_dir(reports)
    after = json.loads((reports / "results.json").read_text())
    assert after["hunt"] == hunt_doc()
    assert {k: v for k, v in after.items() if k != "hunt"} == before      # every other field as it was
    schema.validate(after, "resultsFile", "results.json")
    worst = load_results(reports / "results.json", VERSION)["hunt"]["backends"]["torch"]["worst_usage"]
    assert worst["conv2d"]["usage"] == 0.4991 and worst["conv2d"]["call"]["seed"] == 4711


def test_the_page_shows_the_worst_usage_per_backend_and_concept(tmp_path):
    page = report.write_from_reports_dir(reports_with(tmp_path, hunt_doc())).read_text()
    cells = usage_matrix(page)
    assert {name for _, name in cells} == {"onnx", "torch"}
    conv = cells[("conv2d", "torch")]
    assert conv["attrs"]["class"] == "good" and conv["text"].split() == ["0.499", "622", "calls"], conv
    assert "conv2d vjp float32 x[1, 25, 7, 2]" in conv["attrs"]["title"] and "seed 4711" in conv["attrs"]["title"]
    assert cells[("conv2d", "onnx")]["text"].split() == ["0.312", "100", "calls"]
    assert "every result exact" in cells[("relu", "torch")]["attrs"]["title"]
    lstm = cells[("lstm", "torch")]                    # a finding: its usage, red, linked to its row
    assert lstm["attrs"]["class"] == "bad" and lstm["text"].split()[:2] == ["344", "finding:"]
    assert "worst over 98 passing calls: 0.413" in lstm["attrs"]["title"]
    fft = cells[("conv2d_fft", "onnx")]                # a crash has no usage: how it failed
    assert fft["attrs"]["class"] == "bad" and fft["text"].split()[0] == "crash"
    assert cells[("lstm", "onnx")]["attrs"]["class"] == "none"
    findings = {r["attrs"]["id"]: [c["text"] for c in r["cells"]] for r in Table(page, "hunt-findings").rows[1:]}
    assert findings[lstm["href"][1:]][:4] == ["torch", "lstm", "wrong", "344"]
    assert findings[lstm["href"][1:]][-1] == LSTM_BUNDLE and "seed 170871" in findings[lstm["href"][1:]][4]
    assert findings[fft["href"][1:]][-2:] == ["onnxruntime", FFT_BUNDLE]


def test_the_hunts_settings_are_shown_and_nothing_is_dumped(tmp_path):
    page = report.write_from_reports_dir(reports_with(tmp_path, hunt_doc())).read_text()
    head, *rows = Table(page, "hunt-runs").rows
    hunts = {r["cells"][0]["text"]: dict(zip([c["text"] for c in head["cells"]], [c["text"] for c in r["cells"]],
                                             strict=True)) for r in rows}
    assert hunts["torch"] | hunts["onnx"] and {k: hunts["torch"][k] for k in ("budget", "seed", "calls", "findings")} \
        == {"budget": "10 min", "seed": "1", "calls": "7,440", "findings": "1"}
    assert hunts["torch"]["finished"] == "2026-01-01T00:10:00+00:00" and hunts["torch"]["spec"] == VERSION
    assert hunts["torch"]["versions"] == "numpy 2.4.6, torch 2.13.0" and hunts["onnx"]["spec"] == "—"
    assert hunts["onnx"]["budget"] == "5 min" and hunts["onnx"]["spent"] == "—"
    shown = section(page, "hunt")
    assert '"concept"' not in shown and "&#34;" not in shown and "{" not in shown
    assert '<a href="#hunt">Hunt</a>' in page


def test_a_run_without_a_hunt_still_works(tmp_path):
    reports = reports_with(tmp_path, None)
    before = (reports / "results.json").read_text()
    page = report.write_from_reports_dir(reports).read_text()
    assert (reports / "results.json").read_text() == before
    assert "hunt" not in json.loads(before)
    assert "not run" in section(page, "hunt") and 'id="hunt-usage"' not in page


def test_a_broken_hunt_json_is_left_out_with_a_warning(tmp_path, capsys):
    doc = hunt_doc()
    doc["backends"]["torch"]["worst_usage"]["conv2d"]["usage"] = "high"
    reports = reports_with(tmp_path, doc)
    page = report.write_from_reports_dir(reports).read_text()
    err = capsys.readouterr().err
    assert "leaves out the hunt" in err and "field backends.torch.worst_usage.conv2d.usage: expected" in err, err
    assert "hunt" not in json.loads((reports / "results.json").read_text())
    assert "not run" in section(page, "hunt")


def test_a_results_file_with_a_bad_hunt_is_refused_naming_the_field(tmp_path):
    doc = results_doc("box-a", pictures=False) | {"hunt": hunt_doc()}
    doc["hunt"]["backends"]["onnx"]["found"][0]["kind"] = "odd"
    with pytest.raises(SpecError, match=r"field hunt\.backends\.onnx\.found\[0\]\.kind: 'odd' is not one of"):
        load_results(write(tmp_path / "results.json", doc), VERSION)


def test_merged_shards_keep_the_latest_hunt_of_each_backend(tmp_path):
    older, newer = hunt_doc(), hunt_doc()
    older["backends"]["torch"]["finished"] = "2025-12-31T00:00:00+00:00"
    del newer["backends"]["onnx"]
    newer["backends"]["torch"]["calls"] = 99
    for i, hunt in ((1, older), (2, newer)):
        doc = results_doc("box-a", pictures=False) | {"hunt": hunt}
        doc["selection"] = {"backends": None, "k": None, "device": None, "spec_sha256": "x", "shard": f"{i}/2"}
        doc["results"] = doc["results"][i - 1::2]
        write(tmp_path / f"s{i}.json", doc)
    p = argparse.ArgumentParser()
    merge.add_arguments(p)
    page = tmp_path / "x" / "index.html"
    args = p.parse_args([str(tmp_path / "s1.json"), str(tmp_path / "s2.json"), "-o", str(page)])
    assert merge.run(args) == 0
    merged = json.loads((tmp_path / "x" / "results.json").read_text())
    schema.validate(merged, "resultsFile", "merged")
    assert merged["hunt"]["backends"]["torch"]["calls"] == 99 and merged["hunt"]["backends"]["onnx"]["calls"] == 2746
    assert usage_matrix(page.read_text())[("lstm", "torch")]["text"].startswith("344")


@pytest.mark.slow
def test_a_real_hunt_reaches_results_json_and_the_page(tmp_path):
    """``nutshell hunt`` on torch for a few seconds, then ``nutshell report`` in its folder."""
    pytest.importorskip("torch")
    reports = reports_with(tmp_path, None)
    cli = [sys.executable, "-m", "nutshell.cli"]
    r = subprocess.run([*cli, "hunt", "-b", "torch", "--concept", "sigmoid", "--budget", "12s", "--seed", "0"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([*cli, "report"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    hunt = load_results(reports / "results.json", VERSION)["hunt"]["backends"]["torch"]
    worst = hunt["worst_usage"]["sigmoid"]
    assert hunt["spec_version"] == VERSION and hunt["calls"] >= worst["calls"] > 0 and 0 < worst["usage"] <= 1
    assert worst["call"]["concept"] == "sigmoid" and worst["case"].startswith(f"sigmoid {worst['call']['mode']}")
    cell = usage_matrix((reports / "index.html").read_text())[("sigmoid", "torch")]
    assert cell["text"].split() == [report.fmt(worst["usage"]), report.fmt(worst["calls"]), "calls"]


@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason=f"headless Chromium not found at {CHROMIUM}")
def test_the_hunt_section_fits_the_window_and_its_links_land(tmp_path):
    page = report.write_from_reports_dir(reports_with(tmp_path, hunt_doc()))
    browser = DevTools(tmp_path / "profile")
    try:
        check_page(browser, page)
        links = browser.evaluate("[...document.querySelectorAll('#hunt-usage a')].map(a => a.getAttribute('href'))")
        assert len(links) == 2 and all(browser.evaluate(f"document.getElementById('{h[1:]}').tagName") == "TR"
                                       for h in links)
        screenshots(browser, "hunt", ("hunt",))
    finally:
        browser.close()
