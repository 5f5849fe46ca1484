"""One source of truth for every setting the paper states: the library's defaults, configs/paper.yaml
and the notebooks' parameters cells must agree, so a change in one place cannot silently drift."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import yaml

from amtlib.evaluation import failure, lesions, stats
from amtlib.segmentation.augment import AugmentConfig
from amtlib.pipeline import parameter_defaults
from amtlib.segmentation.train import PAPER_STATED, TrainConfig

ROOT = Path(__file__).resolve().parent.parent
PAPER = yaml.safe_load((ROOT / "configs" / "paper.yaml").read_text())
NOTEBOOK = {path.stem[:2]: parameter_defaults(path) for path in sorted((ROOT / "notebooks").glob("0[3-6]_*.ipynb"))}


def _norm(value: object) -> object:
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _config_key(name: str) -> str:
    return name if name in ("device", "seed", "workers") else f"train_{name}"


#: workers is a machine setting (data loader processes), not a result setting: paper.yaml sets it for 8 cores.
@pytest.mark.parametrize("name", [f.name for f in fields(TrainConfig) if f.name != "workers"])
def test_paper_config_repeats_every_training_default(name: str) -> None:
    default = _norm(getattr(TrainConfig(), name))
    key = _config_key(name)
    assert key in PAPER, f"configs/paper.yaml lacks {key}"
    assert _norm(PAPER[key]) == default, f"{key}: configs/paper.yaml {PAPER[key]!r} vs TrainConfig {default!r}"


@pytest.mark.parametrize("name", PAPER_STATED)
def test_notebook_03_agrees_on_every_paper_stated_value(name: str) -> None:
    key = _config_key(name)
    assert _norm(NOTEBOOK["03"][key]) == _norm(getattr(TrainConfig(), name)), key


def test_paper_stated_training_values_are_the_papers() -> None:
    """Hand-copied from the Methods (Model training); a change here must be a deliberate one."""
    cfg = TrainConfig()
    assert (cfg.batch_size, cfg.lr, cfg.betas, cfg.levels, cfg.spacing_mm) == (3, 1e-3, (0.9, 0.999), 4, None)
    assert (cfg.rotate_deg, cfg.scale_range) == (10.0, (0.8, 1.2))
    aug = cfg.augment
    assert (aug.rotate_deg, aug.scale_min, aug.scale_max, aug.fg_probability) == (10.0, 0.8, 1.2, cfg.fg_probability)
    default_aug = AugmentConfig()
    assert (default_aug.rotate_deg, default_aug.scale_min, default_aug.scale_max, default_aug.fg_probability) == \
        (cfg.rotate_deg, *cfg.scale_range, cfg.fg_probability)


def test_evaluation_constants_agree_everywhere() -> None:
    """Lesion definitions (Methods, Evaluation) in lesions.py, paper.yaml and notebooks 04-05."""
    assert lesions.MIN_PRED_VOXELS == PAPER["min_lesion_voxels"] == 10
    assert lesions.CONNECTIVITY == PAPER["connectivity"] == 26
    np.testing.assert_allclose(lesions.iou_thresholds(PAPER["iou_thresholds"]), np.round(np.arange(1, 20) * 0.05, 2))
    for nb in ("04", "05"):
        p = NOTEBOOK[nb]
        assert (p["min_lesion_voxels"], p["connectivity"], p["iou_thresholds"]) == (10, 26, None), nb
        assert (p["bootstrap_resamples"], p["ci_level"], p["eval_split"]) == (PAPER["bootstrap_resamples"], PAPER["ci_level"], "external_test")
    assert stats.mean_sd_ci.__defaults__[:2] == (PAPER["bootstrap_resamples"], PAPER["ci_level"])  # type: ignore[index]


def test_failure_analysis_constants_agree_everywhere() -> None:
    """Top/bottom 10% by Dice (17 of 164), Methods: Failure analysis."""
    assert failure.group_size.__defaults__ == (PAPER["failure_fraction"],)
    assert NOTEBOOK["06"]["failure_fraction"] == PAPER["failure_fraction"] == 0.1
    assert failure.group_size(164) == 17
