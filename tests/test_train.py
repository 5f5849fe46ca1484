"""Training loop: optimisation step, resume equality, checkpoints, bad input, geometry of predictions, DDP."""

import os
import socket
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from train_fixtures import make_run  # noqa: E402

from amtlib.io import load_nifti  # noqa: E402
from amtlib.segmentation.preprocess import CaseVolume  # noqa: E402
from amtlib.segmentation.train import (  # noqa: E402
    data_fingerprint,
    TrainConfig,
    build_model,
    load_checkpoint,
    prepare_data,
    resolve_device,
    run_step,
    train,
)

TINY = dict(spacing_mm=(5.0, 8.0, 8.0), patch=(8, 16, 16), base_width=2, blocks_per_level=1, iterations=6, eval_every=3,
            workers=1, device="cpu")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("run"), n_train=4, n_tuning=2, n_test=2, shape=(16, 40, 36), spacing=(5.0, 4.0, 4.0))


@pytest.fixture(scope="module")
def data(run_dir, tmp_path_factory):
    cfg = TrainConfig(**TINY)
    return prepare_data(run_dir / "01_cohort/manifest.csv", run_dir / "02_split/split.csv", cfg, tmp_path_factory.mktemp("cache"))


def test_config_from_flat_params():
    cfg = TrainConfig.from_params({"train_patch": [8, 16, 16], "train_spacing_mm": [5, 3, 3], "seed": 4, "device": "cpu",
                                   "train_batch_size": 2, "synth_seed": 99, "run_dir": "x"})
    assert cfg.patch == (8, 16, 16) and cfg.spacing_mm == (5.0, 3.0, 3.0) and cfg.seed == 4 and cfg.batch_size == 2
    assert TrainConfig().batch_size == 3 and TrainConfig().lr == 1e-3 and TrainConfig().betas == (0.9, 0.999)
    with pytest.raises(ValueError, match="multiples of 8"):
        TrainConfig(patch=(8, 20, 16))


def test_train_lowers_the_dice_loss_of_the_training_cases(data, tmp_path):
    """The package's own loop (its Adam and Dice loss, not a copy of them built here): the mean training
    loss over the last 10 steps is below that of the first 10, and every step moved every parameter."""
    cfg = TrainConfig(**{**TINY, "iterations": 40, "eval_every": 10, "checkpoint_every": 1})
    train(data.train, data.tuning, cfg, tmp_path, data.norm, progress=False)
    log = pd.read_csv(tmp_path / "train_log.csv")
    assert log["iteration"].tolist() == [10, 20, 30, 40]
    # train_loss is the mean since the previous row: the first and the last 10 steps
    assert log["train_loss"].iloc[-1] < log["train_loss"].iloc[0] - 0.02, log["train_loss"].tolist()
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert {int(v["step"]) for v in state["optimizer"]["state"].values()} == {40}


def _states(out: Path):
    ck = torch.load(out / "checkpoints/last.pt", weights_only=True)
    best = torch.load(out / "model.pt", weights_only=True)
    return ck, best


def test_interrupt_and_resume_equals_uninterrupted_run_bitwise(data, tmp_path):
    cfg = TrainConfig(**TINY)
    full = train(data.train, data.tuning, cfg, tmp_path / "a", data.norm, progress=False)
    part = train(data.train, data.tuning, cfg, tmp_path / "b", data.norm, progress=False, stop_after=4)
    assert part.iterations_done == 4 and len(part.log) == 1
    resumed = train(data.train, data.tuning, cfg, tmp_path / "b", data.norm, progress=False)
    (ck_a, best_a), (ck_b, best_b) = _states(tmp_path / "a"), _states(tmp_path / "b")
    assert ck_a["iteration"] == ck_b["iteration"] == 6
    for k, v in ck_a["model"].items():
        assert torch.equal(v, ck_b["model"][k]), k
    for pid, st in ck_a["optimizer"]["state"].items():
        for name, t in st.items():
            assert torch.equal(t, ck_b["optimizer"]["state"][pid][name]), (pid, name)
    for k, v in best_a["model"].items():
        assert torch.equal(v, best_b["model"][k]), k
    cols = ["iteration", "train_loss", "tuning_dice", "best_tuning_dice", "is_best"]
    pd.testing.assert_frame_equal(full.log[cols], resumed.log[cols])
    assert pd.read_csv(tmp_path / "b/train_log.csv")["iteration"].tolist() == [3, 6]


