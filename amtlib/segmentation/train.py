"""Training of the paper's 3D U-Net with tuning-set model selection (paper: "Training settings").

Batch 3, Adam (lr 1e-3, betas 0.9/0.999) at a constant learning rate, Dice loss, no early stopping, a
fixed budget of iterations. Every ``eval_every`` iterations (and at the end) the tuning Dice is computed
by sliding-window inference on whole tuning volumes (on the training grid) and the model with the
highest mean tuning Dice is written to ``model.pt``. The paper says "Dice loss" without details: here it
is MONAI's soft Dice on sigmoid outputs with the sums taken over the whole batch (``dice_batch=True``), so
that a crop without tumour does not produce a degenerate per-sample Dice (``False``: per-crop Dice, averaged).

Device: ``"auto"`` picks CUDA when available (mixed precision, bf16 where supported, cudnn autotuning,
channels-last) else the CPU with ``workers`` threads (0 = all cores); ``"cuda"`` without a GPU is an
error. Seeds are fixed: model initialisation from ``seed``, every batch a pure function of (seed,
iteration, rank), so on the CPU a run is deterministic and a run interrupted and resumed from
``checkpoints/last.pt`` ends bitwise equal to an uninterrupted one, and ``model.pt`` is byte-identical
between identical runs. Checkpoints are written atomically and load with ``torch.load(...,
weights_only=True)``. Resume is keyed on every setting that changes the result
(:meth:`TrainConfig.fingerprint`, e.g. ``iterations`` and ``eval_every``) and on the training data: a
checkpoint made under other settings or data is not resumed, training starts afresh and says so in
``notices.txt`` (shown by ``amt run``) and as a warning.

Multi-GPU: run the CLI under ``torchrun`` (``torchrun --standalone --nproc_per_node=N -m amtlib.segmentation.train
--run-dir RUN --config configs/paper.yaml``); each process draws its own ``batch_size`` crops, gradients
are averaged by DistributedDataParallel, rank 0 evaluates, logs and writes checkpoints.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from monai.losses import DiceLoss

from amtlib.segmentation.augment import AugmentConfig, BatchSampler
from amtlib.segmentation.infer import (MODEL_FORMAT, autocast, autocast_dtype, predict_probability, read_torch_file,
                                       write_torch_file)
from amtlib.evaluation.metrics import dice
from amtlib.errors import AmtError, one_line, type_problem
from amtlib.io import library_hash, prune_folder, write_csv, write_json
from amtlib.segmentation.model import ModelConfig, UNet3D
from amtlib.paths import add_notice
from amtlib.segmentation.prefetch import Prefetcher
from amtlib.segmentation.preprocess import CaseVolume, Normalisation, load_cases, training_normalisation, warn_empty_masks

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "amtlib-train-checkpoint/1"
#: ``train_log.csv``: a pure function of the settings and data (byte-identical between identical runs).
LOG_COLUMNS = ["iteration", "epoch", "train_loss", "tuning_dice", "best_tuning_dice", "is_best"]
#: ``train_timing.csv``: wall-clock speed of the same evaluations (differs between runs).
TIMING_COLUMNS = ["iteration", "elapsed_s", "iterations_per_s"]


#: TrainConfig fields whose values the paper states (Methods, Model training); configs and notebook 03
#: may change the others (patch, width, iterations, ...) but never these without saying so.
PAPER_STATED: tuple[str, ...] = ("spacing_mm", "levels", "batch_size", "lr", "betas", "rotate_deg", "scale_range")


@dataclass(frozen=True)
class TrainConfig:
    """All training settings: the one source of truth. The defaults are the paper's values where it
    states them (:data:`PAPER_STATED`: batch 3, Adam lr 1e-3 with betas (0.9, 0.999) and no schedule,
    4 levels, native grid, axial rotation +-10 degrees, axial scaling 0.8-1.2) and this package's
    full-scale choices elsewhere (``configs/paper.yaml`` repeats them; tests keep the three in agreement).

    ``spacing_mm`` (z, y, x) training grid, None = native (paper). ``patch`` (z, y, x) voxels, each a
    multiple of ``2 ** (levels - 1)``. ``iterations``: optimisation steps; ``eval_every``: steps between
    tuning evaluations; ``checkpoint_every``: steps between ``last.pt`` writes (0 = only at evaluations).
    ``threshold``: probability cut-off of the predictions. ``device``: ``auto``, ``cpu`` or ``cuda[:i]``.
    """

    spacing_mm: tuple[float, float, float] | None = None
    patch: tuple[int, int, int] = (48, 128, 128)
    base_width: int = 32
    blocks_per_level: int = 2
    levels: int = 4
    batch_size: int = 3
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    iterations: int = 20000
    eval_every: int = 500
    checkpoint_every: int = 0
    # the augmentation's ranges: one source, AugmentConfig's defaults (the paper's +-10 degrees, 0.8-1.2)
    rotate_deg: float = AugmentConfig.rotate_deg
    scale_range: tuple[float, float] = (AugmentConfig.scale_min, AugmentConfig.scale_max)
    fg_probability: float = AugmentConfig.fg_probability
    dice_batch: bool = True
    sw_overlap: float = 0.25
    sw_batch_size: int = 4
    threshold: float = 0.5
    amp: bool = True
    save_probabilities: bool = False
    seed: int = 0
    device: str = "auto"
    workers: int = 0

    def __post_init__(self) -> None:
        d = 2 ** (self.levels - 1)
        if len(self.patch) != 3 or any(int(p) % d or p <= 0 for p in self.patch):
            raise ValueError(f"train_patch {list(self.patch)} (z, y, x) must have 3 positive multiples of {d} for {self.levels} levels")
        if self.batch_size < 1 or self.iterations < 1 or self.eval_every < 1:
            raise ValueError("train_batch_size, train_iterations and train_eval_every must be >= 1")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"train_threshold {self.threshold} must lie strictly between 0 and 1")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "TrainConfig":
        """Build from flat config keys: ``train_<field>`` plus ``device``, ``seed``, ``workers``; others ignored."""
        kw: dict[str, Any] = {}
        names = {f.name for f in fields(cls)}
        for key, value in params.items():
            name = key[len("train_"):] if key.startswith("train_") else key
            if name in names and (key.startswith("train_") or key in ("device", "seed", "workers")):
                kw[name] = value
        for name in ("spacing_mm", "patch", "betas", "scale_range"):
            if name in kw and kw[name] is not None:
                kw[name] = tuple(kw[name])
        if "spacing_mm" in kw and kw["spacing_mm"] is not None:
            kw["spacing_mm"] = tuple(float(s) for s in kw["spacing_mm"])
        if "patch" in kw:
            kw["patch"] = tuple(int(p) for p in kw["patch"])
        return cls(**kw)

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig(base_width=self.base_width, blocks_per_level=self.blocks_per_level, levels=self.levels)

    @property
    def augment(self) -> AugmentConfig:
        return AugmentConfig(self.rotate_deg, self.scale_range[0], self.scale_range[1], self.fg_probability)

    def fingerprint(self) -> dict[str, Any]:
        """Every setting that changes the trained or the selected model: the resume key of a checkpoint.

        Left out are only settings that change neither: ``checkpoint_every``, ``save_probabilities``,
        ``device`` and ``workers`` (a checkpoint may move between machines). ``iterations`` and
        ``eval_every`` are in: they decide which models are evaluated and so which one is selected.
        """
        skip = {"checkpoint_every", "save_probabilities", "device", "workers"}
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if k not in skip}


# ----------------------------------------------------------------------------------------------- device


class DeviceUnavailable(AmtError, RuntimeError):
    """A device the settings ask for that this machine lacks (a ``RuntimeError`` too, as it was before)."""


def resolve_device(device: str = "auto", workers: int = 0) -> torch.device:
    """The torch device for ``device`` (``auto``/``cpu``/``cuda[:i]``), with threads and cudnn set up.

    Raises :class:`DeviceUnavailable` (a ``RuntimeError``) when CUDA is requested but absent, and
    :class:`~amtlib.errors.AmtError` for an unknown device name. On CPU, ``workers`` threads (0 = all
    available cores) are used.
    """
    want = str(device or "auto").lower()
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceUnavailable(f"device {device!r}", f"requested but no CUDA device is available (torch {torch.__version__})",
                                    "set device: auto or device: cpu in the config (amt predict: --device auto or cpu)")
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return torch.device(want)
    if want != "cpu":
        raise AmtError(f"device {device!r}", "unknown device", "use auto, cpu or cuda")
    n = workers if workers and workers > 0 else len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(int(n))
    return torch.device("cpu")


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


# ------------------------------------------------------------------------------------------ checkpoints


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> Path:
    """A checkpoint or ``model.pt``, written atomically (:func:`amtlib.segmentation.infer.write_torch_file`)."""
    return write_torch_file(path, state)


def checkpoint_mismatch(blob: Mapping[str, Any], cfg: TrainConfig) -> str:
    """The settings in which checkpoint ``blob`` differs from ``cfg`` (``"k: checkpoint a vs config b"``), or ``""``."""
    want = {"model_config": cfg.model_config.to_dict(), **cfg.fingerprint()}
    have = {"model_config": blob.get("model_config"), **(blob.get("fingerprint") or {})}
    diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
    return "; ".join(f"{k}: checkpoint {have.get(k)!r} vs config {want.get(k)!r}" for k in diff)


def load_checkpoint(path: str | Path, cfg: TrainConfig) -> dict[str, Any]:
    """Load a training checkpoint (``weights_only=True``) after checking it matches ``cfg``.

    Raises :class:`~amtlib.errors.AmtError` naming the file and the differing settings when it was written under another
    model or training configuration (delete ``checkpoints/`` or restore that configuration), and
    :class:`~amtlib.errors.AmtError` naming the file when it is truncated or not a checkpoint.
    """
    path = Path(path)
    remedy = "delete it to train afresh (or run with train_resume=false / amt train --no-resume)"
    blob = read_torch_file(path, "training checkpoint", remedy)
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        raise AmtError(path, "not an amtlib training checkpoint", remedy)
    detail = checkpoint_mismatch(blob, cfg)
    if detail:
        raise AmtError(path, f"checkpoint was written under another configuration ({detail})",
                       "delete the checkpoints folder to retrain, or run with the configuration that made it")
    return blob


def data_fingerprint(train_cases: Sequence[CaseVolume], tuning_cases: Sequence[CaseVolume]) -> str:
    """BLAKE2 digest of the training and tuning volumes (ids, shapes, voxels): the data a checkpoint saw."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for tag, cases in (("train", train_cases), ("tuning", tuning_cases)):
        for c in cases:
            h.update(f"{tag}:{c.case_id}:{c.shape}".encode())
            h.update(np.ascontiguousarray(c.image_hu).tobytes())
            if c.mask is not None:
                h.update(np.ascontiguousarray(c.mask).tobytes())
    return h.hexdigest()


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


