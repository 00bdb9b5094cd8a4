"""Training a hypernetwork (hypersound.md §3.4, §4.1; kan-fewsound.txt §4.2).

:func:`train` optimises a :class:`~hyperaudio.hypernet.model.HyperNetwork` with AdamW and a
OneCycle schedule over ``train.steps`` (or, with ``train.seconds``, over whichever budget ends
first). The loss is the core :class:`~hyperaudio.loss.ReconstructionLoss` (L1 + multi-resolution
mel-STFT, frequency weighting ramped over ``loss.ramp_steps``), applied to every head of the
target network: ``model.reconstruct`` gives ``[B, H, T]`` and each head must approximate the clip.

Robustness
    Gradients are clipped (``train.grad_clip``). A non-finite loss or gradient rolls the model,
    optimiser and schedule back to the last good checkpoint (kept in memory), halves the learning
    rate and continues with fresh batches; ``train.max_rollbacks`` failures in a row stop training
    with :class:`TrainingError`. SIGINT/SIGTERM set a flag: the loop saves a checkpoint and the
    model at the end of the current step and returns (a second SIGINT aborts at once, keeping the last
    checkpoint).
    Mixed precision: the encoder and head run under autocast on CUDA (bfloat16 where supported,
    else float16 with a gradient scaler); the target network and the loss stay in float32.

Run folder (``out_dir``)
    ``model.safetensors``       the model (:func:`~hyperaudio.hypernet.model.save_model`), written at
                                every checkpoint and at the end: always usable
    ``checkpoint.safetensors``  everything to resume exactly: ``model.*`` tensors, the optimiser's
                                tensors ``optim.<param>.<key>``, RNG states ``rng.<rank>.*`` (uint8)
    ``checkpoint.json``         a readable copy of the checkpoint's metadata (step, schedule, optimiser
                                structure, RNG scalars, data position, config); the authoritative copy
                                is inside ``checkpoint.safetensors`` (its ``state`` metadata), so the
                                pair can never disagree
    ``config.toml``             the resolved config (usable as ``--preset``)
    ``metrics.jsonl``           one JSON object per logged step (``"kind": "train"``) and per
                                validation (``"kind": "val"``)
    ``metrics.csv``, ``val.csv``  the same as tables

Every file is written atomically (temporary file + rename); stale temporary files of a killed run
are removed when training starts. No pickle anywhere.

Exact resume
    Batches are a pure function of ``(seed, rank, world, step)`` (:mod:`.data`), and the checkpoint
    holds the model, the optimiser state, the scheduler state, the global RNG states of torch
    (CPU and CUDA), numpy and Python's ``random`` of every rank, the rollback state and the data
    position, so N steps in one go and N/2 + resume + N/2 give identical parameters (CPU,
    deterministic kernels).

Scale-out
    Under ``torchrun --nproc-per-node N`` (detected through ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``)
    the model is wrapped in DistributedDataParallel (gloo on CPU, nccl on CUDA), each rank trains on
    its DistributedSampler-style shard of the clips with ``batch_size / N`` clips per step, and only
    rank 0 writes checkpoints, metrics, the bar and the model.

The loop is here; :mod:`.checkpoint` writes and reads the checkpoints, :mod:`.distributed` sets up
and tears down the ranks, :mod:`.train_log` writes the metrics and the bar, :mod:`.validation`
scores the held-out clips.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..audio import atomic_path
from ..config import dumps_toml
from ..errors import ConfigError, TrainingError
from ..fit import pick_device, si_snr
from ..loss import ReconstructionLoss
from . import checkpoint as ckpt
from .checkpoint import CHECKPOINT, MODEL, merge_resume_config, read_checkpoint
from .data import ClipSet, load_datasets
from .distributed import Dist
from .model import HyperNetwork, build, check_size, save_model
from .train_log import MetricsLog, ProgressBar, announce, announce_stop, warner
from .validation import evaluate_clips, silence_baseline


@dataclass
class TrainProgress:
    """A snapshot for ``callback``: every ``train.log_every`` steps, after each validation, at the end."""

    step: int
    steps: int
    loss: float
    sisnr: float  # mean SI-SNR (dB) of the last logged training batch, first head
    lr: float
    elapsed: float
    clips_per_s: float = float("nan")
    val: dict | None = None  # the latest validation metrics (with "silence.*" baselines)
    event: str = "log"  # "log", "val", "checkpoint", "rollback" or "done"


@dataclass
class TrainResult:
    out_dir: Path
    model_path: Path
    steps: int
    seconds: float
    interrupted: bool
    val: dict | None = None
    history: list[dict] = field(default_factory=list, repr=False)
    model: HyperNetwork | None = field(default=None, repr=False)  # the trained model (this process's copy)


def check_hypernet_preset(name: str) -> None:
    """Refuse a preset without its own ``[hypernet]`` table: it fits single sounds, and the default
    hypernetwork around its target network would train 16 clips of 32768 samples through it at once."""
    from .. import config as config_mod
    from ..plugins import get_registry

    preset = config_mod.load_preset(name)
    if "hypernet" in preset:
        return
    registry = get_registry()
    target = preset.get("target", {}).get("name")
    ours = [n for n in registry.names("presets") if "hypernet" in registry.get("presets", n).obj
            and not n.startswith("debug-")]
    ours.sort(key=lambda n: registry.get("presets", n).obj.get("target", {}).get("name") != target)
    raise ConfigError(f"preset {name!r} fits single sounds (it has no [hypernet] table); train a hypernetwork "
                      f"preset such as {', '.join(ours[:3])} (see 'hyperaudio presets list')")


def compute_loss(loss_fn: ReconstructionLoss, pred: torch.Tensor, target: torch.Tensor, step: int,
                 lambda_mse: float = 0.0) -> tuple[torch.Tensor, dict]:
    """The training loss of ``pred`` ``[B, H, T]`` against ``target`` (a module-level function, so a
    test can inject a non-finite value)."""
    loss, parts = loss_fn(pred, target, step=step)
    if lambda_mse:
        loss = loss + lambda_mse * torch.mean((pred - target) ** 2)
    return loss, parts


def train(
    config: dict,
    data,
    val=None,
    out_dir: str | os.PathLike = "runs/run",
    resume: bool = False,
    device: str | torch.device | None = "auto",
    callback: Callable[[TrainProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train the hypernetwork ``config`` describes on ``data`` and write the run folder ``out_dir``.

    ``data``/``val``: a folder, list file, glob pattern or audio file (or lists of them), or
    :class:`~hyperaudio.hypernet.data.ClipSet`\\ s; ``val`` may also be a glob pattern selecting
    held-out files from ``data``. ``resume=True`` continues the run in ``out_dir`` exactly where its
    checkpoint stopped (``config`` may then be None: the run's own config is used). Returns a
    :class:`TrainResult`; ``interrupted`` is True after SIGINT/SIGTERM or ``should_stop()``.
    """
    out_dir = Path(out_dir)
    device = pick_device(device)
    dist = Dist.from_env(device)
    if dist.world > 1 and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    finished = False
    try:
        result = _train(config, data, val, out_dir, resume, device, dist, callback, should_stop, progress)
        finished = True
        return result
    finally:
        dist.close(finished)


