"""The `kinetic` command: version, info, and one-line errors with exit code 2."""

import json

from typer.testing import CliRunner

import kinetic as kn
from kinetic.cli.app import app

runner = CliRunner()


def test_version():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and kn.__version__ in r.stdout


def test_info_tables_and_json():
    r = runner.invoke(app, ["info", "--sde", "hold"])
    assert r.exit_code == 0, r.output
    assert "drift A" in r.stdout and "stationary covariance" in r.stdout
    r = runner.invoke(app, ["info", "--order", "4", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["order"] == 4 and data["name"] == "langevin"
    assert abs(data["mixing_rate_tau"] - 5**0.5) < 1e-9
    r = runner.invoke(app, ["info", "--sde", "cld", "--param", "m_inv=1", "--json"])
    data = json.loads(r.stdout)
    assert data["stationary_cov"][1][1] == 1.0 or abs(data["stationary_cov"][1][1] - 1.0) < 1e-12


def test_info_errors_exit_2_with_one_line():
    for args, word in [
        (["info", "--order", "0"], "--order"),
        (["info", "--sde", "bogus"], "sde"),
        (["info", "--param", "nope"], "--param"),
        (["info", "--param", "x=1"], "--param"),
        (["info", "--times", "0,2"], "--times"),
        (["info", "--sde", "cld", "--order", "3"], "order"),
    ]:
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        assert word in r.output
        assert "Traceback" not in r.output
        assert len(r.output.strip().splitlines()) <= 2


def test_console_script_usage_errors_are_one_line():
    """Click-level errors (bad types, unknown options) through the real entry point: one line, exit 2."""
    import subprocess
    import sys

    code = "import sys; sys.argv = ['kinetic'] + sys.argv[1:]; from kinetic.cli.app import main; main()"
    for args, word in [(["train", "--lr", "abc"], "--lr"), (["sample", "--nope"], "--nope")]:
        r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, r.stderr
        assert word in r.stderr and "Traceback" not in r.stderr
        assert "Usage:" not in r.stderr
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "Usage" in r.stdout