# --------------------------------------------------------------------------------------------- training


def build_model(cfg: TrainConfig) -> UNet3D:
    """The paper's U-Net for ``cfg``, Glorot-initialised from ``cfg.seed`` (deterministic)."""
    torch.manual_seed(cfg.seed)
    return UNet3D(cfg.model_config)


def tuning_dice(model: torch.nn.Module, cases: Sequence[CaseVolume], norm: Normalisation, cfg: TrainConfig,
                device: torch.device) -> float:
    """Mean Dice over ``cases`` of the thresholded sliding-window prediction, on the training grid (the
    model-selection criterion, Methods: best tuning Dice). :func:`amtlib.evaluation.metrics.dice` with both
    masks empty counted as 1.0 (see its empty rule)."""
    scores = []
    for c in cases:
        prob = predict_probability(model, norm.apply(c.image_hu), cfg.patch, device, cfg.sw_overlap, cfg.sw_batch_size,
                                   norm.pad_value, cfg.amp)
        ref = c.mask if c.mask is not None else np.zeros(c.shape, np.uint8)
        scores.append(dice(prob >= cfg.threshold, ref, both_empty=1.0))
    return float(np.mean(scores)) if scores else float("nan")


@dataclass
class TrainResult:
    """What :func:`train` leaves behind: the evaluation log and the selected model."""

    log: pd.DataFrame
    best_iteration: int
    best_tuning_dice: float
    model_path: Path
    last_checkpoint: Path
    iterations_done: int
    device: str
    norm: Normalisation
    duration_s: float = 0.0
    model: torch.nn.Module | None = field(default=None, repr=False)
    resumed_from: int = 0