def _train(config, data, val, out_dir, resume, device, dist, callback, should_stop, progress) -> TrainResult:
    warn = warner(dist.main)
    saved_state, saved_tensors = _saved_run(out_dir, resume)
    if saved_state is not None:
        config = merge_resume_config(saved_state["config"], config)
    if config is None:
        raise ConfigError("no config given (and nothing to resume)")
    per_rank = _per_rank_batch(config["train"], dist.world)
    check_size(config)  # before any data is read or weight allocated
    train_set, val_set = load_datasets(data, val, config, warn)
    if progress and dist.main:
        announce(config, train_set, val_set, dist.world, saved_state["step"] if saved_state else None)
    sources = {"data": _source(data), "val": _source(val)}
    if saved_state is not None and sources["data"] is None:
        sources = saved_state.get("sources", sources)

    run = _Run(config, device, dist, train_set, per_rank, out_dir, sources, warn, callback)
    if saved_state is not None:
        run.load(saved_state, saved_tensors)
    run.prepare_folder(resume)
    run.wrap_for_ranks()
    run.prepare_validation(val_set)
    bar = ProgressBar(progress and dist.main, run.steps, run.seconds, run.st["step"])
    with _Signals() as signals:
        run.loop(signals, should_stop, bar)
        run.finish(quick=signals.received is not None)
    if dist.main and run.interrupted:
        announce_stop(signals.received, run.st["step"], out_dir / CHECKPOINT)
    return TrainResult(out_dir, out_dir / MODEL, run.st["step"], run.st["elapsed"], run.interrupted, run.st["val"],
                       run.log.history, run.model.eval())


