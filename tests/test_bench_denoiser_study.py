"""benchmarks/denoiser_study.py: its sampling of one denoiser run under another SDE is the library's,
its step rate is the median of the run's log, and its tables show what finished."""

import json
import sys

import numpy as np
import pytest
import torch
from conftest import load_benchmark
from typer.testing import CliRunner

from kinetic.cli.app import app
from kinetic.metrics import fd_digits


@pytest.fixture(scope="module")
def study():
    mod = load_benchmark("denoiser_study")
    yield mod
    sys.modules.pop("denoiser_study", None)


def test_cross_sde_cell_is_the_cli_draw(study, tmp_path):
    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", "--data", "digits", "--model", "mlp", "--model-size", "tiny", "--sde", "vp",
                                 "--parameterization", "denoiser", "--steps", "3", "--batch-size", "16", "--out", str(run),
                                 "--sample-every", "0", "--quiet"])
    assert r.exit_code == 0, r.output
    row = study.fd_of(run / "checkpoint.pt", "hold", 3, 40)
    out = tmp_path / "x.npz"
    r = CliRunner().invoke(app, ["sample", "-c", str(run), "--sde", "hold", "--steps", "3", "--n", "40", "--batch-size",
                                 "500", "--no-clamp", "--quiet", "--out", str(out)])
    assert r.exit_code == 0, r.output
    want = float(fd_digits(torch.from_numpy(np.load(out)["samples"])))
    assert row["sde"] == "hold" and row["nfe"] == 3
    assert row["fd_digits"] == pytest.approx(want, rel=1e-3)


def test_step_rate_and_tables(study, tmp_path):
    rows = [{"step": 10 * i, "examples_per_s": v} for i, v in enumerate([5.0, 100.0, 90.0, 110.0, 95.0], 1)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(map(json.dumps, rows + [{"event": "end"}])) + "\n")
    assert study.step_rate(tmp_path) == 95.0  # the median, not the mean dragged down by the first interval
    assert study.step_rate(tmp_path / "none") is None
    res = {"command": "c", "machine": "m", "n": 10, "solver": "ei", "not_finished": ["hold-x0: not started"],
           "cross_sde": [{"sde": "cld", "steps": 10, "fd_digits": 3.25}], "compare": {}}
    md = study.markdown(res, [10, 20])
    assert "| cld | 3.25 | - |" in md and "hold-x0: not started" in md and "| vp |" not in md


def test_docs_tables_bold_the_best_of_each_column_and_each_pair(study):
    cross = [{"sde": s, "steps": n, "fd_digits": v} for s, n, v in
             (("vp", 10, 6.85), ("vp", 20, 6.52), ("hold", 10, 7.0), ("hold", 20, 3.83), ("psld", 10, 10.2))]
    md = study.cross_sde_markdown({"nfes": [10, 20], "cross_sde": cross}).splitlines()
    assert md[2:] == ["| VP (its own SDE) | **6.85** | 6.52 |", "| HOLD | 7.00 | **3.83** |", "| PSLD | 10.20 | - |"]
    compare = {"cld-denoiser": {"fd_digits": 8.9, "median_examples_per_s": 153.76, "examples_per_s": 160.0},
               "cld-x0": {"fd_digits": 6.92, "median_examples_per_s": None, "examples_per_s": 149.61}}
    md = study.compare_markdown({"compare": compare}).splitlines()
    assert md[2:] == ["| CLD, `--parameterization denoiser` | 8.90 | 153.8 | 160.0 |",
                      "| CLD, x0 (default) | **6.92** | - | 149.6 |"]
