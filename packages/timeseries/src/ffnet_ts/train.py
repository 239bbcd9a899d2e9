"""One readable training loop for the forecasters (nanoGPT style).

* Device: ``auto`` picks cuda, then mps, then cpu; ``--device`` overrides. Autocast: on CUDA bf16, or fp16
  with a grad scaler; on CPU bf16 for the training steps when ``precision="bf16"`` (native-bf16 CPUs only),
  with evaluation in fp32.
* DDP: launched with ``torchrun`` (``WORLD_SIZE > 1``) every rank trains on its shard of each epoch's
  permutation (global batch = ``batch_size``), gradients are averaged by DDP (nccl on CUDA, gloo on CPU), BN
  running statistics are broadcast from rank 0 after each epoch, and every rank scores the full validation
  split, so early stopping decides identically everywhere and all ranks end with identical weights.
* Early stopping on validation MSE (standardized space, all windows), patience in epochs; at the end the
  best epoch's weights are loaded back.
* Budget: at most ``epochs`` epochs and, when ``time_budget`` is set, no new epoch is started once the
  training seconds so far plus the last epoch's duration would exceed it (so a run ends near its budget
  instead of far past it), and an epoch that reaches the budget is cut after the step that reaches it
  (minus the time the validation pass will take: the last one's, or estimated from the step time before
  the first); the partial epoch is validated like any other and its
  history record says how many ``steps`` it ran. ``FitResult.stop_reason`` says which
  rule ended training: ``early_stopping``, ``epoch_cap`` or ``time_budget``. The budget counts the seconds
  stored in the resume file, so ``--resume`` continues the same budget rather than starting a new one.
* ``epoch_windows`` caps the training windows per epoch (a seeded random subset of the permutation), so
  that early stopping and the tuner can act on large datasets more often than once per full pass.
* Checkpoints carry the full config (model name + arguments, data protocol + scaler, training config);
  the resume file also holds the optimizer, grad scaler, RNG states, early-stopping state and history, so
  ``--resume`` continues exactly (bit-identical on CPU with the same thread count).
* Determinism: one seed drives the initialization, every epoch's permutation (seeded by seed and epoch,
  not by a running generator) and dropout.

LR schedules (``lr_schedule``; epochs are 1-based below):

* ``official``: what the reference FFNet-TS scripts actually execute. They build a OneCycleLR that is never
  stepped, but constructing it sets the lr to lr/25, so epoch 1 runs at lr/25; ``type3`` then gives lr for
  epochs 2-4 and lr * 0.9^(e-4) from epoch 5 on.
* ``type3``: the same without the epoch-1 quirk (lr for epochs 1-4).
* ``type1``: lr * 0.5^(e-1) (DLinear's reference schedule).
* ``onecycle``: per-step one-cycle (warm-up 30 %, from lr/25, cosine down to lr/25e4), PatchTST's ``TST``.
* ``cosine``: per-step cosine from lr to 0 over ``epochs``; ``constant``.

``schedule_offset`` (epochs, default 0) starts ``cosine`` and ``onecycle`` at that epoch instead of the first:
they then run over the epochs ``schedule_offset + 1 .. epochs``. The tuner uses it to anneal each rung's new
epochs and then its survivor's, each continuing a run that already trained ``schedule_offset`` epochs, to lr 0
(a warm restart per stage; ``tune``).

Weight averaging (``ema``, off by default in ``TrainConfig``): an exponential moving average of the weights,
updated after every optimizer step with decay ``min(ema, (1 + t) / (10 + t))`` at step ``t`` (the warm-up
keeps the random initialization from lingering in the average), in float32 whatever the autocast. When it
is on, validation, early stopping, the best checkpoint and the weights ``fit`` leaves in the model are all
the averaged ones; the raw weights only train. Buffers are copied, not averaged.

Training losses (``loss``): ``mse`` (the reference), ``mae`` (L1) and ``huber`` (smooth L1, delta 1, in
standardized units). Validation, early stopping and every reported metric stay MSE / MAE whatever the
training loss.
"""

from __future__ import annotations

import copy
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from ffnet.fileio import atomic_output
from torch import nn

from .data import Prepared, cycle_gain, gather_windows
from .options import LOSSES, LR_SCHEDULES, PRECISIONS