def _saved_run(out_dir: Path, resume: bool) -> tuple[dict | None, dict | None]:
    """The checkpoint to resume from, or (None, None) for a new run (refused where one exists)."""
    if resume:
        return read_checkpoint(out_dir)
    if (out_dir / CHECKPOINT).exists():
        raise TrainingError(f"{out_dir} already holds a run (checkpoint.safetensors): pass --resume to continue it, "
                            "or choose another output folder")
    return None, None


def _per_rank_batch(tc: dict, world: int) -> int:
    if tc["batch_size"] % world:
        raise ConfigError(f"train.batch_size {tc['batch_size']} is not divisible by the {world} processes")
    return tc["batch_size"] // world


def _source(item):
    """A data source as JSON for the checkpoint (absolute where it is a path), or None (a ClipSet)."""
    if item is None or isinstance(item, ClipSet):
        return None
    if isinstance(item, (list, tuple)):
        return [_source(i) for i in item]
    path = Path(str(item))
    return str(path.resolve()) if path.exists() else str(item)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def write_config(out_dir: Path, config: dict) -> None:
    with atomic_path(out_dir / "config.toml") as tmp:
        tmp.write_text(dumps_toml(config))


def _amp_settings(device: torch.device, enabled: bool):
    if not enabled or device.type != "cuda":
        return None, None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return dtype, scaler


class _Signals:
    """SIGINT/SIGTERM set a flag (main thread only); a second SIGINT raises KeyboardInterrupt."""

    def __init__(self):
        self.received: int | None = None
        self.saved = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(ValueError, OSError):
                    self.saved[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc):
        for sig, handler in self.saved.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(sig, handler)
        return False


