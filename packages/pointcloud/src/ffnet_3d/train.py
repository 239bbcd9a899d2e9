"""The training loop (one readable file): CPU, CUDA + AMP, DDP via ``torchrun``.

* device: ``--device`` or CUDA when available; under ``torchrun`` each rank takes its LOCAL_RANK GPU
  (NCCL) or runs on CPU (gloo);
* AdamW + one-cycle (default) or warm-up + cosine LR, gradient-norm clipping;
* autocast + GradScaler only on CUDA;
* ``out_dir/last.pt`` after every epoch (and every ``ckpt_steps`` steps): model, optimizer, scheduler,
  scaler, epoch, step, config, RNG. ``resume`` continues exactly: the per-epoch sample order and
  augmentation are functions of (seed, epoch, index), and a mid-epoch checkpoint skips the batches
  already done;
* ``out_dir/model.safetensors``: final weights with the config and the recipe (steps, wall time).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .centerpoint import centerpoint_loss
from .checkpoint import env_rank, load_training_state, save_training_state, save_weights
from .config import Config, save_config
from .data import KittiDetectionDataset, collate
from .model import build_detector, count_parameters

__all__ = ["train"]


class EpochSampler(torch.utils.data.Sampler):
    """Shuffled order that depends only on (seed, epoch); sharded over ranks for DDP."""

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1, shuffle: bool = True):
        self.n, self.seed, self.rank, self.world, self.shuffle = n, seed, rank, world, shuffle
        self.epoch = 0
        self.skip = 0  # samples of this rank's shard to skip (mid-epoch resume)

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def _order(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        per = math.ceil(self.n / self.world)
        order = (order * math.ceil(per * self.world / max(self.n, 1)))[: per * self.world]  # pad for equal shards
        return order[self.rank::self.world]

    def __iter__(self):
        return iter(self._order()[self.skip:])

    def __len__(self) -> int:
        return max(0, math.ceil(self.n / self.world) - self.skip)


def _make_scheduler(opt, cfg: Config, total_steps: int):
    t = cfg.train
    if t.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=t.lr, total_steps=max(total_steps, 1), pct_start=t.warmup_frac, anneal_strategy="cos",
            div_factor=10.0, final_div_factor=100.0, base_momentum=0.85, max_momentum=0.95)
    if t.schedule == "cosine":
        warm = max(1, int(t.warmup_frac * total_steps))

        def f(step):
            if step < warm:
                return (step + 1) / warm
            p = (step - warm) / max(1, total_steps - warm)
            return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(p, 1.0)))

        return torch.optim.lr_scheduler.LambdaLR(opt, f)
    raise ValueError(f"unknown LR schedule {t.schedule!r} (onecycle | cosine)")


def _log(path: Path | None, msg: str, rank: int) -> None:
    if rank != 0:
        return
    if path is not None:
        with open(path, "a") as f:
            f.write(msg + "\n")


def train(cfg: Config, data_dir, out_dir, *, resume=None, device: str | None = None, max_steps: int | None = None,
          ids=None, ckpt_steps: int = 0, progress: bool = True, threads: int | None = None,
          stop_after: int | None = None) -> Path:
    """Train a detector; returns the path of the final weights (``out_dir/model.safetensors``).

    ``stop_after`` ends the run early at that global step (schedule unchanged) after writing
    ``last.pt``, as a pre-empted job would; ``resume`` then continues it. ``max_steps`` instead
    shortens the whole schedule.
    """
    rank, local_rank, world = env_rank()
    ddp = world > 1
    if threads:
        torch.set_num_threads(threads)
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if ddp:
        import torch.distributed as dist

        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / "train.log"
    t = cfg.train
    torch.manual_seed(t.seed)
    np.random.seed(t.seed)

    model = build_detector(cfg).to(dev)
    ds = KittiDetectionDataset(data_dir, cfg, model.out_size, model.feature_map_stride, ids=ids, training=True)
    if not ds.has_labels:
        raise ValueError(f"{ds.frames.split_dir}: training needs label_2/ for every frame")
    sampler = EpochSampler(len(ds), t.seed, rank, world)
    loader = torch.utils.data.DataLoader(ds, batch_size=t.batch_size, sampler=sampler, collate_fn=collate,
                                         num_workers=t.num_workers, drop_last=False)
    steps_per_epoch = math.ceil(math.ceil(len(ds) / world) / t.batch_size)
    total_steps = steps_per_epoch * t.epochs if max_steps is None else min(max_steps, steps_per_epoch * t.epochs)

    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay, betas=(0.9, 0.99))
    sched = _make_scheduler(opt, cfg, total_steps)
    use_amp = t.amp and dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_amp else None
    net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None) \
        if ddp else model

    start_epoch, step, elapsed = 0, 0, 0.0
    if resume:
        state = load_training_state(resume)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if state.get("scheduler") is not None:
            sched.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler") is not None:
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        start_epoch, step = state["epoch"], state["step"]
        elapsed = state.get("extra", {}).get("wall_time", 0.0)
        _log(log_path, f"resumed from {resume} at epoch {start_epoch} step {step}", rank)
    else:
        if t.init:
            from .checkpoint import SHIPPED_CHECKPOINT, read_checkpoint

            sd, init_cfg, _ = read_checkpoint(SHIPPED_CHECKPOINT if t.init == "shipped" else t.init)
            if init_cfg.model != cfg.model:
                raise ValueError(f"train.init {t.init}: its model config differs from this run's")
            model.load_state_dict(sd)
            _log(log_path, f"initialised from {t.init}", rank)
        save_config(cfg, out_dir / "config.yaml")
        _log(log_path, f"model {cfg.model.name}: {count_parameters(model)} parameters; {len(ds)} frames; "
                       f"{total_steps} steps; device {dev}; world {world}", rank)

    t0 = time.time() - elapsed
    done = step >= total_steps
    epoch = start_epoch
    while not done and epoch < t.epochs:
        skip_batches = step - epoch * steps_per_epoch
        sampler.set_epoch(epoch, skip_batches * t.batch_size)
        ds.set_epoch(epoch)
        net.train()
        bar = None
        if progress and rank == 0:
            from tqdm import tqdm

            bar = tqdm(total=steps_per_epoch, initial=skip_batches, desc=f"epoch {epoch + 1}/{t.epochs}",
                       unit="it", file=sys.stderr, dynamic_ncols=True)
        for batch in loader:
            targets = {k: v.to(dev) for k, v in batch["targets"].items()}
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
                out = net(batch["voxels"].to(dev), batch["coords"].to(dev), batch["batch_size"])
            loss, parts = centerpoint_loss(out, targets, t.hm_weight, t.loc_weight, t.dir_weight)
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
                gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
                opt.step()
            sched.step()
            step += 1
            lr = opt.param_groups[0]["lr"]
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{parts['loss']:.3f}", hm=f"{parts['hm']:.3f}", loc=f"{parts['loc']:.3f}",
                                dir=f"{parts['dir']:.3f}")
            if step % t.log_every == 0 or step == total_steps:
                _log(log_path, f"epoch {epoch + 1} step {step}/{total_steps} loss {parts['loss']:.4f} "
                               f"hm {parts['hm']:.4f} loc {parts['loc']:.4f} dir {parts['dir']:.4f} gnorm {float(gnorm):.2f} lr {lr:.2e} "
                               f"time {time.time() - t0:.0f}s", rank)
            if not math.isfinite(parts["loss"]):
                raise FloatingPointError(f"non-finite loss at step {step}")
            if rank == 0 and ckpt_steps and step % ckpt_steps == 0:
                save_training_state(out_dir / "last.pt", model, opt, sched, scaler, epoch, step, cfg,
                                    {"wall_time": time.time() - t0})
            if step >= total_steps:
                done = True
                break
            if stop_after is not None and step >= stop_after:
                break
        if bar is not None:
            bar.close()
        if stop_after is not None and step >= stop_after and not done:
            if rank == 0:
                save_training_state(out_dir / "last.pt", model, opt, sched, scaler,
                                    epoch + (step >= (epoch + 1) * steps_per_epoch), step, cfg,
                                    {"wall_time": time.time() - t0})
                _log(log_path, f"stopped at step {step} (resume with --resume {out_dir / 'last.pt'})", rank)
            if ddp:
                import torch.distributed as dist

                dist.destroy_process_group()
            return out_dir / "last.pt"
        if step >= (epoch + 1) * steps_per_epoch:
            epoch += 1
        if rank == 0 and (epoch % t.ckpt_every == 0 or done):
            save_training_state(out_dir / "last.pt", model, opt, sched, scaler, epoch, step, cfg,
                                {"wall_time": time.time() - t0})
    wall = time.time() - t0
    final = out_dir / "model.safetensors"
    if rank == 0:
        save_weights(final, model, cfg, {"steps": step, "epochs": epoch, "wall_time_s": round(wall, 1),
                                         "frames": len(ds), "world_size": world, "device": str(dev),
                                         "threads": torch.get_num_threads(), "data": str(data_dir)})
        _log(log_path, f"done: {step} steps in {wall:.0f}s -> {final}", rank)
    if ddp:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return final

