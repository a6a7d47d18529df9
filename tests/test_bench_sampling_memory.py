"""Tests for benchmarks/sampling_memory.py's CLI: its output paths are checked before any worker runs
(one line naming the option, exit code 2), and --out writes the JSON that its renderer reads."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def sm():
    yield load_benchmark("sampling_memory")
    sys.modules.pop("sampling_memory", None)


_run = subprocess.run


@pytest.fixture
def no_workers(monkeypatch):
    def refuse(cmd, **kwargs):
        assert "--worker" not in cmd, "a worker ran before the output paths were checked"
        return _run(cmd, **kwargs)
    monkeypatch.setattr(subprocess, "run", refuse)


@pytest.mark.parametrize("case", ["out-file", "out-bad-json", "out-figures-file", "json-no-folder", "json-dir",
                                  "grids-out"])
def test_a_bad_output_path_is_refused_before_the_work(sm, tmp_path, capsys, no_workers, case):
    (tmp_path / "afile").write_text("x")
    args, option = {
        "out-file": (["--out", str(tmp_path / "afile")], "--out"),
        "out-bad-json": (["--out", str(tmp_path / "docs")], "--out"),
        "out-figures-file": (["--out", str(tmp_path / "flat")], "--out"),
        "json-no-folder": (["--json", str(tmp_path / "missing" / "m.json")], "--json"),
        "json-dir": (["--json", str(tmp_path)], "--json"),
        "grids-out": (["--grids", "--out", str(tmp_path)], "--out"),
    }[case]
    (tmp_path / "docs" / "figures").mkdir(parents=True)
    (tmp_path / "docs" / "figures" / "sampling_memory.json").write_text("not JSON")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "figures").write_text("a file")
    assert sm.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and option in err, err


def test_out_writes_the_json_its_renderer_reads(sm, tmp_path, monkeypatch, capsys):
    calls = []

    def fake_run(cmd, **kwargs):
        if "--worker" not in cmd:  # platform.processor() runs uname
            return _run(cmd, **kwargs)
        data, n, mode = cmd[cmd.index("--worker") + 1:][:3]
        calls.append((data, int(n), mode))
        row = {"data": data, "n": int(n), "mode": mode, "batch": 64, "steps": 3, "baseline_mb": 260.0 + len(calls),
               "peak_mb": 300.0, "extra_mb": 10.0 * len(calls), "seconds": 0.25, "checksum": 0.0}
        return subprocess.CompletedProcess(cmd, 0, json.dumps(row) + "\n", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    assert sm.main(["--n", "100", "1000", "--batch", "64", "--steps", "3", "--out", str(tmp_path)]) == 0
    assert len(calls) == 2 * 2 * 3
    d = json.loads((tmp_path / "figures" / "sampling_memory.json").read_text())
    assert d["command"].startswith("python benchmarks/sampling_memory.py --n 100 1000")
    assert d["machine"]["threads"] == 1 and len(d["rows"]) == 12
    table = sm.to_markdown(d)
    assert "| 8x8 images | 1,000 | 100.0 MB (0.2 s) | 110.0 MB (0.2 s) | 120.0 MB (0.2 s) |" in table
    assert "`kn.sample_batches(batch_size=64)`" in table and "(261-272 MB after imports" in table