def test_checkpoint_from_another_configuration_is_refused(data, tmp_path):
    cfg = TrainConfig(**TINY)
    train(data.train, data.tuning, cfg, tmp_path, data.norm, progress=False, stop_after=1)
    other = TrainConfig(**{**TINY, "base_width": 4})
    with pytest.raises(ValueError, match=r"another configuration .*base_width: checkpoint 2 vs config 4"):
        load_checkpoint(tmp_path / "checkpoints/last.pt", other)
    # train() does not resume it: it trains afresh under the new settings and says why (issue 11)
    with pytest.warns(UserWarning, match=r"not resumed: .*lr: checkpoint 0.001 vs config 0.01"):
        res = train(data.train, data.tuning, TrainConfig(**{**TINY, "lr": 0.01}), tmp_path, data.norm, progress=False)
    assert res.resumed_from == 0 and res.log["iteration"].tolist() == [3, 6]



def test_checkpoint_trained_on_other_data_is_not_resumed(data, tmp_path):
    """A regenerated cohort re-runs step 03: a finished checkpoint of the old volumes must not be reused."""
    cfg = TrainConfig(**TINY)
    done = train(data.train, data.tuning, cfg, tmp_path, data.norm, progress=False)
    assert done.iterations_done == 6
    src = data.train[0]
    changed = CaseVolume(src.case_id, src.image_hu + 1.0, src.mask, src.original_shape, src.original_spacing,
                         src.affine, src.hu_min, src.hu_max, src.fg_indices)
    with pytest.warns(UserWarning, match="other cases or volumes"):
        again = train([changed, *data.train[1:]], data.tuning, cfg, tmp_path, data.norm, progress=False)
    # trained afresh: the log holds both evaluations of the new run, not a resumed tail
    assert again.log["iteration"].tolist() == [3, 6]
    ck = torch.load(tmp_path / "checkpoints/last.pt", weights_only=True)
    assert ck["data"] == data_fingerprint([changed, *data.train[1:]], data.tuning) != data_fingerprint(data.train, data.tuning)
    # the same data resumes silently (nothing left to do)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train([changed, *data.train[1:]], data.tuning, cfg, tmp_path, data.norm, progress=False)



def test_checkpoint_written_by_other_amtlib_code_is_not_resumed(data, tmp_path, monkeypatch):
    """A code change re-runs step 03 (the runner's library hash): a finished checkpoint of the old code
    must not stand in for training under the new one, even with the same settings and data."""
    from amtlib.segmentation import train as train_module

    cfg = TrainConfig(**TINY)
    first = train(data.train, data.tuning, cfg, tmp_path, data.norm, progress=False)
    assert first.iterations_done == 6
    monkeypatch.setattr(train_module, "library_hash", lambda: "the next version of amtlib")
    with pytest.warns(UserWarning, match="written by another version of the amtlib code"):
        again = train(data.train, data.tuning, cfg, tmp_path, data.norm, progress=False)
    assert again.resumed_from == 0 and again.log["iteration"].tolist() == [3, 6]
    assert torch.load(tmp_path / "checkpoints/last.pt", weights_only=True)["code"] == "the next version of amtlib"
    with warnings.catch_warnings():  # under that code it resumes silently (nothing left to do)
        warnings.simplefilter("error")
        assert train(data.train, data.tuning, cfg, tmp_path, data.norm, progress=False).resumed_from == 6


