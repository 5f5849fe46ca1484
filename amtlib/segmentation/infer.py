"""Whole-volume inference: sliding window, sigmoid, threshold, back to each case's original grid.

Paper: "Training settings" (tuning Dice for model selection) and the predictions evaluated in
"Evaluation". MONAI :func:`~monai.inferers.sliding_window_inference` tiles the normalised volume with
the training patch (Gaussian blending, overlap a parameter; volumes smaller than the patch are padded
with air). The sigmoid probability is resampled trilinearly back onto the image's original grid and
thresholded at ``threshold`` (default 0.5; the paper suggests an adjustable operating point), and
written as uint8 NIfTI with exactly the image's shape and affine.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from monai.inferers import sliding_window_inference

from amtlib.errors import AmtError
from amtlib.io import save_nifti, write_bytes
from amtlib.segmentation.model import ModelConfig, UNet3D
from amtlib.segmentation.preprocess import CaseVolume, Normalisation, load_case, resample_to_shape

MODEL_FORMAT = "amtlib-unet3d/1"


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 on CUDA devices that support it, else fp16 on CUDA; None (full float32) on CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """Mixed-precision context for ``device`` (a no-op on CPU or when disabled)."""
    dtype = autocast_dtype(device) if enabled else None
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def predict_probability(
    model: torch.nn.Module,
    image: np.ndarray,
    patch: Sequence[int],
    device: torch.device | str = "cpu",
    overlap: float = 0.25,
    sw_batch_size: int = 4,
    pad_value: float = 0.0,
    amp: bool = True,
    mirror: bool = False,
) -> np.ndarray:
    """Tumour probability (float32, same (z, y, x) shape) of a normalised volume by sliding window.

    ``mirror`` (test-time augmentation, off by default and not in the paper): the mean of the
    sigmoid probabilities over the 8 mirrorings of the three axes, as nnU-Net's mirroring; 8 times
    the forward passes.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None].to(device)
    flips: list[tuple[int, ...]] = [()]
    if mirror:
        flips = [tuple(a for a, bit in zip((2, 3, 4), (i & 1, i & 2, i & 4)) if bit) for i in range(8)]
    total = None
    for axes in flips:
        xi = torch.flip(x, axes) if axes else x
        with autocast(device, amp):
            logits = sliding_window_inference(xi, tuple(int(p) for p in patch), sw_batch_size, model, overlap=overlap,
                                              mode="gaussian", padding_mode="constant", cval=float(pad_value))
        prob = torch.sigmoid(torch.as_tensor(logits).float())
        prob = torch.flip(prob, axes) if axes else prob
        total = prob if total is None else total + prob
    model.train(was_training)
    return (total / len(flips))[0, 0].cpu().numpy()


def binarize(prob: np.ndarray, threshold: float) -> np.ndarray:
    """The predicted mask: uint8 1 where the probability is at least ``threshold``, else 0.

    The one rule for every prediction the package writes (step 03 and ``amt predict``); the paper
    scores this mask directly (voxel metrics) and counts lesions on it after removing components
    under 10 voxels (:mod:`amtlib.evaluation.lesions`). ``threshold`` must lie strictly between 0 and 1.
    """
    thr = float(threshold)
    if not 0.0 < thr < 1.0:
        raise ValueError(f"threshold {thr} must lie strictly between 0 and 1")
    return (np.asarray(prob) >= thr).astype(np.uint8)


