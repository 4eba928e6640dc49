"""core.models.find: the one model finder of the CLI and the app."""

from __future__ import annotations

import pytest

from core import models
from core.cli.main import main as cli
from core.models.families import ModelNotFoundError


def test_find_prefers_the_home_then_the_shipped_demo(tmp_path, monkeypatch):
    monkeypatch.setenv("STELLARSCOPE_HOME", str(tmp_path / "home"))
    shipped = models.find("emulator")
    assert shipped.name == "emulator-demo" and "assets" in shipped.parts
    mine = tmp_path / "home" / "models" / "my-emu"
    mine.mkdir(parents=True)
    (mine / "config.json").write_text((shipped / "config.json").read_text())
    assert models.find("emulator") == mine          # the newest of the family in the home
    assert models.find("emulator", "my-emu") == mine  # a name under the models home
    with pytest.raises(ModelNotFoundError, match="holds a 'emulator' model, not a spectrum VAE"):
        models.find("vae", mine)


def test_explicit_models_that_are_not_models_are_named(tmp_path, capsys):
    with pytest.raises(ModelNotFoundError, match="nowhere: no such model directory"):
        models.find("vae", tmp_path / "nowhere")
    with pytest.raises(ModelNotFoundError, match="not a saved model"):
        models.find("emulator", tmp_path)
    assert cli(["infer", "vae", "--model", str(tmp_path / "nowhere")]) == 1
    assert "no such model directory" in capsys.readouterr().err