@pytest.mark.filterwarnings("ignore:no tuning cases")
def test_nan_loss_stops_with_iteration_and_cases(data, tmp_path):
    src = data.train[0]
    bad = CaseVolume("nan_case", np.full(src.shape, np.nan, np.float32), src.mask, src.original_shape, src.original_spacing,
                     src.affine, src.hu_min, src.hu_max, src.fg_indices)
    with pytest.raises(FloatingPointError, match=r"iteration 0: .*nan_case"):
        train([bad], [], TrainConfig(**TINY), tmp_path, data.norm, progress=False)


def test_training_case_without_foreground_warns(data, tmp_path):
    src = data.train[0]
    empty = CaseVolume("empty", src.image_hu, np.zeros(src.shape, np.uint8), src.original_shape, src.original_spacing,
                       src.affine, src.hu_min, src.hu_max)
    with pytest.warns(UserWarning, match="empty tumour mask.*empty"):
        train([empty, *data.train[1:]], data.tuning, TrainConfig(**{**TINY, "iterations": 1}), tmp_path, data.norm, progress=False)


def test_missing_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        resolve_device("cuda")
    assert resolve_device("auto", workers=1).type == "cpu"


def test_normalisation_uses_training_split_only(data):
    lo = min(c.hu_min for c in data.train)
    hi = max(c.hu_max for c in data.train)
    assert (data.norm.hu_min, data.norm.hu_max) == (lo, hi)


def test_run_step_writes_predictions_in_original_geometry(run_dir):
    cfg = TrainConfig(**{**TINY, "iterations": 3, "save_probabilities": True})
    out = run_dir / "03_train"
    # a prediction of a case no longer in the split (an earlier cohort) must not survive the step
    (out / "predictions").mkdir(parents=True, exist_ok=True)
    (out / "predictions" / "GONE.nii.gz").write_bytes(b"stale")
    result = run_step(run_dir, cfg, progress=False)
    assert (out / "model.pt").is_file() and (out / "norm.json").is_file() and result.best_iteration == 3
    split = pd.read_csv(run_dir / "02_split/split.csv")
    targets = split.loc[split.split != "train", "case_id"].tolist()
    assert sorted(p.name for p in (out / "predictions").iterdir()) == sorted(f"{c}.nii.gz" for c in targets)
    for cid in targets:
        img, _, aff = load_nifti(run_dir / f"01_cohort/images/{cid}.nii.gz")
        pred, _, paff = load_nifti(out / f"predictions/{cid}.nii.gz")
        prob, _, _ = load_nifti(out / f"probabilities/{cid}.nii.gz")
        assert pred.shape == img.shape == (16, 40, 36) and pred.dtype == np.uint8
        np.testing.assert_array_equal(paff, aff)
        assert set(np.unique(pred)) <= {0, 1}
        np.testing.assert_array_equal(pred, (prob >= 0.5).astype(np.uint8))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, run_dir: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        warnings.simplefilter("ignore")
        cfg = TrainConfig(**{**TINY, "iterations": 2, "eval_every": 2})
        data = prepare_data(Path(run_dir) / "01_cohort/manifest.csv", Path(run_dir) / "02_split/split.csv", cfg)
        result = train(data.train, data.tuning, cfg, out, data.norm, progress=False)
        params = {k: v.detach().clone() for k, v in result.model.named_parameters()}
        torch.save(params, Path(out) / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_process_gloo_step(run_dir, tmp_path):
    # the ranks draw different crops, so equal weights after two steps mean the gradients were averaged
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), str(run_dir), str(tmp_path)), nprocs=2, join=True)
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    init = build_model(TrainConfig(**TINY)).state_dict()
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert not torch.equal(w0["head.weight"], init["head.weight"])
    log = pd.read_csv(tmp_path / "train_log.csv")
    assert log["iteration"].tolist() == [2]


