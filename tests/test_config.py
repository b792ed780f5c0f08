from pathlib import Path

import pytest
import yaml

from nanodet.config import ConfigError, load_config, save_config

from .conftest import CONFIG_DIR

CONFIGS = sorted(CONFIG_DIR.glob("*.yml"))


def test_all_bundled_configs_load():
    names = {p.name for p in CONFIGS}
    assert {
        "nanodet-plus-m_320.yml", "nanodet-plus-m_416.yml", "nanodet-plus-m-1.5x_320.yml",
        "nanodet-plus-m-1.5x_416.yml", "nanodet-m.yml",
    } <= names
    for path in CONFIGS:
        cfg = load_config(path)
        assert len(cfg.class_names) == cfg.model.arch.head.num_classes == 80


def test_unknown_key_is_rejected_with_its_path(tmp_path: Path):
    data = yaml.safe_load((CONFIG_DIR / "nanodet-plus-m_320.yml").read_text())
    data["model"]["arch"]["head"]["reg_maxx"] = 7
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert "model.arch.head.NanoDetPlusHead.reg_maxx: unknown key" in str(err.value) or \
        "model.arch.head.reg_maxx" in str(err.value).replace(".NanoDetPlusHead", "")
    assert str(bad) in str(err.value)


def test_mistyped_value_names_key_and_value(tmp_path: Path):
    data = yaml.safe_load((CONFIG_DIR / "nanodet-plus-m_320.yml").read_text())
    data["schedule"]["total_epochs"] = "many"
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"schedule\.total_epochs.*'many'"):
        load_config(bad)


def test_class_count_must_match(tmp_path: Path):
    data = yaml.safe_load((CONFIG_DIR / "nanodet-plus-m_320.yml").read_text())
    data["class_names"] = ["a", "b"]
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="class_names has 2 names"):
        load_config(bad)


def test_yaml_syntax_error_names_line(tmp_path: Path):
    bad = tmp_path / "broken.yml"
    bad.write_text("model:\n  arch: [1, 2\nclass_names: x\n")
    with pytest.raises(ConfigError, match=r"broken\.yml: line \d+"):
        load_config(bad)


def test_save_and_reload_round_trip(tmp_path: Path):
    cfg = load_config(CONFIG_DIR / "nanodet-plus-m_320.yml").with_classes(["cat", "dog"])
    save_config(cfg, tmp_path / "c.yml")
    again = load_config(tmp_path / "c.yml")
    assert again == cfg
    assert again.model.arch.aux_head.num_classes == 2
