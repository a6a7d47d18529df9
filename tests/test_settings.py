"""Config files: `kinetic.config.read_settings` / `merge_settings`, the one reader of train, sample and evaluate."""

import pytest

from kinetic.config import ConfigError, TrainConfig, merge_settings, read_settings

KEYS = {"steps": ("steps", "integer"), "t-eps": ("t_eps", "number"), "t_eps": ("t_eps", "number"),
        "denoise": ("denoise", "boolean"), "solver": ("solver", "string"), "metric": ("metric", "strings")}


def write(tmp_path, text):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_section_over_top_level_and_command_line_over_both(tmp_path):
    p = write(tmp_path, 'steps = 7\nsolver = "em"\nt-eps = 0.01\n[sample]\nsteps = 9\n[evaluate]\nsteps = 11\n')
    read = {"section": "sample", "sections": ("sample", "evaluate"), "keys": KEYS}
    assert read_settings(p, **read) == {"steps": 9, "solver": "em", "t_eps": 0.01}
    assert read_settings(p, **{**read, "section": "evaluate"})["steps"] == 11
    assert merge_settings(p, {"steps": 3, "denoise": True}, **read) == {"steps": 3, "solver": "em", "t_eps": 0.01,
                                                                         "denoise": True}
    assert merge_settings(None, {"steps": 3}, **read) == {"steps": 3}


@pytest.mark.parametrize("text, words", [
    ("[sampel]\nsteps = 2\n", ("unknown section", "[sampel]", "valid sections: [sample], [evaluate]")),
    ("stepz = 2\n", ("unknown option", "stepz")),
    ("sample = 5\n", ("[sample] must be a table",)),
    ("steps = 2.5\n", ("steps must be an integer",)),
    ('denoise = "no"\n', ("denoise must be true or false",)),
    ("t_eps = true\n", ("t_eps must be a number",)),
    ("metric = 3\n", ("metric must be a list",)),
])
def test_unknown_sections_keys_and_kinds_refused(tmp_path, text, words):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        read_settings(p, section="sample", sections=("sample", "evaluate"), keys=KEYS)
    assert all(w in str(e.value) for w in words), str(e.value)
    assert "\n" not in str(e.value)


def test_strings_kind_takes_one_string_or_a_list(tmp_path):
    assert read_settings(write(tmp_path, 'metric = "nll"\n'), keys=KEYS) == {"metric": ["nll"]}
    assert read_settings(write(tmp_path, 'metric = ["nll", "swd"]\n'), keys=KEYS) == {"metric": ["nll", "swd"]}


def test_train_reads_its_file_through_the_same_reader(tmp_path):
    """TrainConfig.resolve: the file's settings <- the flags; a table other than sde_params is refused."""
    p = write(tmp_path, 'data = "moons"\nsteps = 7\nsde = "cld"\n[sde_params]\nm_inv = 2.0\n')
    cfg = TrainConfig.resolve(p, {"steps": 3})
    assert (cfg.data, cfg.steps, cfg.sde, cfg.sde_params) == ("moons", 3, "cld", {"m_inv": 2.0})
    assert TrainConfig.resolve(p, {"sde": "vp"}).sde_params == {}  # the file's sde_params belong to its sde
    with pytest.raises(ConfigError, match=r"unknown section\(s\) \[sample\]"):
        TrainConfig.resolve(write(tmp_path, "steps = 7\n[sample]\nsteps = 2\n"))