def test_optimiser_keeps_the_papers_constant_learning_rate_and_betas(data, tmp_path):
    """Methods: Adam, lr 0.001, betas (0.9, 0.999), no schedule. Shown through the optimiser's state
    after a run, not through the config: a scheduler would have changed lr or added ``initial_lr``."""
    cfg = TrainConfig(**{**TINY, "checkpoint_every": 1})
    train(data.train, data.tuning, cfg, tmp_path, data.norm, progress=False)
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    groups = state["optimizer"]["param_groups"]
    assert int(state["iteration"]) == cfg.iterations == 6
    assert [g["lr"] for g in groups] == [1e-3] and [tuple(g["betas"]) for g in groups] == [(0.9, 0.999)]
    assert all("initial_lr" not in g for g in groups) and "scheduler" not in state
    steps = {int(s["step"]) for s in state["optimizer"]["state"].values()}
    assert steps == {6}  # every parameter took all 6 Adam steps


def test_selection_keeps_the_best_of_several_evaluations_when_a_later_one_is_worse(data, tmp_path, monkeypatch):
    """Methods: the model with the best tuning Dice is kept. Evaluations at 3, 6, 9 score 0.2, 0.6, 0.4:
    model.pt must be the iteration-6 model (bit-identical to a run stopped at 6), not the last."""
    import amtlib.segmentation.train as tr

    scores = iter([0.2, 0.6, 0.4])
    monkeypatch.setattr(tr, "tuning_dice", lambda *a, **k: next(scores))
    res = train(data.train, data.tuning, TrainConfig(**{**TINY, "iterations": 9}), tmp_path / "nine", data.norm, progress=False)
    assert res.best_iteration == 6 and res.best_tuning_dice == 0.6
    assert res.log["is_best"].tolist() == [True, True, False] and res.log["best_tuning_dice"].tolist() == [0.2, 0.6, 0.6]
    rising = iter([0.1, 0.5])
    monkeypatch.setattr(tr, "tuning_dice", lambda *a, **k: next(rising))
    train(data.train, data.tuning, TrainConfig(**{**TINY, "iterations": 6}), tmp_path / "six", data.norm, progress=False)
    kept = torch.load(tmp_path / "nine" / "model.pt", weights_only=True)
    at6 = torch.load(tmp_path / "six" / "model.pt", weights_only=True)
    assert int(kept["iteration"]) == 6
    for k, v in at6["model"].items():
        assert torch.equal(v, kept["model"][k]), k


def test_normalisation_ignores_a_tuning_case_outside_the_training_range(tmp_path):
    """Min-max constants come from the training split only: a tuning case far outside the training
    range (3000 HU and -3000 HU voxels) must not move them (it would, were tuning data leaking in)."""
    from amtlib.io import save_nifti

    run = make_run(tmp_path / "run", n_train=3, n_tuning=1, n_test=1, shape=(16, 40, 36), spacing=(5.0, 4.0, 4.0))
    man = pd.read_csv(run / "01_cohort/manifest.csv", dtype=str)
    split = pd.read_csv(run / "02_split/split.csv", dtype=str)
    tuning_id = split.loc[split["split"] == "tuning", "case_id"].iloc[0]
    path = run / "01_cohort" / man.set_index("case_id").loc[tuning_id, "image_path"]
    img, _, affine = load_nifti(path)
    img = img.astype(np.int16)
    img[0, 0, 0], img[0, 0, 1] = 3000, -3000
    save_nifti(img, affine, path)
    cfg = TrainConfig(**TINY)
    d = prepare_data(run / "01_cohort/manifest.csv", run / "02_split/split.csv", cfg, tmp_path / "cache")
    tuning = d.tuning[0]
    assert (tuning.hu_min, tuning.hu_max) == (-3000, 3000)
    assert d.norm.hu_max < 3000 and d.norm.hu_min > -3000
    assert (d.norm.hu_min, d.norm.hu_max) == (min(c.hu_min for c in d.train), max(c.hu_max for c in d.train))