def _model_blob(model: torch.nn.Module, cfg: TrainConfig, norm: Normalisation, iteration: int, score: float) -> dict[str, Any]:
    return {"format": MODEL_FORMAT, "model_config": cfg.model_config.to_dict(), "model": model.state_dict(),
            "norm": norm.to_dict(), "spacing_mm": None if cfg.spacing_mm is None else list(cfg.spacing_mm),
            "patch": list(cfg.patch), "sw_overlap": float(cfg.sw_overlap), "threshold": float(cfg.threshold),
            "iteration": int(iteration), "tuning_dice": float(score)}


def _tensorboard(out_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard is optional; its absence is not worth a warning
        return None
    return SummaryWriter(log_dir=str(out_dir / "tensorboard"))


@dataclass
class _Session:
    """One training run's state, shared by the named parts of :func:`train`."""

    cfg: TrainConfig
    out: Path
    device: torch.device
    rank: int
    world: int
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    scaler: Any
    norm: Normalisation
    data_id: str
    code: str = field(default_factory=lambda: library_hash())  # the amtlib code this run trains under (resume key)
    start: int = 0
    best: float = -math.inf
    best_it: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    loss_sum: float = 0.0
    loss_n: int = 0

    @property
    def ckpt_path(self) -> Path:
        return self.out / "checkpoints" / "last.pt"

    @property
    def model_path(self) -> Path:
        return self.out / "model.pt"


def _start_session(train_cases: Sequence[CaseVolume], cfg: TrainConfig, out: Path, norm: Normalisation | None,
                   data_id: str) -> _Session:
    """The paper's model and optimiser (Adam, constant lr, betas), the AMP scaler and a fresh state."""
    device = resolve_device(cfg.device, cfg.workers)
    rank, world = _dist()
    # channels-last is faster for 3D convolutions on both cuDNN and oneDNN (CPU)
    model = build_model(cfg).to(device).to(memory_format=torch.channels_last_3d)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and autocast_dtype(device) == torch.float16)
    return _Session(cfg, out, device, rank, world, model, opt, scaler, norm or training_normalisation(train_cases), data_id)


