from dataclasses import dataclass, field
from pathlib import Path

import pytest

from modalbridge import config
from modalbridge.errors import UserError


def load(cls, yaml_path=None, overrides=None):
    """Defaults <- YAML <- overrides, from the public pieces (what engine.resolve_config does for a RunConfig)."""
    data = config.read_yaml(yaml_path) if yaml_path is not None else {}
    return config.from_dict(cls, config.merge(data, config.parse_overrides(overrides or [])))


@dataclass
class Inner:
    lr: float = 1e-3
    layers: list[int] = field(default_factory=lambda: [1, 2])
    name: str | None = None


@dataclass
class Outer:
    seed: int = 0
    flag: bool = False
    inner: Inner = field(default_factory=Inner)


def test_layering_defaults_yaml_overrides(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("seed: 3\ninner:\n  lr: 0.5\n  layers: [4, 5, 6]\n")
    cfg = load(Outer, y, ["inner.lr=0.25", "flag=true"])
    assert cfg.seed == 3  # YAML over default
    assert cfg.inner.lr == 0.25  # override over YAML
    assert cfg.inner.layers == [4, 5, 6]
    assert cfg.flag is True
    assert load(Outer).inner.lr == 1e-3  # defaults alone


def test_int_is_accepted_for_float_and_optional_str():
    cfg = load(Outer, None, ["inner.lr=1", "inner.name=bert"])
    assert cfg.inner.lr == 1.0 and isinstance(cfg.inner.lr, float)
    assert cfg.inner.name == "bert"


def test_exponent_without_a_dot_is_a_number(tmp_path):
    # YAML 1.1 reads 5e-5 as the string "5e-5"; a float field takes it as the number, in overrides and in files
    assert load(Outer, None, ["inner.lr=5e-5"]).inner.lr == 5e-5
    y = tmp_path / "c.yaml"
    y.write_text("inner:\n  lr: 2E-4\n")
    assert load(Outer, y).inner.lr == 2e-4
    for bad in ["5e", "e-5", "5e-5x", "fast"]:
        with pytest.raises(UserError, match="'inner.lr': expected a number"):
            load(Outer, None, [f"inner.lr={bad}"])
    with pytest.raises(UserError, match="'seed': expected an integer"):
        load(Outer, None, ["seed=1e3"])  # a float in scientific notation is not an int


def test_unknown_key_names_key_and_closest(tmp_path):
    with pytest.raises(UserError, match=r"unknown config key 'inner.lrr'.*did you mean 'lr'"):
        load(Outer, None, ["inner.lrr=1"])
    y = tmp_path / "c.yaml"
    y.write_text("sed: 1\n")
    with pytest.raises(UserError, match=r"'sed'.*'seed'"):
        load(Outer, y)


@pytest.mark.parametrize(
    "override, key",
    [("seed=abc", "seed"), ("flag=3", "flag"), ("inner.layers=7", "inner.layers"), ("inner=5", "inner")],
)
def test_wrong_type_names_key(override, key):
    with pytest.raises(UserError, match=f"'{key}'"):
        load(Outer, None, [override])


def test_bad_override_syntax_and_bad_yaml(tmp_path):
    with pytest.raises(UserError, match="key=value"):
        config.parse_overrides(["seed"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load(Outer, bad)
    with pytest.raises(UserError, match="not found"):
        load(Outer, tmp_path / "missing.yaml")


def test_save_yaml_round_trip(tmp_path):
    cfg = load(Outer, None, ["inner.layers=[9]", "seed=5"])
    config.save_yaml(cfg, tmp_path / "resolved.yaml")
    again = load(Outer, tmp_path / "resolved.yaml")
    assert again == cfg
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left behind


@pytest.mark.parametrize("path", sorted(str(p) for p in Path("configs").rglob("*.yaml")))
def test_every_shipped_config_resolves_and_passes_the_value_checks(path):
    from modalbridge.registry import load_builtins
    from modalbridge.training import engine

    load_builtins()
    cfg = engine.resolve_config(path, [])  # unknown keys / wrong types / unknown task raise here
    engine.check_values(cfg)
    assert cfg.name and cfg.task


def test_every_registered_task_has_a_shipped_config():
    from modalbridge.registry import TASKS, load_builtins

    load_builtins()
    tasks = {config.read_yaml(p)["task"] for p in Path("configs").rglob("*.yaml")}
    assert tasks == set(TASKS), sorted(set(TASKS) ^ tasks)


@pytest.mark.parametrize("path", sorted(str(p) for p in Path("configs").rglob("*.yaml")))
def test_shipped_configs_hold_only_what_differs_from_the_defaults(path):
    from modalbridge.registry import TASKS, load_builtins
    from modalbridge.training import engine

    load_builtins()
    raw = config.read_yaml(path)
    task = TASKS.get_entry(raw["task"])
    defaults = {**config.to_dict(engine.RunConfig()), "data": config.to_dict(task.DataConfig()),
                "model": config.to_dict(task.ModelConfig())}

    def restated(given: dict, default: dict, prefix: str = "") -> list[str]:
        out = []
        for key, value in given.items():
            if isinstance(value, dict) and isinstance(default.get(key), dict):
                out += restated(value, default[key], f"{prefix}{key}.")
            elif key in default and default[key] == value:
                out.append(prefix + key)
        return out

    assert restated(raw, defaults) == []


def test_a_numeric_literal_choice_given_as_a_number():
    """``trainer.precision=32`` on the command line is the YAML number 32; the choice is the string "32"."""
    from modalbridge.registry import load_builtins
    from modalbridge.training import engine

    load_builtins()
    cfg = engine.resolve_config("configs/test/toy.yaml", ["trainer.precision=32"])
    assert cfg.trainer.precision == "32"
    with pytest.raises(UserError, match="expected one of"):
        engine.resolve_config("configs/test/toy.yaml", ["trainer.precision=33"])
