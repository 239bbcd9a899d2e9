"""Config presets, YAML files with a preset base, overrides and their errors."""
from __future__ import annotations

from pathlib import Path

import pytest
from ffnet_3d.config import get_preset, load_config, save_config

EXAMPLE = Path(__file__).resolve().parents[1] / "configs" / "synth_cpu_example.yaml"


def test_default_is_the_standard_kitti_grid():
    cfg = load_config("kitti")
    assert cfg.data.point_cloud_range == (0.0, -40.0, -3.0, 70.4, 40.0, 1.0)
    assert cfg.data.voxel_size == (0.05, 0.05, 0.1)
    assert get_preset("kitti").to_dict() == type(cfg)().to_dict()


def test_yaml_with_preset_base_and_roundtrip(tmp_path):
    cfg = load_config(EXAMPLE)
    assert cfg.model.kernel_sizes == (3, 3, 5, 5)
    assert cfg.data.voxel_size == get_preset("synth_cpu").data.voxel_size
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml").to_dict() == cfg.to_dict()


def test_config_errors(tmp_path):
    (tmp_path / "bad.yaml").write_text("model:\n  no_such_field: 1\n")
    with pytest.raises(ValueError, match="unknown config keys in config.model"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="mapping"):
        load_config(tmp_path / "list.yaml")
    with pytest.raises(ValueError, match="neither a preset"):
        load_config("nope")


def test_cli_set_override(tmp_path, capsys):
    from ffnet_3d.cli import main

    assert main(["train", "--config", "tiny", "--data", str(tmp_path), "--set", "model.bogus=1"]) == 2
    assert "unknown config keys" in capsys.readouterr().err