def _resume(s: _Session, resume: bool) -> dict[str, Any] | None:
    """Continue ``checkpoints/last.pt`` when it is this run's (:func:`resume_state`), else start afresh
    with a warning; either way a line for the terminal goes to ``notices.txt``. Returns the checkpoint."""
    blob, why = resume_state(s.ckpt_path, s.model_path, s.cfg, s.data_id) if resume and s.ckpt_path.is_file() else (None, "")
    if blob is None and s.rank == 0 and why:
        text = f"{s.ckpt_path} not resumed: {why}; training starts afresh and replaces it"
        warnings.warn(text, stacklevel=3)
        add_notice(s.out, text)
    if s.rank == 0 and (blob is None or int(blob["best_iteration"]) == 0) and s.model_path.is_file():
        s.model_path.unlink()  # no model selected by this run yet: never leave another run's beside its log
    if blob is None:
        return None
    s.model.load_state_dict(blob["model"])
    s.opt.load_state_dict(blob["optimizer"])
    if "scaler" in blob and s.scaler.is_enabled():
        s.scaler.load_state_dict(blob["scaler"])
    s.start, s.best, s.best_it = int(blob["iteration"]), float(blob["best_dice"]), int(blob["best_iteration"])
    s.rows, s.loss_sum, s.loss_n = list(blob["log"]), float(blob["loss_sum"]), int(blob["loss_n"])
    s.norm = Normalisation.from_dict(blob["norm"])
    _set_rng_state(blob["rng"])
    log.info("resumed from %s at iteration %d", s.ckpt_path, s.start)
    if s.rank == 0:
        add_notice(s.out, f"resumed from {s.ckpt_path} at iteration {s.start} of {s.cfg.iterations} (same settings and "
                          f"data; selected so far: iteration {s.best_it}); train_resume=false trains afresh")
    return blob


def _step(s: _Session, net: torch.nn.Module, loss_fn: Callable[..., torch.Tensor], it: int, x: torch.Tensor,
          y: torch.Tensor, ids: Sequence[str]) -> float:
    """One optimisation step on one batch (Dice loss, Adam; mixed precision where enabled); the loss."""
    x, y = x.to(memory_format=torch.channels_last_3d), y.to(memory_format=torch.channels_last_3d)
    s.opt.zero_grad(set_to_none=True)
    with autocast(s.device, s.cfg.amp):
        logits = net(x)
    loss = loss_fn(logits.float(), y.float())
    if not torch.isfinite(loss):
        raise FloatingPointError(f"iteration {it}: loss is {loss.item()} for batch cases {ids}; "
                                 "check those images for NaN/constant values or lower train_lr")
    s.scaler.scale(loss).backward()
    s.scaler.step(s.opt)
    s.scaler.update()
    value = float(loss.item())
    s.loss_sum, s.loss_n = s.loss_sum + value, s.loss_n + 1
    return value