class _Run:
    """One run: the model and its optimiser, schedule and loss, and the loop state ``st`` (all of it
    in the checkpoint). ``model`` is this process's copy; ``net`` is what the steps call (DDP over
    several ranks)."""

    def __init__(self, config, device, dist: Dist, train_set: ClipSet, per_rank: int, out_dir: Path,
                 sources: dict, warn, callback):
        self.config, self.device, self.dist, self.train_set, self.per_rank = config, device, dist, train_set, per_rank
        self.out_dir, self.sources, self.warn, self.callback = out_dir, sources, warn, callback
        tc, lc, hc = self.tc, self.lc, self.hc = config["train"], config["loss"], config["hypernet"]
        self.steps, self.seconds = int(tc["steps"]), float(tc["seconds"])
        seed_everything(int(tc["seed"]))
        self.model = self.net = build(config).to(device)
        self.model.train()
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=float(tc["lr"]), weight_decay=float(tc["weight_decay"]))
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=float(tc["lr"]), total_steps=self.steps, pct_start=float(tc["pct_start"]),
            div_factor=float(tc["div_factor"]), final_div_factor=float(tc["final_div_factor"]))
        self.amp_dtype, self.scaler = _amp_settings(device, bool(tc["amp"]))
        self.loss_fn = ReconstructionLoss(hc["sample_rate"], lambda_t=lc["lambda_t"], lambda_f=lc["lambda_f"],
                                          p=lc["p"], ramp_steps=int(lc["ramp_steps"])).to(device)
        self.st = {"step": 0, "data_skip": 0, "elapsed": 0.0, "lr_scale": 1.0, "rollbacks": 0, "total_rollbacks": 0,
                   "val": None}
        self.log = MetricsLog(out_dir, dist.main)
        self.val_clips, self.baseline = None, {}
        self.good: dict = {}  # the in-memory state a rollback returns to
        self.last = (float("nan"), float("nan"), float("nan"))  # loss, SI-SNR, clips/s of the last logged step
        self.validated_at = -1
        self.interrupted = False
        self.start = 0.0  # the clock's reading when st["elapsed"] was 0
        self.log_clock, self.log_step = 0.0, 0  # when and at which step the last training record was written

    # -- before the first step ----------------------------------------------------------------------
    def load(self, state: dict, tensors: dict) -> None:
        ckpt.load_training_state(state, tensors, self.model, self.optimizer, self.scheduler, self.scaler, self.st,
                                 self.dist.rank, self.warn)

    def prepare_folder(self, resume: bool) -> None:
        if self.dist.main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            ckpt.clean_stale_files(self.out_dir)
            write_config(self.out_dir, self.config)
            if resume:
                self.log.truncate_after(self.st["step"])
            else:
                self.log.restart()
        self.dist.barrier()

    def wrap_for_ranks(self) -> None:
        self.net = self.dist.wrap(self.model, self.device)

    def prepare_validation(self, val_set: ClipSet | None) -> None:
        if val_set is None:
            return
        self.val_clips = val_set.validation_crops(int(self.tc["val_clips"]))
        if self.dist.main:
            self.baseline = silence_baseline(self.val_clips, self.hc["sample_rate"], list(self.tc["val_metrics"]))

    # -- the loop ------------------------------------------------------------------------------------
    def loop(self, signals: _Signals, should_stop, bar: ProgressBar) -> None:
        """Step until the budget is spent or a stop is asked for."""
        st, tc = self.st, self.tc
        self.good = self.snapshot()
        self.start = time.perf_counter() - st["elapsed"]
        self.log_clock, self.log_step = time.perf_counter(), st["step"]
        try:
            while st["step"] < self.steps:
                st["elapsed"] = time.perf_counter() - self.start
                if self.stopping(signals, should_stop):
                    break
                step = st["step"]
                wave = self.batch(step)
                pred, loss, parts, norm = self.forward_backward(wave, step)
                if self.not_finite(loss, norm):
                    self.roll_back(step, bar)
                    continue
                used_lr = self.optimizer_step()
                st["step"] = step + 1
                self.follow_schedule()
                st["elapsed"] = time.perf_counter() - self.start
                done = st["step"] >= self.steps
                if st["step"] % int(tc["log_every"]) == 0 or done:
                    self.log_step_metrics(wave, pred, loss, parts, used_lr, bar)
                bar.show(st["step"], st["elapsed"])
                if st["step"] % int(tc["val_every"]) == 0 and not done:
                    self.validate()
                    self.validated_at = st["step"]
                    self.emit("val", *self.last)
                if st["step"] % int(tc["checkpoint_every"]) == 0 and not done:
                    self.checkpoint()
                    self.emit("checkpoint", *self.last)
        finally:  # a second Ctrl-C raises KeyboardInterrupt mid-step: nothing is saved, the last checkpoint stays
            bar.close()

    def finish(self, quick: bool) -> None:
        """The closing validation (unless ``quick``, or just done), checkpoint and model."""
        self.st["elapsed"] = time.perf_counter() - self.start
        if self.validated_at != self.st["step"] and not quick:
            self.validate()
        self.checkpoint()
        self.emit("done", *self.last)

    def stopping(self, signals: _Signals, should_stop) -> bool:
        stop_local = signals.received is not None or (should_stop is not None and self.dist.main and should_stop())
        out_of_time = self.seconds > 0 and self.st["elapsed"] >= self.seconds
        # Every rank stops at the same step, before touching anything (the saved RNG states are
        # then exactly those an uninterrupted run has at this step).
        stop_any, time_up = self.dist.any([stop_local, out_of_time], self.device)
        self.interrupted = bool(stop_any)
        return stop_any or time_up

    def batch(self, step: int) -> torch.Tensor:
        dist = self.dist
        return torch.from_numpy(self.train_set.batch(step + self.st["data_skip"], self.per_rank, self.tc, dist.rank,
                                                     dist.world)).to(self.device)

    def forward_backward(self, wave: torch.Tensor, step: int):
        """``(pred [B, H, T], loss, loss parts, gradient norm)``, the gradient computed and clipped."""
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            params = self.net(wave, step)
        pred = self.model.render({k: v.float() for k, v in params.items()}, wave.shape[-1])
        target = wave.unsqueeze(1).expand_as(pred)
        loss, parts = compute_loss(self.loss_fn, pred, target, step, float(self.lc["lambda_mse"]))
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        clip = float(self.tc["grad_clip"]) if self.tc["grad_clip"] > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.trainable, clip)
        return pred, loss, parts, norm

    def not_finite(self, loss: torch.Tensor, norm: torch.Tensor) -> bool:
        """On any rank (so that all of them roll back together)."""
        bad = not torch.isfinite(loss).item() or (self.scaler is None and not torch.isfinite(norm).item())
        (bad,) = self.dist.any([bad], self.device)
        return bad

    def roll_back(self, failed_at: int, bar: ProgressBar) -> None:
        """Back to the last good state with a halved learning rate, or give up after too many in a row."""
        st, good = self.st, self.good
        st["rollbacks"] += 1
        st["total_rollbacks"] += 1
        if st["rollbacks"] > int(self.tc["max_rollbacks"]):
            path = self.out_dir / CHECKPOINT
            where = f"; the last good state is in {path}" if path.exists() else ""
            raise TrainingError(
                f"training diverged: the loss or its gradient was not finite {st['rollbacks']} time(s) in "
                f"a row (last at step {failed_at}) despite rolling back to step {good['loop']['step']} "
                f"and halving the learning rate each time; lower train.lr or train.grad_clip{where}")
        if self.scaler is not None:
            self.scaler.update()  # closes this step's unscale_ (restore() then resets the scale)
        ckpt.restore(good, self.model, self.optimizer, self.scheduler, self.scaler)
        kept = st["rollbacks"], st["total_rollbacks"]
        st.update(good["loop"])
        st["rollbacks"], st["total_rollbacks"] = kept
        # Fresh batches after the rollback (the same ones would likely fail again).
        st["data_skip"] = good["loop"]["data_skip"] + (failed_at - good["loop"]["step"]) + 1
        st["lr_scale"] = good["loop"]["lr_scale"] * 0.5 ** st["rollbacks"]
        for g in self.optimizer.param_groups:
            g["lr"] *= 0.5 ** st["rollbacks"]
        self.warn(f"non-finite loss at step {failed_at}: rolled back to step {st['step']}, learning rate "
                  f"x{st['lr_scale']:.3g}")
        self.log.write({"kind": "rollback", "step": st["step"], "failed_at": failed_at, "lr_scale": st["lr_scale"]})
        self.emit("rollback")
        bar.rewind(st["step"])

    def optimizer_step(self) -> float:
        """Apply the gradient; returns the learning rate it was applied with."""
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        return self.optimizer.param_groups[0]["lr"]

    def follow_schedule(self) -> None:
        """The schedule's position: the step, or the share of the time budget when that is ahead."""
        st, steps = self.st, self.steps
        position = st["step"]
        if self.seconds > 0:
            position = max(position, int(steps * min(1.0, (time.perf_counter() - self.start) / self.seconds)))
        self.scheduler.last_epoch = min(position, steps - 1) - 1
        self.scheduler.step()
        if st["lr_scale"] != 1.0:
            for g in self.optimizer.param_groups:
                g["lr"] *= st["lr_scale"]

    def log_step_metrics(self, wave, pred, loss, parts: dict, used_lr: float, bar: ProgressBar) -> None:
        st = self.st
        with torch.no_grad():
            sisnr = float(si_snr(pred.detach()[:, 0].float(), wave).mean())
        loss = float(loss.detach())
        now = time.perf_counter()
        rate = (st["step"] - self.log_step) * self.tc["batch_size"] / max(now - self.log_clock, 1e-9)
        self.log_clock, self.log_step = now, st["step"]
        self.last = (loss, sisnr, rate)
        record = {"kind": "train", "step": st["step"], "loss": loss, "l1": parts["l1"], "stft": parts["stft"],
                  "sisnr": sisnr, "lr": used_lr, "clips_per_s": rate, "elapsed": round(st["elapsed"], 3)}
        self.log.write(record)
        bar.describe(record)
        self.emit("log", *self.last)

    # -- what the loop reports and saves ----------------------------------------------------------------
    def validate(self) -> None:
        if self.val_clips is None or not self.dist.main:
            return
        st, hc = self.st, self.hc
        values = evaluate_clips(self.model, self.val_clips, hc["sample_rate"], list(self.tc["val_metrics"]),
                                batch=max(1, self.per_rank), device=self.device, warn=self.warn)
        record = {"kind": "val", "step": st["step"], **values, **self.baseline, "clips": len(self.val_clips),
                  "elapsed": round(st["elapsed"], 3)}
        self.log.write(record)
        st["val"] = {k: v for k, v in record.items() if k not in ("kind",)}

    def emit(self, event: str, loss=float("nan"), sisnr=float("nan"), rate=float("nan")) -> None:
        if self.callback is not None and self.dist.main:
            self.callback(TrainProgress(self.st["step"], self.steps, loss, sisnr, self.optimizer.param_groups[0]["lr"],
                                        self.st["elapsed"], rate, self.st["val"], event))

    def snapshot(self) -> dict:
        return ckpt.snapshot(self.model, self.optimizer, self.scheduler, self.scaler, self.st)

    def checkpoint(self) -> None:
        """The checkpoint and the model on disk (rank 0), and the new last good state (every rank)."""
        ranks = self.dist.gather(ckpt.rank_state(self.model))
        self.st["rollbacks"] = 0
        self.good = self.snapshot()
        if not self.dist.main:
            return
        checksums = [r[2] for r in ranks]
        if len(set(checksums)) > 1:
            self.warn(f"the processes' parameters differ (checksums {checksums}): DDP lost synchronisation")
        st, tc, hc = self.st, self.tc, self.hc
        _, epoch, offset = self.train_set.indices(st["step"] + st["data_skip"], self.per_rank, int(tc["seed"]),
                                                  self.dist.rank, self.dist.world)
        data = {"epoch": epoch, "offset": offset, "clips": len(self.train_set), "per_rank_batch": self.per_rank}
        ckpt.save_training_state(self.out_dir, self.model, self.optimizer, self.scheduler, self.scaler, ranks,
                                 loop=st, steps=self.steps, data=data, config=self.config, sources=self.sources)
        info = {"steps": st["step"], "seconds": round(st["elapsed"], 3), "clips": len(self.train_set),
                "val": st["val"], "rollbacks": st["total_rollbacks"], "world": self.dist.world,
                "sample_rate": hc["sample_rate"], "num_samples": hc["num_samples"]}
        save_model(self.model, self.config, self.out_dir / MODEL, info)
