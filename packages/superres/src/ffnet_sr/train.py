"""One-file SR training loop (nanoGPT style): CPU, CUDA + AMP, DDP via ``torchrun``.

Recipe (YAML, BasicSR key names, see ``config.DEFAULTS`` and ``options/train``): HR folders with
bicubic LR made once at load time, random crops / flips / rotations, L1 + 0.02 x FFT loss, Adam with
a cosine schedule, EMA of the weights, periodic Y-channel PSNR on a benchmark set, checkpoints
that carry the model arguments, and ``--resume`` that continues exactly (RNG, optimizer, EMA).
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from .data import PairSampler, load_benchmark, to_float
from .metrics import calculate_psnr, tensor_to_u8


# ----------------------------------------------------------------------------- model building
def build_network(net_cfg: dict, scale: int) -> nn.Module:
    """``network_g`` dict -> module. FFNetSR is ours; other types come from BasicSR's registry."""
    kw = {k: v for k, v in net_cfg.items() if k != "type"}
    if net_cfg["type"] == "FFNetSR":
        from .archs import FFNetSR

        kw.setdefault("upscale", scale)
        return FFNetSR(**kw)
    from .basicsr_plugin import build_basicsr_arch  # heavy + needs the torchvision shim: only on demand

    return build_basicsr_arch(net_cfg["type"], scale=scale, **kw)


def load_weights(model: nn.Module, state: dict, strict: bool = True) -> list[str]:
    """Load a state dict; with ``strict=False`` skip missing keys and shape mismatches (warm start).

    Returns the names of the parameters that were not loaded.
    """
    own = model.state_dict()
    if strict:
        model.load_state_dict(state, strict=True)
        return []
    ok = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(ok, strict=False)
    return sorted(k for k in own if k not in ok)