def _evaluate_and_select(s: _Session, done: int, tuning_cases: Sequence[CaseVolume], n_train: int, key: dict[str, Any],
                         elapsed: float, it_run: int) -> dict[str, Any]:
    """Tuning Dice at iteration ``done``; keep the model when it is the best so far (Methods: the model
    with the best tuning Dice is evaluated); append and write the log rows. Rank 0 only."""
    cfg = s.cfg
    score = tuning_dice(s.model, tuning_cases, s.norm, cfg, s.device) if tuning_cases else -float(done)
    is_best = score > s.best
    if is_best:
        s.best, s.best_it = score, done
        save_checkpoint(s.model_path, {**_model_blob(s.model, cfg, s.norm, done, score), "resume_key": key})
    s.rows.append({"iteration": done, "epoch": done * cfg.batch_size * s.world / n_train,
                   "train_loss": s.loss_sum / max(s.loss_n, 1), "tuning_dice": score if tuning_cases else float("nan"),
                   "best_tuning_dice": s.best if tuning_cases else float("nan"), "is_best": bool(is_best),
                   "elapsed_s": elapsed, "iterations_per_s": it_run / elapsed if elapsed > 0 else float("nan")})
    write_csv(s.out / "train_log.csv", pd.DataFrame(s.rows, columns=LOG_COLUMNS))
    write_csv(s.out / "train_timing.csv", pd.DataFrame(s.rows, columns=TIMING_COLUMNS))
    return s.rows[-1]


def _checkpoint(s: _Session, done: int) -> None:
    """Write ``checkpoints/last.pt``: everything a resumed run needs to continue bit for bit. Rank 0 only."""
    if s.rank == 0:
        save_checkpoint(s.ckpt_path, {
            "format": CHECKPOINT_FORMAT, "model_config": s.cfg.model_config.to_dict(), "fingerprint": s.cfg.fingerprint(),
            "model": s.model.state_dict(), "optimizer": s.opt.state_dict(), "scaler": s.scaler.state_dict(),
            "iteration": done, "best_dice": s.best, "best_iteration": s.best_it, "log": s.rows, "loss_sum": s.loss_sum,
            "loss_n": s.loss_n, "norm": s.norm.to_dict(), "rng": _rng_state(), "data": s.data_id, "code": s.code})