_LOSS_FNS = {"mse": F.mse_loss, "mae": F.l1_loss, "huber": F.smooth_l1_loss}  # keys: options.LOSSES
CHECKPOINT_FORMAT = "ffnet-ts/1"


class ConfigError(ValueError):
    """Unusable option (unknown device, bad schedule, incompatible resume file): exit code 2 in the CLI."""


@dataclass
class TrainConfig:
    epochs: int = 10
    patience: int = 3
    batch_size: int = 512
    lr: float = 1e-4
    lr_schedule: str = "official"
    weight_decay: float = 0.0
    seed: int = 2021
    device: str = "auto"
    amp: bool = True
    eval_batch_size: int = 512
    progress: bool = True
    time_budget: float | None = None  # seconds of training + validation; None: epochs only
    epoch_windows: int | None = None  # training windows per epoch; None: every window
    val_stride: int = 1  # score every k-th validation window (the tuner's cheap validation); 1: all
    loss: str = "mse"  # training loss: mse | mae | huber (validation and metrics are always MSE / MAE)
    precision: str = "fp32"  # CPU training steps: fp32 | bf16 (autocast; needs native bf16, see accel)
    ema: float | None = None  # per-step decay of an exponential moving average of the weights; None: off
    schedule_offset: int = 0  # epochs trained before a cosine / onecycle schedule starts (see module docstring)
    grad_checkpointing: int = 0  # > 1: FFNet-TS's channel-mixer hidden layer in that many recomputed slices; 0: off


def training_loss(name: str):
    """The training criterion for ``TrainConfig.loss`` (mean over every element)."""
    if name in _LOSS_FNS:
        return _LOSS_FNS[name]
    raise ConfigError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")


# ---------------------------------------------------------------------------------------------------------
# Devices and processes
# ---------------------------------------------------------------------------------------------------------


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def master(self) -> bool:
        return self.rank == 0


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda, mps, cpu (first available); anything else must be a usable torch device."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"unknown device {name!r} (use auto, cpu, cuda, cuda:N or mps)") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"device {name!r} requested but MPS is not available")
    return device