# ----------------------------------------------------------------------------- loss / schedule
def fft_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between rfft2 spectra, real and imaginary parts stacked (the FFNet SR recipe)."""
    p = torch.view_as_real(torch.fft.rfft2(pred.float()))
    t = torch.view_as_real(torch.fft.rfft2(target.float()))
    return F.l1_loss(p, t)


def lr_at(it: int, base_lr: float, total: int, eta_min: float, warmup: int) -> float:
    """Linear warm-up then one cosine period from ``base_lr`` to ``eta_min`` (iteration ``it`` is 0-based)."""
    if warmup > 0 and it < warmup:
        return base_lr * (it + 1) / warmup
    t = (it - max(warmup, 0)) / max(1, total - max(warmup, 0))
    return eta_min + (base_lr - eta_min) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float, step: int | None = None) -> None:
    """EMA of the weights. With ``step`` (0-based update count) the decay warms up as
    ``min(decay, (1 + step) / (10 + step))``, so short CPU schedules do not carry the random init along
    (plain 0.999 keeps 0.999^2000 = 13.5 % of the initial weights after 2000 iterations)."""
    if step is not None:
        decay = min(decay, (1.0 + step) / (10.0 + step))
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate_psnr(model: nn.Module, pairs, scale: int, device: torch.device, channels_last: bool = False) -> float:
    """Mean Y-channel PSNR (crop_border = scale) over ``[(name, hr_u8, lr_u8)]``."""
    was_training = model.training
    model.eval()
    vals = []
    for _, hr, lr in pairs:
        x = to_float(lr)[None].to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        sr = model(x)[0]
        vals.append(calculate_psnr(tensor_to_u8(sr), hr.permute(1, 2, 0).numpy(), crop_border=scale))
    model.train(was_training)
    return sum(vals) / len(vals)


# ----------------------------------------------------------------------------- the loop
class _Log:
    def __init__(self, path: Path | None):
        self.f = open(path, "a", buffering=1) if path else None

    def __call__(self, msg: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}"
        if self.f:
            self.f.write(line + "\n")


def train(cfg: dict, resume: str | None = None, device: str | None = None, progress: bool = True,
          until: int | None = None) -> dict:
    """Run training from a config dict (see ``config.load_config``). Returns a summary dict.

    Args:
        resume: checkpoint path, or "auto" for the run's ``ckpt_last.pt``.
        device: "cpu", "cuda", "cuda:1"; default CUDA (this rank's) when available, else CPU.
        until: stop (with a checkpoint) after this iteration; ``--resume`` continues exactly.
    """
    # --- distributed / device setup (torchrun sets RANK, LOCAL_RANK, WORLD_SIZE)
    ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if device is None:
        use_cuda = torch.cuda.is_available() and cfg.get("num_gpu", "auto") not in (0, "0")
        device = f"cuda:{local_rank}" if use_cuda else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if ddp:
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    if dev.type == "cpu" and cfg.get("num_threads"):
        torch.set_num_threads(int(cfg["num_threads"]))
    master = rank == 0

    scale = int(cfg["scale"])
    tcfg, dcfg = cfg["train"], cfg["datasets"]["train"]
    root = Path(cfg["path"].get("experiments_root") or Path("runs") / "superres" / cfg["name"])
    if master:
        root.mkdir(parents=True, exist_ok=True)
    log = _Log(root / "train.log" if master else None)
    ckpt_path = root / "ckpt_last.pt"

    # --- model, EMA, optimizer
    torch.manual_seed(int(cfg["manual_seed"]))
    model = build_network(cfg["network_g"], scale).to(dev)
    pre = cfg["path"].get("pretrain_network_g")
    if pre and not resume:
        from .weights import load_state_dict

        skipped = load_weights(model, load_state_dict(pre, cfg["path"].get("param_key_g")),
                               strict=bool(cfg["path"].get("strict_load_g", True)))
        log(f"warm start from {pre}; not loaded: {skipped}")
    channels_last = dev.type == "cpu" or bool(tcfg.get("channels_last", False))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema_decay = float(tcfg.get("ema_decay") or 0)
    ema = copy.deepcopy(model).eval() if ema_decay > 0 else None
    ema_warmup = bool(tcfg.get("ema_warmup", True))
    if ema is not None:
        for p in ema.parameters():
            p.requires_grad_(False)
    ocfg = tcfg["optim_g"]
    if ocfg.get("type", "Adam") not in ("Adam", "AdamW"):
        raise ValueError(f"unsupported optimizer {ocfg['type']}")
    opt_cls = torch.optim.AdamW if ocfg.get("type") == "AdamW" else torch.optim.Adam
    base_lr = float(ocfg["lr"])
    opt = opt_cls(model.parameters(), lr=base_lr, betas=tuple(ocfg.get("betas", (0.9, 0.99))),
                  weight_decay=float(ocfg.get("weight_decay", 0.0)))
    total = int(tcfg["total_iter"])
    eta_min = float(tcfg.get("scheduler", {}).get("eta_min", 1e-7))
    warmup = int(tcfg.get("warmup_iter", -1))
    amp = tcfg.get("amp") or False
    if amp == "fp16" and dev.type != "cuda":
        raise ValueError("fp16 AMP needs CUDA; use amp: bf16 on CPU")
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp) if amp else None
    # mixed precision for the first `amp_until` fraction of iterations, full fp32 for the low-lr tail
    amp_stop = int(float(tcfg.get("amp_until", 1.0)) * total)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
    w_pix = float(tcfg.get("pixel_opt", {}).get("loss_weight", 1.0))
    w_fft = float((tcfg.get("fft_opt") or {}).get("loss_weight", 0.0))

    # --- data (every rank preloads; they draw different patches from rank-specific generators)
    gt_size = int(dcfg["gt_size"])
    sampler = PairSampler(dcfg["dataroot_gt"], scale, gt_size // scale, dcfg.get("use_hflip", True),
                          dcfg.get("use_rot", True), dcfg.get("max_images"))
    gen = torch.Generator().manual_seed(int(cfg["manual_seed"]) * 1000 + rank)
    vcfg = cfg["datasets"].get("val")
    val_pairs = load_benchmark(vcfg["dataroot"], scale) if (vcfg and master) else None
    bs = int(dcfg["batch_size_per_gpu"])

    start_it, elapsed, best, history = 0, 0.0, -1.0, []
    if resume:
        rpath = ckpt_path if resume == "auto" else Path(resume)
        ck = torch.load(rpath, map_location=dev, weights_only=False)
        model.load_state_dict(ck["params"])
        if ema is not None and ck.get("params_ema") is not None:
            ema.load_state_dict(ck["params_ema"])
        opt.load_state_dict(ck["optimizer"])
        scaler.load_state_dict(ck.get("scaler", {})) if ck.get("scaler") else None
        gen.set_state(ck["generator"][rank] if rank < len(ck["generator"]) else ck["generator"][0])
        start_it, elapsed = ck["iter"], ck.get("elapsed", 0.0)
        best, history = ck.get("best_psnr", -1.0), ck.get("history", [])
        log(f"resumed from {rpath} at iter {start_it} (elapsed {elapsed / 3600:.2f} h)")
    net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None) \
        if ddp else model

    if master:
        nparam = sum(p.numel() for p in model.parameters())
        log(f"start: name={cfg['name']} scale={scale} net={json.dumps(cfg['network_g'])} params={nparam} "
            f"images={len(sampler)} batch={bs}x{world} lr_patch={gt_size // scale} iters={total} amp={amp}(until {amp_stop}) "
            f"device={dev} threads={torch.get_num_threads()} world={world}")
        with open(root / "config.json", "w") as f:
            json.dump(cfg, f, indent=2, default=str)

    pbar = None
    if progress and master:
        from tqdm import tqdm

        pbar = tqdm(total=total, initial=start_it, desc=cfg["name"], dynamic_ncols=True)

    def save(it: int) -> None:
        gens = [gen.get_state()]
        if ddp:  # every rank takes part in the gather; only the master writes
            gathered = [None] * world
            dist.all_gather_object(gathered, gen.get_state())
            gens = gathered
        if not master:
            return
        state = {"iter": it, "params": model.state_dict(), "params_ema": ema.state_dict() if ema else None,
                 "optimizer": opt.state_dict(), "scaler": scaler.state_dict(), "generator": gens,
                 "elapsed": elapsed, "best_psnr": best, "history": history, "config": cfg,
                 "network_g": cfg["network_g"], "scale": scale}
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, ckpt_path)

    print_freq = int(cfg["logger"].get("print_freq", 100))
    save_freq = int(cfg["logger"].get("save_checkpoint_freq", 1000))
    val_freq = int(cfg["val"].get("val_freq", 0) or 0)
    run_loss, run_n, t_last = 0.0, 0, time.time()
    model.train()
    stop = min(total, until) if until else total
    for it in range(start_it, stop):
        lr = lr_at(it, base_lr, total, eta_min, warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        lq, gt = sampler.sample(bs, gen)
        lq, gt = lq.to(dev, non_blocking=True), gt.to(dev, non_blocking=True)
        if channels_last:
            lq = lq.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None and it < amp_stop):
            out = net(lq)
        out = out.float()
        loss = w_pix * F.l1_loss(out, gt)
        if w_fft:
            loss = loss + w_fft * fft_l1(out, gt)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if ema is not None:
            ema_update(ema, model, ema_decay, step=it if ema_warmup else None)
        run_loss += loss.item()
        run_n += 1
        done = it + 1
        if pbar is not None:
            pbar.update(1)
        if done % print_freq == 0 or done == stop:
            now = time.time()
            elapsed += now - t_last
            sec_it = (now - t_last) / max(1, run_n)
            t_last = now
            if master:
                log(f"iter {done} loss {run_loss / run_n:.5f} lr {lr:.3e} {sec_it:.3f}s/it elapsed {elapsed / 3600:.3f}h")
                if pbar is not None:
                    pbar.set_postfix(loss=f"{run_loss / run_n:.4f}", psnr=f"{best:.2f}" if best > 0 else "-")
            run_loss, run_n = 0.0, 0
        if val_pairs is not None and val_freq and (done % val_freq == 0 or done == total):
            psnr = evaluate_psnr(ema if ema is not None else model, val_pairs, scale, dev, channels_last)
            raw = evaluate_psnr(model, val_pairs, scale, dev, channels_last) if ema is not None else psnr
            best = max(best, psnr)
            history.append({"iter": done, "psnr": psnr, "psnr_raw": raw, "elapsed_h": elapsed / 3600})
            log(f"val iter {done} {vcfg.get('name', 'val')} psnr {psnr:.3f} (raw weights {raw:.3f}; best {best:.3f})")
            if pbar is not None:
                pbar.set_postfix(loss=f"{float(loss):.4f}", psnr=f"{psnr:.2f}")
            t_last = time.time()  # validation time is not training time
        if done % save_freq == 0 or done == stop:
            save(done)
    if pbar is not None:
        pbar.close()
    if master:
        log(f"{'done' if stop == total else 'paused'}: {stop} iters, {elapsed / 3600:.3f} h training wall time, "
            f"best val psnr {best:.3f}")
    if ddp:
        # NOTE: every rank waits for the others before tearing gloo down (as ffnet_3d does). Without it, rank 1
        # left while rank 0 was still writing the checkpoint, and once, on a loaded machine, it died with SIGABRT.
        dist.barrier()
        dist.destroy_process_group()
    return {"iters": stop, "elapsed_h": elapsed / 3600, "best_psnr": best, "history": history,
            "checkpoint": str(ckpt_path)}