def read_torch_file(path: str | Path, what: str, remedy: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; a truncated or corrupt file is an ``AmtError``."""
    path = Path(path)
    try:
        with warnings.catch_warnings():  # garbage bytes make torch warn about a pickle protocol before it fails
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged file raises what the unpickler meets (IndexError, KeyError, ... for garbage)
        if isinstance(exc, FileNotFoundError):
            raise AmtError(path, f"{what} not found", remedy) from None
        if isinstance(exc, pickle.UnpicklingError) and "weights only" in str(exc).lower():
            # a whole file whose pickle asks for Python objects beyond tensors and plain data: amtlib never
            # writes such a file, and loading it would run code from it (torch's advice is not repeated)
            raise AmtError(path, f"not a {what} amtlib wrote: it holds Python objects a safe load refuses "
                           "(loading it could run code from the file)", remedy) from None
        raise AmtError(path, f"unreadable {what}, truncated or corrupt ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0] if str(exc) else ''})", remedy) from None


def write_torch_file(path: str | Path, state: Any) -> Path:
    """``torch.save`` into memory, then write the bytes atomically (never a half-written file).

    Serialising to a buffer keeps the zip archive's root folder name fixed (``torch.save`` to a path
    names it after the file, here a random temporary name), so identical states give identical bytes.
    """
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    return write_bytes(path, buffer.getvalue())


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[UNet3D, dict[str, Any]]:
    """Load ``model.pt`` (``weights_only=True``) as an eval-mode network plus its metadata.

    The metadata holds ``norm`` (HU range), ``spacing_mm`` (training grid, None = native), ``patch``,
    ``sw_overlap``, ``threshold``, ``iteration`` and ``tuning_dice``. Raises ``ValueError`` naming the
    file (:class:`~amtlib.errors.AmtError`) when it is missing, truncated or not an amtlib model.
    """
    path = Path(path)
    if not path.is_file():
        raise AmtError(path, "model file not found", "run notebook 03_train first, or give the run folder")
    remedy = "give the model.pt that step 03 wrote (or re-run it: amt run --only 03_train --force)"
    blob = read_torch_file(path, "model file", remedy)
    if not isinstance(blob, dict) or blob.get("format") != MODEL_FORMAT:
        raise AmtError(path, f"not an amtlib 3D U-Net model (expected format {MODEL_FORMAT})", remedy)
    try:
        model = UNet3D(ModelConfig.from_dict(blob["model_config"]))
        model.load_state_dict(blob["model"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise AmtError(path, f"model file of format {MODEL_FORMAT} whose weights do not load ({type(exc).__name__})",
                       remedy) from None
    # channels-last, as in training: a third faster on the CPU (oneDNN) and on cuDNN; the probabilities
    # agree with the default layout to float rounding (~1e-6)
    model.to(torch.device(device)).to(memory_format=torch.channels_last_3d).eval()
    return model, {k: v for k, v in blob.items() if k not in ("model",)}


def to_original_grid(prob: np.ndarray, case: CaseVolume) -> np.ndarray:
    """Resample a training-grid probability map onto the case's original (z, y, x) grid."""
    out = resample_to_shape(prob, case.original_shape)
    return np.clip(out, 0.0, 1.0, out=out)  # in place: a 512x512x600 map is 0.6 GB


def predict_case_probability(model: torch.nn.Module, meta: dict[str, Any], case: CaseVolume,
                             device: torch.device | str = "cpu", overlap: float | None = None, sw_batch_size: int = 4,
                             amp: bool = True, mirror: bool = False) -> np.ndarray:
    """Probability map of one case on its original (z, y, x) grid: normalise with the model's
    training range, slide the model's patch (``overlap`` defaults to the model's), resample back."""
    norm = Normalisation.from_dict(meta["norm"])
    ov = float(meta.get("sw_overlap", 0.25) if overlap is None else overlap)
    prob = predict_probability(model, norm.apply(case.image_hu), meta["patch"], device, ov, sw_batch_size,
                               norm.pad_value, amp, mirror)
    return to_original_grid(prob, case)


def predict_cases(
    model: torch.nn.Module,
    meta: dict[str, Any],
    cases: Iterable[CaseVolume],
    predictions_dir: str | Path,
    probabilities_dir: str | Path | None = None,
    threshold: float | None = None,
    device: torch.device | str = "cpu",
    sw_batch_size: int = 4,
    amp: bool = True,
    progress: bool = False,
) -> pd.DataFrame:
    """Write ``<case_id>.nii.gz`` (uint8 0/1, original shape and affine) for each case; one row per case.

    ``cases`` are on the model's training grid (``meta["spacing_mm"]``); ``threshold`` defaults to the
    model's. With ``probabilities_dir`` the float32 probability map is written as well. Columns:
    ``case_id, prediction_path, predicted_voxels, max_probability``.
    """
    thr = float(meta.get("threshold", 0.5) if threshold is None else threshold)
    binarize(np.zeros(0), thr)  # refuse a bad threshold before any work
    cases = list(cases)
    rows = []
    it = cases
    if progress:
        from amtlib.progress import track

        it = track(cases, desc="predict", unit="case")
    for case in it:
        prob = predict_case_probability(model, meta, case, device, sw_batch_size=sw_batch_size, amp=amp)
        pred = binarize(prob, thr)
        path = save_nifti(pred, case.affine, Path(predictions_dir) / f"{case.case_id}.nii.gz")
        if probabilities_dir is not None:
            save_nifti(prob.astype(np.float32), case.affine, Path(probabilities_dir) / f"{case.case_id}.nii.gz")
        rows.append({"case_id": case.case_id, "prediction_path": str(path), "predicted_voxels": int(pred.sum()),
                     "max_probability": float(prob.max())})
    return pd.DataFrame(rows, columns=["case_id", "prediction_path", "predicted_voxels", "max_probability"])


def predict_nifti(model_path: str | Path, image_path: str | Path, out_path: str | Path, threshold: float | None = None,
                  device: torch.device | str = "cpu") -> Path:
    """Segment one NIfTI CT image (HU) with a saved model; write the uint8 mask in the image's geometry."""
    model, meta = load_model(model_path, device)
    spacing = meta.get("spacing_mm")
    case = load_case(Path(image_path).name.split(".")[0], image_path, None, spacing)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    # predict into a private folder: the case id comes from the image name, which may sit beside ``out``
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        predict_cases(model, meta, [case], tmp, threshold=threshold, device=device)
        os.replace(Path(tmp) / f"{case.case_id}.nii.gz", out)
    return out
