"""Training throughput of the paper's 3D U-Net beside MONAI's UNet of similar width, on this device.

Times full optimisation steps (forward, Dice loss, backward, Adam) on random data at the paper's batch
(3) and a given patch; on CUDA with bf16 autocast (fp16 where bf16 is unsupported), channels-last and
cudnn autotuning, exactly as ``amtlib.segmentation.train`` does. Prints one line per model and one SUMMARY line:

    python benchmarks/bench_train.py --device cpu --patch 16 48 48 --base 8 --blocks 1 --iters 10
    python benchmarks/bench_train.py --device cuda --patch 64 128 128 --base 32 --blocks 2 --iters 20

``--patch`` is (z, y, x) voxels. Peak memory is CUDA ``max_memory_allocated`` per model, or the
process's peak RSS on CPU (monotone over the run, so the MONAI model is timed first).
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
from monai.losses import DiceLoss
from monai.networks.nets import UNet

from amtlib.segmentation.infer import autocast, autocast_dtype
from amtlib.segmentation.model import ModelConfig, UNet3D, count_parameters
from amtlib.segmentation.train import resolve_device


def time_steps(model: torch.nn.Module, device: torch.device, batch: int, patch: tuple[int, int, int], iters: int,
               warmup: int, amp: bool) -> dict[str, float]:
    """Seconds per optimisation step (median-free mean over ``iters`` after ``warmup``) and peak memory in MiB."""
    model = model.to(device).to(memory_format=torch.channels_last_3d).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999))
    scaler = torch.amp.GradScaler("cuda", enabled=amp and autocast_dtype(device) == torch.float16)
    loss_fn = DiceLoss(sigmoid=True, batch=True)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((batch, 1, *patch), generator=gen).to(device).to(memory_format=torch.channels_last_3d)
    y = (torch.rand((batch, 1, *patch), generator=gen) > 0.9).float().to(device).to(memory_format=torch.channels_last_3d)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast(device, amp):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    for _ in range(iters):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    s = (time.perf_counter() - t) / iters
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"s_per_step": s, "it_per_s": 1 / s, "voxels_per_s": batch * patch[0] * patch[1] * patch[2] / s, "peak_mib": peak,
            "params": float(count_parameters(model))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda[:i]")
    ap.add_argument("--patch", type=int, nargs=3, default=[16, 48, 48], metavar=("Z", "Y", "X"))
    ap.add_argument("--base", type=int, default=8, help="channels at the top level")
    ap.add_argument("--blocks", type=int, default=1, help="conv/deconv blocks per level (paper model)")
    ap.add_argument("--batch", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all cores)")
    ap.add_argument("--no-amp", action="store_true", help="full float32 on CUDA")
    args = ap.parse_args(argv)
    device = resolve_device(args.device, args.threads)
    patch = tuple(args.patch)
    amp = not args.no_amp
    torch.manual_seed(0)
    b = args.base
    models = {
        "monai_unet": UNet(spatial_dims=3, in_channels=1, out_channels=1, channels=(b, 2 * b, 4 * b, 8 * b), strides=(2, 2, 2),
                           num_res_units=0, norm="batch"),
        "paper_unet": UNet3D(ModelConfig(base_width=b, blocks_per_level=args.blocks)),
    }
    prec = str(autocast_dtype(device) if amp else None).replace("torch.", "") if device.type == "cuda" else "float32"
    threads = torch.get_num_threads() if device.type == "cpu" else 0
    res = {}
    for name, model in models.items():
        r = time_steps(model, device, args.batch, patch, args.iters, args.warmup, amp)
        res[name] = r
        print(f"{name:11s} params {int(r['params']):>10,d}  {r['s_per_step']:.4f} s/step  {r['it_per_s']:.2f} it/s  "
              f"{r['voxels_per_s'] / 1e6:.2f} Mvox/s  peak {r['peak_mib']:.0f} MiB", flush=True)
    p, m = res["paper_unet"], res["monai_unet"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{threads}"
    print(f"SUMMARY device={name} precision={prec} batch={args.batch} patch_zyx={'x'.join(map(str, patch))} base={b} "
          f"blocks={args.blocks} paper_s_per_step={p['s_per_step']:.4f} paper_it_per_s={p['it_per_s']:.2f} "
          f"paper_Mvox_per_s={p['voxels_per_s'] / 1e6:.2f} paper_peak_MiB={p['peak_mib']:.0f} "
          f"monai_s_per_step={m['s_per_step']:.4f} ratio={p['s_per_step'] / m['s_per_step']:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