def setup_distributed(device: str = "auto") -> tuple[DistInfo, torch.device]:
    """Initialize the process group when launched by torchrun; returns (DistInfo, this rank's device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), resolve_device(device)
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return info, dev


def teardown_distributed(info: DistInfo) -> None:
    """End a torchrun run cleanly: every rank waits until rank 0 has written its outputs, then leaves the group.

    Only the success path calls this. A rank that fails exits non-zero and torchrun stops the others, so no rank
    is left waiting here for one that has died."""
    if info.world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------------------
# Learning rate
# ---------------------------------------------------------------------------------------------------------


def lr_at(cfg: TrainConfig, epoch: int, step: int, steps_per_epoch: int) -> float:
    """Learning rate for 0-based ``epoch`` and ``step`` within it (see module docstring)."""
    base, e = cfg.lr, epoch + 1
    s = cfg.lr_schedule
    if s == "official":
        return base / 25 if e == 1 else (base if e <= 4 else base * 0.9 ** (e - 4))
    if s == "type3":
        return base if e <= 4 else base * 0.9 ** (e - 4)
    if s == "type1":
        return base * 0.5 ** (e - 1)
    if s == "constant":
        return base
    off = min(max(cfg.schedule_offset, 0), max(cfg.epochs - 1, 0))
    total = max((cfg.epochs - off) * steps_per_epoch, 1)
    t = min(max(epoch - off, 0) * steps_per_epoch + step, total - 1)
    if s == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * t / total))
    if s == "onecycle":
        warm = max(int(0.3 * total) - 1, 1)
        lo, hi, end = base / 25, base, base / 25 / 1e4
        if t <= warm:
            return hi + (lo - hi) * 0.5 * (1 + math.cos(math.pi * t / warm))
        p = (t - warm) / max(total - 1 - warm, 1)
        return end + (hi - end) * 0.5 * (1 + math.cos(math.pi * p))
    raise ConfigError(f"unknown lr schedule {s!r}; choose from {', '.join(LR_SCHEDULES)}")


# ---------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a precision this device cannot run well (bf16 on a CPU without native bf16 is emulated)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if precision == "bf16" and device.type == "cpu":
        from .accel import cpu_bf16_native

        if not cpu_bf16_native():
            raise ConfigError("--precision bf16 needs a CPU with native bf16 (AMX-BF16 or AVX512-BF16); this "
                              "one has neither, so bf16 would be emulated and far slower than fp32")


def _autocast(device: torch.device, enabled: bool, precision: str = "fp32"):
    """CUDA: bf16 (or fp16) autocast when ``enabled``. CPU: bf16 autocast when ``precision`` is bf16."""
    if device.type == "cpu" and precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    if device.type != "cuda" or not enabled:
        return nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def cycle_forward(model: nn.Module, x: torch.Tensor, cx: torch.Tensor | None = None, cy: torch.Tensor | None = None,
                  shrink: float | None = None) -> torch.Tensor:
    """``model(x)``; with a window-amplitude cycle (``cx`` / ``cy``: the cycle at the window's lookback / forecast
    rows) ``model(x - g cx) + g cy``, ``g = data.cycle_gain(x, cx, shrink)``: still a residual-series forecast."""
    if cx is None:
        return model(x)
    g = cycle_gain(x.float(), cx, shrink)
    return model(x - g * cx) + g * cy


def _cycle_rows(prep: Prepared, device: torch.device) -> tuple[torch.Tensor | None, float | None]:
    """(the window-amplitude cycle's value at every row on ``device``, its shrink), or (None, None)."""
    crow = prep.cycle_rows()
    return (None, None) if crow is None else (crow.to(device), prep.cycle.shrink)


def _cycle_windows(crow: torch.Tensor | None, start: int, idx: torch.Tensor, lookback: int, horizon: int):
    return (None, None) if crow is None else gather_windows(crow, start, idx, lookback, horizon)


def _scored_batches(models: list[nn.Module], prep: Prepared, split: str, batch_size: int, device: torch.device,
                    amp: bool, stride: int):
    """For every batch of ``split``'s windows (every ``stride``-th): ``([each model's forecast], target)``, both
    float32 (batch, H, scored columns) on ``device``. The models are in eval mode meanwhile."""
    was_training = [m.training for m in models]
    for m in models:
        m.eval()
    data = prep.data.to(device)
    crow, shrink = _cycle_rows(prep, device)
    start, total = prep.borders[split][0], prep.windows(split)
    windows = torch.arange(0, total, max(int(stride), 1), device=device)
    out_idx = torch.tensor(prep.out_idx, device=device)
    try:
        for i in range(0, len(windows), batch_size):
            idx = windows[i:i + batch_size]
            x, y = gather_windows(data, start, idx, prep.lookback, prep.horizon)
            cx, cy = _cycle_windows(crow, start, idx, prep.lookback, prep.horizon)
            outs = []
            for m in models:
                with _autocast(device, amp):
                    out = cycle_forward(m, x, cx, cy, shrink)
                outs.append(out.float()[..., out_idx])
            yield outs, y[..., out_idx]
    finally:
        for m, t in zip(models, was_training):
            m.train(t)


@torch.no_grad()
def evaluate(model: nn.Module, prep: Prepared, split: str = "test", *, batch_size: int = 512,
             device: torch.device | str = "cpu", amp: bool = False, return_predictions: bool = False,
             stride: int = 1) -> dict:
    """MSE and MAE over *every* window of ``split`` (standardized space, scored columns only).

    ``stride`` > 1 scores only every ``stride``-th window (used for cheap validation while tuning; test
    metrics always use stride 1). Returns ``{"mse", "mae", "windows"}`` (+ ``"predictions"``: float32
    (windows, H, scored columns)).
    """
    device = torch.device(device)
    sse = sae = 0.0
    preds = []
    n = len(range(0, prep.windows(split), max(int(stride), 1)))
    for (p,), t in _scored_batches([model], prep, split, batch_size, device, amp, stride):
        sse += (p - t).pow(2).sum(dtype=torch.float64).item()
        sae += (p - t).abs().sum(dtype=torch.float64).item()
        if return_predictions:
            preds.append(p.cpu())
    count = n * prep.horizon * len(prep.out_idx)
    res = {"mse": sse / count, "mae": sae / count, "windows": n}
    if return_predictions:
        res["predictions"] = torch.cat(preds).numpy()
    return res


@torch.no_grad()
def blend_mse(model: nn.Module, other: nn.Module, prep: Prepared, split: str, weights, *, batch_size: int = 512,
              device: torch.device | str = "cpu") -> dict[float, float]:
    """``{w: MSE of w * model + (1 - w) * other}`` over every window of ``split``, for every ``w`` in ``weights``,
    from one pass of each model (the squared error of a blend is a quadratic in w: three float64 sums)."""
    device = torch.device(device)
    aa = ab = bb = 0.0
    for (p, q), t in _scored_batches([model, other], prep, split, batch_size, device, False, 1):
        ea, eb = (p - t).double(), (q - t).double()
        aa += ea.square().sum().item()
        ab += (ea * eb).sum().item()
        bb += eb.square().sum().item()
    count = prep.windows(split) * prep.horizon * len(prep.out_idx)
    return {float(w): (w * w * aa + 2 * w * (1 - w) * ab + (1 - w) ** 2 * bb) / count for w in weights}


# ---------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------


def save_atomic(obj, path: str | os.PathLike) -> None:
    """torch.save to a temporary file in the same directory, then rename (never a half-written file)."""
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not our checkpoint"
        raise ConfigError(f"{path}: not a readable checkpoint ({type(e).__name__})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{path}: not an ffnet-ts checkpoint")
    return ckpt


def _rng_state() -> dict:
    st = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


# ---------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------


@dataclass
class FitResult:
    best_val_mse: float
    best_epoch: int  # 1-based
    epochs_run: int
    train_seconds: float
    stopped_early: bool
    history: list[dict] = field(default_factory=list)
    stop_reason: str = "epoch_cap"  # early_stopping | epoch_cap | time_budget


def _broadcast_buffers(model: nn.Module) -> None:
    for b in model.buffers():
        dist.broadcast(b.data, src=0)


def fit(model: nn.Module, prep: Prepared, cfg: TrainConfig, *, meta: dict | None = None,
        best_path: str | os.PathLike | None = None, last_path: str | os.PathLike | None = None,
        resume: bool = False, desc: str = "train", log=None) -> FitResult:
    """Train ``model`` on ``prep``'s train split with early stopping on its val split.

    Args:
        model: maps (B, L, C) -> (B, H, C); trained in place and left holding the best epoch's weights.
        prep: the prepared protocol data.
        cfg: training configuration.
        meta: JSON-able config stored in every checkpoint (model name/args, data protocol, ...).
        best_path: where the best weights are written (with ``meta``), by rank 0.
        last_path: where the resume state is written after every epoch, by rank 0.
        resume: continue from ``last_path``.
        desc: progress-bar label.
        log: callable for one line per epoch (default: stderr on rank 0).
    """
    from tqdm.auto import tqdm

    if cfg.lr_schedule not in LR_SCHEDULES:
        raise ConfigError(f"unknown lr schedule {cfg.lr_schedule!r}; choose from {', '.join(LR_SCHEDULES)}")
    loss_fn = training_loss(cfg.loss)
    info, device = setup_distributed(cfg.device)
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    meta = dict(meta or {})
    meta["train"] = asdict(cfg)
    # NOTE: the caller seeds before building the model; this seeds dropout (per rank under DDP).
    torch.manual_seed(cfg.seed + info.rank)
    if getattr(model, "linear_base", False) and not resume:
        # FFNet-TS-LB learns the residual of a closed-form linear forecast solved on the train windows
        # (validation picks the ridge strength); deterministic, so every DDP rank installs the same base.
        from .reference import fit_linear

        model.set_linear_base(fit_linear(prep).weight)
    if cfg.grad_checkpointing:
        if not hasattr(model, "set_grad_checkpointing"):
            raise ConfigError(f"gradient checkpointing is implemented for FFNet-TS models, not {type(model).__name__}")
        try:
            model.set_grad_checkpointing(True, chunks=cfg.grad_checkpointing)
        except ValueError as e:
            raise ConfigError(f"gradient checkpointing: {e}") from e
    model.to(device)
    raw = model
    if info.world > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.Adam(raw.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.ema is not None and not 0.0 < cfg.ema < 1.0:
        raise ConfigError(f"ema decay must be in (0, 1) (got {cfg.ema})")
    # the module that is validated and kept: the raw weights, or their moving average
    ema = copy.deepcopy(raw).requires_grad_(False) if cfg.ema is not None else None
    scored = ema if ema is not None else raw
    amp = cfg.amp and device.type == "cuda"
    check_precision(cfg.precision, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp and not torch.cuda.is_bf16_supported())

    start_epoch, best_val, best_epoch, bad, history, seconds = 0, math.inf, 0, 0, [], 0.0
    best_state = copy.deepcopy(raw.state_dict())
    if resume:
        st = load_checkpoint(last_path, map_location=device)
        if "optimizer" not in st:
            raise ConfigError(f"{last_path}: not a resume file")
        for key in ("model", "data"):
            if st.get(key) != meta.get(key):
                raise ConfigError(f"{last_path}: its {key} config differs from this run's; cannot resume")
        raw.load_state_dict(st["state_dict"])
        if ema is not None:
            if "ema_state_dict" not in st:
                raise ConfigError(f"{last_path}: written without weight averaging (--ema); cannot resume with it")
            ema.load_state_dict(st["ema_state_dict"])
        opt.load_state_dict(st["optimizer"])
        scaler.load_state_dict(st["scaler"])
        best_state = st["best_state_dict"]
        start_epoch, best_val, best_epoch, bad = st["epoch"], st["best_val_mse"], st["best_epoch"], st["bad_epochs"]
        history, seconds = st["history"], st["train_seconds"]
        _set_rng_state(st["rng"])
        if bad >= cfg.patience:
            start_epoch = cfg.epochs  # it had already stopped early; nothing left to run
    if cfg.time_budget is not None and not cfg.time_budget > 0:
        raise ConfigError(f"time budget must be positive (got {cfg.time_budget})")

    data = prep.data.to(device)
    crow, shrink = _cycle_rows(prep, device)
    start, n = prep.borders["train"][0], prep.windows("train")
    per_rank = max(cfg.batch_size // info.world, 1)
    shard_len = math.ceil(n / info.world)
    steps = max(shard_len // per_rank, 1)  # drop the last partial training batch (not for val/test)
    if cfg.epoch_windows is not None:
        steps = min(steps, max(cfg.epoch_windows // cfg.batch_size, 1))
    out_idx = torch.tensor(prep.out_idx, device=device)

    # With a time budget the epoch cap is only a ceiling, so a bar sized by it would be meaningless.
    bar = tqdm(total=cfg.epochs * steps if cfg.time_budget is None else None,
               initial=min(start_epoch, cfg.epochs) * steps, desc=desc,
               disable=None if (cfg.progress and info.master) else True,  # None: only on a terminal
               dynamic_ncols=True, leave=False, file=sys.stderr)
    stopped = bad >= cfg.patience and resume
    reason = "early_stopping" if stopped else "epoch_cap"
    cut, val_seconds, n_val = False, 0.0, prep.windows("val")
    for epoch in range(start_epoch, cfg.epochs):
        if cfg.time_budget is not None and history and _out_of_time(history, seconds, cfg.time_budget, info, device):
            reason = "time_budget"
            break
        t0 = time.perf_counter()
        model.train()
        g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        perm = torch.randperm(n, generator=g)
        if info.world > 1:  # pad (by wrapping) so that every rank has the same number of windows
            perm = torch.cat([perm, perm[: shard_len * info.world - n]])[info.rank::info.world]
        perm = perm.to(device)
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        done = steps
        for step in range(steps):
            # One epoch can be far longer than the whole budget (Weather, Traffic on a CPU): stop inside it,
            # keeping time for the validation pass that scores the partial epoch.
            if cfg.time_budget is not None and step > 0:
                spent = time.perf_counter() - t0
                # before the first validation pass its cost is unknown: a forward pass is ~1/3 of a step
                val_est = val_seconds or spent / (step * per_rank) * math.ceil(n_val / cfg.val_stride) / 3
                if _agree(seconds + spent + val_est > cfg.time_budget, info, device):
                    done, cut = step, True
                    break
            lr = lr_at(cfg, epoch, step, steps)
            for group in opt.param_groups:
                group["lr"] = lr
            idx = perm[step * per_rank:(step + 1) * per_rank]
            x, y = gather_windows(data, start, idx, prep.lookback, prep.horizon)
            cx, cy = _cycle_windows(crow, start, idx, prep.lookback, prep.horizon)
            with _autocast(device, amp, cfg.precision):
                out = cycle_forward(model, x, cx, cy, shrink)
            loss = loss_fn(out.float()[..., out_idx], y[..., out_idx])
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            if ema is not None:
                _ema_update(ema, raw, cfg.ema, epoch * steps + step)
            loss_sum += loss.detach()
            bar.update(1)
            if step % 5 == 0 or step == steps - 1:
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.4f}", best_val=f"{best_val:.4f}", refresh=False)
        if info.world > 1:
            _broadcast_buffers(raw)
            if ema is not None:
                for e, b in zip(ema.buffers(), raw.buffers()):
                    e.copy_(b)
            dist.all_reduce(loss_sum)
            loss_sum /= info.world
        t_val = time.perf_counter()
        val = evaluate(scored, prep, "val", batch_size=cfg.eval_batch_size, device=device, amp=amp,
                       stride=cfg.val_stride)
        t_end = time.perf_counter()
        seconds += t_end - t0
        val_seconds = t_end - t_val
        improved = val["mse"] < best_val
        if improved:
            best_val, best_epoch, bad = val["mse"], epoch + 1, 0
            best_state = copy.deepcopy(scored.state_dict())
            if best_path is not None and info.master:
                save_atomic({"format": CHECKPOINT_FORMAT, **meta, "state_dict": best_state, "epoch": epoch + 1,
                             "val_mse": best_val, "val_mae": val["mae"]}, best_path)
        else:
            bad += 1
        rec = {"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum.item() / done, "val_mse": val["mse"],
               "val_mae": val["mae"], "seconds": round(seconds, 3)}
        if cut:
            rec["steps"] = done  # a partial epoch: the time budget ran out inside it
        history.append(rec)
        if last_path is not None and info.master:
            save_atomic({"format": CHECKPOINT_FORMAT, **meta, "state_dict": raw.state_dict(),
                         "optimizer": opt.state_dict(), "scaler": scaler.state_dict(), "rng": _rng_state(),
                         "epoch": epoch + 1, "best_val_mse": best_val, "best_epoch": best_epoch, "bad_epochs": bad,
                         "best_state_dict": best_state, "history": history, "train_seconds": seconds,
                         **({"ema_state_dict": ema.state_dict()} if ema is not None else {})}, last_path)
        if info.master:
            bar.set_postfix(epoch=epoch + 1, loss=f"{rec['train_loss']:.4f}", val_mse=f"{val['mse']:.4f}",
                            best_val=f"{best_val:.4f}")
            bar.clear()
            log(f"{desc} epoch {epoch + 1:3d}  lr {lr:.2e}  train_loss {rec['train_loss']:.4f}  "
                f"val_mse {val['mse']:.4f}  val_mae {val['mae']:.4f}{'  *' if improved else ''}  {seconds:7.1f}s"
                + (f" / {cfg.time_budget:.0f}s" if cfg.time_budget is not None else ""))
        if bad >= cfg.patience:
            stopped, reason = True, "early_stopping"
            break
        if cut:
            reason = "time_budget"
            break
    bar.close()
    raw.load_state_dict(best_state)
    if info.world > 1:
        dist.barrier()
    return FitResult(best_val, best_epoch, len(history), seconds, stopped, history, reason)


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    """ema <- d * ema + (1 - d) * model for parameters (d warmed up from 0.1 towards ``decay``); buffers copied."""
    d = min(decay, (1.0 + step) / (10.0 + step))
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1.0 - d)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def _out_of_time(history: list[dict], seconds: float, budget: float, info: DistInfo, device: torch.device) -> bool:
    """Would one more epoch (as long as the last one) overrun ``budget``? Rank 0 decides for every rank."""
    last = history[-1]["seconds"] - (history[-2]["seconds"] if len(history) > 1 else 0.0)
    return _agree(seconds + last > budget, info, device)


def _agree(stop: bool, info: DistInfo, device: torch.device) -> bool:
    """Rank 0's ``stop`` on every rank: wall clocks differ per rank, and a split decision would deadlock DDP."""
    if info.world > 1:
        flag = torch.tensor([int(stop)], device=device)
        dist.broadcast(flag, src=0)
        stop = bool(flag.item())
    return stop