def train(
    train_cases: Sequence[CaseVolume],
    tuning_cases: Sequence[CaseVolume],
    cfg: TrainConfig,
    out_dir: str | Path,
    norm: Normalisation | None = None,
    resume: bool = True,
    stop_after: int | None = None,
    progress: bool = True,
    on_evaluate: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train on ``train_cases``, select by tuning Dice, write ``model.pt``, ``checkpoints/last.pt``, the log.

    Paper: Model training. ``norm`` defaults to the training cases' min-max range. With ``resume``,
    ``checkpoints/last.pt`` is continued only when it was made under the same
    :meth:`TrainConfig.fingerprint` (every setting that changes the result, ``iterations`` and
    ``eval_every`` included) and the same data, with its selected ``model.pt`` in place
    (:func:`resume_state`); otherwise training starts afresh with a warning, since a re-run step
    rewrites its own outputs. Either way a line for the terminal goes to ``notices.txt``; a truncated
    checkpoint is an :class:`~amtlib.errors.AmtError`. ``stop_after`` ends this call after that many
    steps (as an interruption would; the checkpoint is written first). Raises ``FloatingPointError``
    naming the iteration and cases when the loss is not finite. The parts read top to bottom:
    :func:`_start_session`, :func:`_resume`, then per iteration :func:`_step`, every ``eval_every``
    :func:`_evaluate_and_select`, and :func:`_checkpoint`.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    warn_empty_masks(train_cases)
    if not tuning_cases:
        warnings.warn("no tuning cases: the model of the last evaluation is kept as model.pt", stacklevel=2)
    data_id = data_fingerprint(train_cases, tuning_cases)
    key = {"fingerprint": cfg.fingerprint(), "data": data_id}
    s = _start_session(train_cases, cfg, out, norm, data_id)
    blob = _resume(s, resume)
    if s.rank == 0:
        write_json(out / "norm.json", {**s.norm.to_dict(), "source": "training split", "n_cases": len(train_cases)})
    net: torch.nn.Module = s.model
    if s.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(s.model, device_ids=[s.device.index] if s.device.type == "cuda" else None)
    loss_fn = DiceLoss(sigmoid=True, batch=cfg.dice_batch)
    sampler = BatchSampler(train_cases, s.norm, cfg.patch, cfg.batch_size, cfg.augment, cfg.seed, s.device, s.rank, s.world)
    writer = _tensorboard(out) if s.rank == 0 else None
    bar = None
    if progress and s.rank == 0:
        from amtlib.progress import Progress  # a bar in a terminal, plain lines in a notebook and run.log

        bar = Progress(cfg.iterations, "train", initial=s.start)
    end = cfg.iterations if stop_after is None else min(cfg.iterations, s.start + int(stop_after))
    t_run, it_run = time.perf_counter(), 0
    # On a GPU the next batches are cropped and augmented in a thread while this one trains (batches are
    # pure functions of the iteration, so this changes nothing but speed). On the CPU they are made
    # inline: there the thread competes with torch's own threads for the same cores (bench_demo on an
    # idle 2-core machine: bare loop 21.0 it/s inline vs 17.1 it/s prefetched, model step alone 22.3).
    batches = Prefetcher(sampler.batch, s.start, end, depth=2 if s.device.type == "cuda" else 0)
    try:
        s.model.train()
        for it, (x, y, ids) in zip(range(s.start, end), batches):
            loss = _step(s, net, loss_fn, it, x, y, ids)
            it_run, done = it_run + 1, it + 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", tuning_dice=f"{s.rows[-1]['tuning_dice']:.3f}" if s.rows else "-")
            evaluate = done % cfg.eval_every == 0 or done == cfg.iterations
            if evaluate:
                if s.rank == 0:
                    row = _evaluate_and_select(s, done, tuning_cases, len(train_cases), key, time.perf_counter() - t_run, it_run)
                    if writer is not None:
                        writer.add_scalar("loss/train", row["train_loss"], done)
                        writer.add_scalar("dice/tuning", row["tuning_dice"], done)
                    if on_evaluate is not None:
                        on_evaluate(row)
                s.loss_sum, s.loss_n = 0.0, 0
                if s.world > 1:
                    torch.distributed.barrier()
            if evaluate or done == end or (cfg.checkpoint_every and done % cfg.checkpoint_every == 0):
                _checkpoint(s, done)
    finally:
        batches.close()  # its thread stops also when a step raises
    if bar is not None:
        bar.close()
    if writer is not None:
        writer.close()
    if s.world > 1:
        torch.distributed.barrier()
    frame = pd.DataFrame(s.rows, columns=LOG_COLUMNS + TIMING_COLUMNS[1:])
    return TrainResult(frame, s.best_it, s.best if tuning_cases else float("nan"), s.model_path, s.ckpt_path, end, str(s.device),
                       s.norm, time.perf_counter() - t0, s.model, resumed_from=0 if blob is None else int(blob["iteration"]))


def resume_state(ckpt_path: Path, model_path: Path, cfg: TrainConfig, data_id: str) -> tuple[dict[str, Any] | None, str]:
    """``(checkpoint, "")`` when ``ckpt_path`` continues this run, else ``(None, why not)``.

    It continues this run when it was made under the same :meth:`TrainConfig.fingerprint`, data and
    amtlib code (:func:`amtlib.io.library_hash`: a resumed run is the uninterrupted one only under the
    code that began it) and ``model.pt`` is the model it selected (or one written later by the same run,
    before an interruption). Raises :class:`~amtlib.errors.AmtError` naming the file when it is truncated.
    """
    remedy = "delete it to train afresh (or run with train_resume=false / amt train --no-resume)"
    blob = read_torch_file(ckpt_path, "training checkpoint", remedy)
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        raise AmtError(ckpt_path, "not an amtlib training checkpoint", remedy)
    at = f"iteration {blob.get('iteration')}"
    detail = checkpoint_mismatch(blob, cfg)
    if detail:
        return None, f"it ({at}) was made under other settings ({detail})"
    if blob.get("data") != data_id:
        return None, f"it ({at}) was trained on other cases or volumes"
    if blob.get("code") != library_hash():
        return None, f"it ({at}) was written by another version of the amtlib code"
    best_it = int(blob["best_iteration"])
    if best_it == 0:
        return blob, ""
    try:
        selected = read_torch_file(model_path, "model", "")
    except AmtError as exc:
        return None, f"the model it selected (iteration {best_it}) is missing or unreadable ({exc.problem})"
    same_run = isinstance(selected, dict) and selected.get("resume_key") == {"fingerprint": cfg.fingerprint(), "data": data_id}
    it = int(selected.get("iteration", -1)) if isinstance(selected, dict) else -1
    if not same_run or not (it == best_it or it > int(blob["iteration"])):
        return None, f"{model_path} is not the model it selected (iteration {best_it})"
    return blob, ""


# ------------------------------------------------------------------------------------------ run folder


@dataclass
class StepData:
    """The cases of one run, loaded on the training grid, by split."""

    train: list[CaseVolume]
    tuning: list[CaseVolume]
    external_test: list[CaseVolume]
    norm: Normalisation

    def summary(self) -> pd.DataFrame:
        """Cases, median training-grid shape and foreground fraction per split."""
        rows = []
        for name, cases in (("train", self.train), ("tuning", self.tuning), ("external_test", self.external_test)):
            shapes = np.array([c.shape for c in cases]) if cases else np.zeros((0, 3))
            fg = [float(np.mean(c.mask)) for c in cases if c.mask is not None]
            rows.append({"split": name, "cases": len(cases),
                         "median_grid_zyx": tuple(int(v) for v in np.median(shapes, axis=0)) if len(cases) else None,
                         "mean_tumour_fraction": float(np.mean(fg)) if fg else float("nan")})
        return pd.DataFrame(rows)


def prepare_data(manifest_csv: str | Path, split_csv: str | Path, cfg: TrainConfig, cache_dir: str | Path | None = None) -> StepData:
    """Load every case of the split on the training grid (cached) and the training-split normalisation.

    Raises ``ValueError`` naming the file when the split has no training cases or unknown split labels.
    """
    manifest = pd.read_csv(manifest_csv, dtype={"case_id": str})
    split = pd.read_csv(split_csv, dtype={"case_id": str})
    bad = set(split["split"]) - {"train", "tuning", "external_test"}
    if bad:
        raise AmtError(split_csv, f"unknown split labels {sorted(bad)}", "expected train, tuning, external_test: run 02_split again")
    ids = {s: split.loc[split["split"] == s, "case_id"].tolist() for s in ("train", "tuning", "external_test")}
    if not ids["train"]:
        raise AmtError(split_csv, "no case has split 'train'", "run 02_split again on this run folder (is the cohort too small?)")
    workers = cfg.workers if cfg.workers > 0 else (os.cpu_count() or 1)
    root = Path(manifest_csv).parent
    load = lambda s: load_cases(manifest, ids[s], root, cfg.spacing_mm, cache_dir, workers)  # noqa: E731
    train_cases, tuning, test = load("train"), load("tuning"), load("external_test")
    return StepData(train_cases, tuning, test, training_normalisation(train_cases))


def predict_split_cases(model_path: str | Path, cases: Sequence[CaseVolume], predictions_dir: str | Path,
                        probabilities_dir: str | Path | None, cfg: TrainConfig, progress: bool = True,
                        prune_others: bool = True) -> pd.DataFrame:
    """Write predictions of ``cases`` with the selected model (see :func:`amtlib.segmentation.infer.predict_cases`).

    With ``prune_others`` (default) the folders then hold exactly these cases: predictions left by an
    earlier run on another cohort are deleted (later steps would otherwise see stale files).
    """
    from amtlib.segmentation.infer import load_model, predict_cases

    device = resolve_device(cfg.device, cfg.workers)
    model, meta = load_model(model_path, device)
    model = model.to(memory_format=torch.channels_last_3d)
    table = predict_cases(model, meta, cases, predictions_dir, probabilities_dir, cfg.threshold, device, cfg.sw_batch_size,
                          cfg.amp, progress)
    if prune_others:
        keep = {c.case_id for c in cases}
        prune_folder(predictions_dir, keep)
        if probabilities_dir is not None:
            prune_folder(probabilities_dir, keep)
    return table


def run_step(run_dir: str | Path, cfg: TrainConfig, progress: bool = True, resume: bool = True) -> TrainResult:
    """The whole of step 03 for a run folder: prepare, train, write the model card, predict tuning and
    external-test cases."""
    from amtlib.paths import RunPaths

    P = RunPaths(run_dir)
    out = P.step("03_train")
    data = prepare_data(P.manifest, P.split_csv, cfg, cache_dir=out / "cache")
    result = train(data.train, data.tuning, cfg, out, data.norm, resume=resume, progress=progress)
    rank, _ = _dist()
    if rank == 0:
        from amtlib.segmentation.model_card import write_card

        write_card(run_dir, vars(cfg), cfg.seed)
        predict_split_cases(result.model_path, data.tuning + data.external_test, P.predictions_dir,
                            P.probabilities_dir if cfg.save_probabilities else None, cfg, progress)
    return result


def cli_main(argv: Sequence[str] | None = None) -> int:
    """``amt train``: run step 03 on a run folder with a YAML config (also the ``torchrun`` entry point)."""

    from amtlib.clihelp import HelpFormatter, examples

    ap = argparse.ArgumentParser(prog="amt train", description="Train the paper's 3D U-Net on a run folder and write predictions.",
                                 formatter_class=HelpFormatter,
                                 epilog=examples("amt train --run-dir runs/demo --config configs/demo.yaml --set train_iterations=500",
                                                 "torchrun --standalone --nproc_per_node=4 -m amtlib.segmentation.train "
                                                 "--run-dir runs/paper --config configs/paper.yaml"))
    ap.add_argument("--run-dir", required=True, help="run folder holding 01_cohort/manifest.csv and 02_split/split.csv")
    ap.add_argument("--config", help="flat YAML config (train_* keys, device, seed, workers)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config keys (YAML values)")
    ap.add_argument("--no-resume", action="store_true", help="ignore checkpoints/last.pt and start afresh")
    ap.add_argument("--no-progress", action="store_true", help="hide the progress lines")
    args = ap.parse_args(argv)
    params: dict[str, Any] = {}
    if args.config:
        params.update(_read_config(Path(args.config)))
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise AmtError(f"--set {item}", "expected KEY=VALUE", "e.g. --set train_iterations=100")
        params[key.strip()] = _yaml_value(f"--set {item}", value)
        _check_train_key(key.strip())
    cfg = config_from_params(params)
    _check_run_dir(Path(args.run_dir))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        use_cuda = cfg.device != "cpu" and torch.cuda.is_available()
        if use_cuda:
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            cfg = TrainConfig(**{**asdict(cfg), "device": f"cuda:{local}"})
        torch.distributed.init_process_group("nccl" if use_cuda else "gloo")
    try:
        if world == 1:  # one process: hold the run folder as amt run does (torchrun ranks share it)
            from amtlib.io import folder_lock

            with folder_lock(args.run_dir):
                result = run_step(args.run_dir, cfg, progress=not args.no_progress, resume=not args.no_resume)
        else:
            result = run_step(args.run_dir, cfg, progress=not args.no_progress, resume=not args.no_resume)
    finally:
        if world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        how = f"resumed at iteration {result.resumed_from}" if result.resumed_from else "trained from scratch"
        print(f"{how}; best tuning Dice {result.best_tuning_dice:.4f} at iteration {result.best_iteration}; "
              f"model {result.model_path}")
    return 0


def _yaml_value(where: str, text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        raise AmtError(where, f"not a YAML value ({one_line(exc)})", "quote strings, write lists as [a, b]") from None


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise AmtError(path, "config file not found", "give an existing YAML file, e.g. --config configs/demo.yaml")
    cfg = _yaml_value(str(path), path.read_text())
    if not isinstance(cfg, dict):
        raise AmtError(path, f"expected a flat mapping of key: value, got {type(cfg).__name__}", "see configs/demo.yaml")
    return cfg


def _train_keys() -> list[str]:
    return [f"train_{f.name}" for f in fields(TrainConfig) if f.name not in ("device", "seed", "workers")] + ["device", "seed", "workers"]


def _check_train_key(key: str) -> None:
    import difflib

    if key not in _train_keys():
        near = difflib.get_close_matches(key, _train_keys(), n=1)
        raise AmtError(f"--set {key}", "not a training setting",
                       f"did you mean {near[0]}?" if near else f"settings are {', '.join(_train_keys())}")


def config_from_params(params: Mapping[str, Any]) -> TrainConfig:
    """:meth:`TrainConfig.from_params` with each value's type checked first; errors name the key."""
    for f in fields(TrainConfig):
        key = f.name if f.name in ("device", "seed", "workers") else f"train_{f.name}"
        if key not in params:
            continue
        problem = type_problem(params[key], f.default)
        if problem:
            raise AmtError(key, problem, "fix the config or the --set value")
    try:
        return TrainConfig.from_params(params)
    except (TypeError, ValueError) as exc:
        raise AmtError("training settings", str(exc), "fix the config or the --set value") from None


def _check_run_dir(run_dir: Path) -> None:
    from amtlib.paths import RunPaths

    P = RunPaths(run_dir)
    if not run_dir.is_dir():
        raise AmtError(run_dir, "run folder not found", "run steps 00-02 first: amt run --config CONFIG --out RUN --to 02")
    for f in (P.manifest, P.split_csv):
        if not f.is_file():
            raise AmtError(f, "not found", f"run steps 01-02 into it first: amt run --config CONFIG --out {run_dir} --to 02")


if __name__ == "__main__":  # the torchrun entry point: bad input as one line, as under `amt train`
    import sys

    from amtlib.errors import debug_requested, run_guarded

    _argv = [a for a in sys.argv[1:] if a != "--debug"]
    raise SystemExit(run_guarded("amt train", cli_main, _argv, debug_requested(sys.argv[1:])))
