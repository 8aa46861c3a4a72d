import pytest
from pydantic import Field, model_validator

from darkml.config import (
    ConfigError,
    Section,
    StudyConfig,
    apply_overrides,
    load_config,
)


class Train(Section):
    lr: float = Field(1e-3, gt=0)
    epochs: int = Field(5, ge=1, le=100)


class Cfg(StudyConfig):
    train: Train = Train()
    m_min: float = 1e7
    m_max: float = 1e10

    @model_validator(mode="after")
    def _order(self):
        if not self.m_min < self.m_max:
            raise ValueError(f"m_min = {self.m_min} must be < m_max = {self.m_max}")
        return self


@pytest.fixture
def presets(tmp_path):
    (tmp_path / "quick.yaml").write_text("seed: 3\ntrain:\n  lr: 0.01\n")
    (tmp_path / "big.yaml").write_text("inherit: quick\ntrain:\n  epochs: 50\n")
    return tmp_path


def test_preset_inherit_and_override(presets):
    cfg = load_config(Cfg, presets, "big", ["train.lr=1e-4", "seed=7"], study="demo")
    assert cfg.train.lr == pytest.approx(1e-4) and cfg.train.epochs == 50 and cfg.seed == 7
    assert cfg.preset == "big" and cfg.study == "demo"


def test_error_names_field_value_and_range(presets):
    with pytest.raises(ConfigError) as e:
        load_config(Cfg, presets, "quick", ["train.lr=-1"], study="demo")
    msg = str(e.value)
    assert "demo.train.lr" in msg and "-1" in msg and "> 0" in msg and "\n" not in msg


def test_unknown_field_and_preset(presets):
    with pytest.raises(ConfigError, match="unknown field"):
        load_config(Cfg, presets, "quick", ["train.lrr=1"])
    with pytest.raises(ConfigError, match="available: big, quick"):
        load_config(Cfg, presets, "nope")


def test_cross_field_validator_message(presets):
    with pytest.raises(ConfigError, match="^demo: m_min = .* must be < m_max"):
        load_config(Cfg, presets, "quick", ["m_min=1e10", "m_max=1e7"], study="demo")


def test_override_parsing():
    out = apply_overrides({"a": {"b": 1}}, ["a.b=[1, 2]", "c=text", "d.e=true"])
    assert out == {"a": {"b": [1, 2]}, "c": "text", "d": {"e": True}}
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["novalue"])
