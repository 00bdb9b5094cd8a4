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
"""

from __future__ import annotations

import contextlib
import copy
import csv
import datetime
import inspect
import json
import math
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..audio import atomic_path
from ..errors import ConfigError, HyperaudioError
from ..fit import pick_device, si_snr
from ..functional import postprocess
from ..hya import read_safetensors
from ..loss import ReconstructionLoss
from .data import ClipSet, load_datasets
from .model import HyperNetwork, build, check_size, save_model

CHECKPOINT = "checkpoint.safetensors"
CHECKPOINT_JSON = "checkpoint.json"
MODEL = "model.safetensors"
CHECKPOINT_FORMAT = "hyperaudio.checkpoint"
CHECKPOINT_VERSION = 1
BARRIER_SECONDS = 120  # how long a finished rank waits for the others before tearing down
#: ``train`` settings a resumed run may change; everything else must match the checkpoint.
RESUMABLE_CHANGES = ("seconds", "checkpoint_every", "val_every", "val_clips", "val_metrics", "log_every",
                     "max_rollbacks")
TRAIN_COLUMNS = ("step", "loss", "l1", "stft", "sisnr", "lr", "clips_per_s", "elapsed")


class TrainingError(HyperaudioError):
    """Training could not go on (diverged, or the run folder is not in the state asked for)."""


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


# -- distributed ------------------------------------------------------------------------------------
@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owned: bool = False  # we initialised the process group (and destroy it at the end)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: torch.device) -> "_Dist":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as dist

        local = int(os.environ.get("LOCAL_RANK", "0"))
        owned = False
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            if device.type == "cuda":
                torch.cuda.set_device(local)
            dist.init_process_group(backend)
            owned = True
        return cls(dist.get_rank(), dist.get_world_size(), local, owned)

    def any(self, flags: list[bool], device) -> list[bool]:
        """Element-wise OR of ``flags`` over all ranks (every rank gets the same answer)."""
        if self.world == 1:
            return flags
        import torch.distributed as dist

        t = torch.tensor([float(f) for f in flags], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [bool(v) for v in t.tolist()]

    def gather(self, obj):
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self, finished: bool) -> None:
        """Destroy the process group we created, after every rank has finished (``finished``).

        A rank that tore its group down while a peer was still at work (rank 0 writing the model)
        could abort at exit in gloo's teardown ("terminate called without an active exception",
        SIGABRT). A two-rank DDP script of that shape failed 3 of 12 runs, and 0 of 12 with either
        remedy used here: collect what is left of the DDP wrapper (it holds the group through its
        reducer, in reference cycles) and let the ranks meet before tearing down. After an error no
        rank waits: a peer may be gone.
        """
        if self.owned:
            import gc

            import torch.distributed as dist

            gc.collect()
            if finished:
                # Bounded: a peer that failed alone never arrives, and this rank must still exit.
                with contextlib.suppress(RuntimeError):
                    dist.barrier(async_op=True).wait(timeout=datetime.timedelta(seconds=BARRIER_SECONDS))
            dist.destroy_process_group()


# -- RNG states as tensors ----------------------------------------------------------------------------
def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    """This process's global RNG states: uint8 tensors + the scalars that go with them (JSON)."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.uint32).view(np.uint8).copy())
    version, internal, gauss = random.getstate()
    tensors["python"] = torch.from_numpy(np.asarray(internal, dtype=np.uint32).view(np.uint8).copy())
    scalars = {"numpy": [kind, int(pos), int(has_gauss), float(cached)], "python": [version, gauss]}
    return tensors, scalars


def set_rng_state(tensors: dict[str, torch.Tensor], scalars: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    kind, pos, has_gauss, cached = scalars["numpy"]
    keys = tensors["numpy"].numpy().copy().view(np.uint32)
    np.random.set_state((kind, keys, pos, has_gauss, cached))
    version, gauss = scalars["python"]
    internal = tuple(int(v) for v in tensors["python"].numpy().copy().view(np.uint32))
    random.setstate((version, internal, gauss))


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


# -- checkpoints ------------------------------------------------------------------------------------
def optimizer_to_tensors(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimiser ``state_dict`` as flat tensors ``optim.<param>.<key>`` + JSON structure."""
    tensors, scalars = {}, {}
    for pid, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_tensors(tensors: dict[str, torch.Tensor], structure: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for pid, entries in structure.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(entries)
    groups = []
    for g in structure["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def write_checkpoint(out_dir: Path, tensors: dict[str, torch.Tensor], state: dict) -> Path:
    """``checkpoint.safetensors`` (tensors + the state as metadata) then ``checkpoint.json``, atomically."""
    from safetensors.torch import save_file

    path = out_dir / CHECKPOINT
    text = json.dumps(state)
    metadata = {"format": CHECKPOINT_FORMAT, "version": str(CHECKPOINT_VERSION), "state": text}
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    with atomic_path(out_dir / CHECKPOINT_JSON) as tmp:
        tmp.write_text(json.dumps(state, indent=1) + "\n")
    return path


def read_checkpoint(run: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(state, tensors)`` of a run folder's checkpoint (or a checkpoint file), with clear errors."""
    path = Path(run)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise TrainingError(f"{path}: no checkpoint (nothing to resume)")
    meta, tensors = read_safetensors(path, "checkpoint", TrainingError)
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path}: not a hyperaudio training checkpoint")
    try:
        if int(meta["version"]) > CHECKPOINT_VERSION:
            raise TrainingError(f"{path}: written by a newer hyperaudio (checkpoint version {meta['version']})")
        state = json.loads(meta["state"])
    except (KeyError, ValueError, TypeError) as exc:
        raise TrainingError(f"{path}: damaged checkpoint metadata ({type(exc).__name__}: {exc})") from None
    return state, tensors


def clean_stale_files(out_dir: Path) -> list[Path]:
    """Remove temporary files a killed process left behind (``atomic_path``'s ``.NAME.*.tmp*``)."""
    removed = []
    if out_dir.is_dir():
        for p in out_dir.iterdir():
            if p.name.startswith(".") and ".tmp" in p.name and p.is_file():
                with contextlib.suppress(OSError):
                    p.unlink()
                    removed.append(p)
    return removed


# -- the resolved config on disk ----------------------------------------------------------------------
def write_config(out_dir: Path, config: dict) -> None:
    from ..plugin_cli import dumps_toml

    with atomic_path(out_dir / "config.toml") as tmp:
        tmp.write_text(dumps_toml(config))


def _merge_resume_config(saved: dict, given: dict | None) -> dict:
    """The checkpoint's config, with the few ``train`` settings a resumed run may change taken from ``given``."""
    config = copy.deepcopy(saved)
    if given is None:
        return config
    for section in saved:
        if section in ("train", "preset"):
            continue
        if given.get(section) != saved.get(section):
            raise ConfigError(f"cannot resume: [{section}] differs from the run's config (the checkpoint was "
                              f"trained with another model); resume without --preset/--set for it, or start a new run")
    for key, value in given.get("train", {}).items():
        if saved["train"].get(key) == value:
            continue
        if key not in RESUMABLE_CHANGES:
            raise ConfigError(f"cannot resume with a different train.{key} ({saved['train'].get(key)!r} -> {value!r}): "
                              f"only {', '.join(RESUMABLE_CHANGES)} may change")
        config["train"][key] = value
    return config


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


# -- metrics files -----------------------------------------------------------------------------------
class _Log:
    """metrics.jsonl, metrics.csv and val.csv in the run folder (rank 0 only)."""

    def __init__(self, out_dir: Path, enabled: bool):
        self.dir, self.enabled = out_dir, enabled
        self.history: list[dict] = []

    def truncate_after(self, step: int) -> None:
        """Drop lines of steps after ``step`` (a resumed run redoes them)."""
        if not self.enabled:
            return
        path = self.dir / "metrics.jsonl"
        if path.exists():
            keep = []
            for line in path.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    if json.loads(line).get("step", 0) <= step:
                        keep.append(line)
            with atomic_path(path) as tmp:
                tmp.write_text("".join(k + "\n" for k in keep))
        for name in ("metrics.csv", "val.csv"):
            path = self.dir / name
            if not path.exists():
                continue
            with path.open(newline="") as f:
                rows = list(csv.reader(f))
            if not rows:
                continue
            # (a row cut short by a kill has fewer columns: dropped too)
            kept = [rows[0]] + [r for r in rows[1:] if len(r) == len(rows[0]) and _int(r[0]) <= step]
            with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
                csv.writer(f).writerows(kept)

    def write(self, record: dict) -> None:
        self.history.append(record)
        if not self.enabled:
            return
        with (self.dir / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(_finite(record)) + "\n")
        if record["kind"] == "train":
            self._csv("metrics.csv", list(TRAIN_COLUMNS), record)
        else:
            self._csv("val.csv", ["step"] + [k for k in record if k not in ("kind", "step")], record)

    def _csv(self, name: str, columns: list[str], record: dict) -> None:
        path = self.dir / name
        new = not path.exists() or path.stat().st_size == 0
        if not new:
            with path.open(newline="") as f:
                header = next(csv.reader(f), None)
            if header:
                columns = header
        with path.open("a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(columns)
            w.writerow([_fmt(record.get(c, "")) for c in columns])


def _int(text: str) -> int:
    try:
        return int(float(text))
    except ValueError:
        return 0


def _fmt(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _finite(record: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}


# -- validation -------------------------------------------------------------------------------------
def silence_baseline(clips: np.ndarray, sample_rate: int, names: list[str]) -> dict[str, float]:
    """The validation metrics of an all-zero reconstruction: what the model must beat."""
    from .. import metrics

    values = [metrics.evaluate(c, np.zeros_like(c), sample_rate, names) for c in clips]
    return {f"silence.{k}": float(np.mean([v[k] for v in values])) for k in names}


@torch.no_grad()
def evaluate_clips(model: HyperNetwork, clips: np.ndarray, sample_rate: int, names: list[str],
                   batch: int = 8, device=None, warn=None) -> dict[str, float]:
    """Mean validation metrics of ``model`` on fixed crops ``[K, num_samples]`` (postprocessed output)."""
    from .. import metrics
    from ..metrics import MetricUnavailable

    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    values: dict[str, list[float]] = {n: [] for n in names}
    unavailable: set[str] = set()
    try:
        for i in range(0, len(clips), batch):
            wave = torch.from_numpy(clips[i : i + batch]).to(device)
            y = model.reconstruct(wave).float().cpu().numpy()  # [b, H, T]
            for ref, heads_out in zip(clips[i : i + batch], y):
                est = postprocess(model.target, heads_out, sample_rate)
                for name in names:
                    if name in unavailable:
                        continue
                    try:
                        values[name].append(metrics.evaluate(ref, est, sample_rate, [name])[name])
                    except MetricUnavailable as exc:
                        unavailable.add(name)
                        if warn:
                            warn(f"validation metric {name} unavailable: {exc}")
    finally:
        model.train(was_training)
    return {n: float(np.mean(v)) for n, v in values.items() if v}


def _source(item):
    """A data source as JSON for the checkpoint (absolute where it is a path), or None (a ClipSet)."""
    if item is None or isinstance(item, ClipSet):
        return None
    if isinstance(item, (list, tuple)):
        return [_source(i) for i in item]
    path = Path(str(item))
    return str(path.resolve()) if path.exists() else str(item)


# -- the loop ----------------------------------------------------------------------------------------
def compute_loss(loss_fn: ReconstructionLoss, pred: torch.Tensor, target: torch.Tensor, step: int,
                 lambda_mse: float = 0.0) -> tuple[torch.Tensor, dict]:
    """The training loss of ``pred`` ``[B, H, T]`` against ``target`` (a module-level function, so a
    test can inject a non-finite value)."""
    loss, parts = loss_fn(pred, target, step=step)
    if lambda_mse:
        loss = loss + lambda_mse * torch.mean((pred - target) ** 2)
    return loss, parts


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


def _amp_settings(device: torch.device, enabled: bool):
    if not enabled or device.type != "cuda":
        return None, None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return dtype, scaler


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
    dist = _Dist.from_env(device)
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
    def warn(message: str) -> None:
        if dist.main:
            print(f"hyperaudio: warning: {message}", file=sys.stderr)

    checkpoint_path = out_dir / CHECKPOINT
    saved_state, saved_tensors = None, None
    if resume:
        saved_state, saved_tensors = read_checkpoint(out_dir)
        config = _merge_resume_config(saved_state["config"], config)
    elif checkpoint_path.exists():
        raise TrainingError(f"{out_dir} already holds a run (checkpoint.safetensors): pass --resume to continue it, "
                            "or choose another output folder")
    if config is None:
        raise ConfigError("no config given (and nothing to resume)")
    tc, lc, hc = config["train"], config["loss"], config["hypernet"]
    steps, seconds = int(tc["steps"]), float(tc["seconds"])
    if tc["batch_size"] % dist.world:
        raise ConfigError(f"train.batch_size {tc['batch_size']} is not divisible by the {dist.world} processes")
    per_rank = tc["batch_size"] // dist.world
    check_size(config)  # before any data is read or weight allocated

    train_set, val_set = load_datasets(data, val, config, warn)
    if progress and dist.main:
        budget = f"{steps} steps" + (f" or {seconds:g} s" if seconds else "")
        held = f", {len(val_set)} held out" if val_set is not None else ", no validation set"
        world = f" over {dist.world} processes" if dist.world > 1 else ""
        resuming = f", resuming at step {saved_state['step']}" if saved_state else ""
        print(f"training {config['preset'].get('name') or 'a hypernetwork'}: {hc['encoder']} -> {hc['strategy']} -> "
              f"{config['target']['name']} ({hc['head_kind']} head) on {len(train_set)} clips "
              f"({train_set.seconds:.0f} s at {hc['sample_rate']} Hz){held}; {budget}, batch {tc['batch_size']}"
              f"{world}{resuming}", file=sys.stderr)
    sources = {"data": _source(data), "val": _source(val)}
    if saved_state is not None and sources["data"] is None:
        sources = saved_state.get("sources", sources)
    seed_everything(int(tc["seed"]))
    model = build(config).to(device)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=float(tc["lr"]), weight_decay=float(tc["weight_decay"]))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=float(tc["lr"]), total_steps=steps, pct_start=float(tc["pct_start"]),
        div_factor=float(tc["div_factor"]), final_div_factor=float(tc["final_div_factor"]))
    amp_dtype, scaler = _amp_settings(device, bool(tc["amp"]))
    loss_fn = ReconstructionLoss(hc["sample_rate"], lambda_t=lc["lambda_t"], lambda_f=lc["lambda_f"], p=lc["p"],
                                 ramp_steps=int(lc["ramp_steps"])).to(device)

    # Loop state, all of it in the checkpoint.
    st = {"step": 0, "data_skip": 0, "elapsed": 0.0, "lr_scale": 1.0, "rollbacks": 0, "total_rollbacks": 0,
          "val": None}
    if saved_state is not None:
        model.load_state_dict({k[len("model."):]: v for k, v in saved_tensors.items() if k.startswith("model.")})
        optimizer.load_state_dict(optimizer_from_tensors(saved_tensors, saved_state["optimizer"]))
        scheduler.load_state_dict(saved_state["scheduler"])
        if scaler is not None and saved_state.get("scaler"):
            scaler.load_state_dict(saved_state["scaler"])
        for key in st:
            st[key] = saved_state["loop"].get(key, st[key])
        ranks = saved_state.get("rng", {})
        mine = str(dist.rank) if str(dist.rank) in ranks else "0"
        if str(dist.rank) not in ranks:
            warn(f"the checkpoint was written by {saved_state.get('world', 1)} process(es); rank {dist.rank} takes "
                 "rank 0's random state")
        rng_tensors = {k[len(f"rng.{mine}."):]: v for k, v in saved_tensors.items() if k.startswith(f"rng.{mine}.")}
        if rng_tensors:
            set_rng_state(rng_tensors, ranks[mine])

    log = _Log(out_dir, dist.main)
    if dist.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        clean_stale_files(out_dir)
        write_config(out_dir, config)
        if resume:
            log.truncate_after(st["step"])
        else:
            for name in ("metrics.jsonl", "metrics.csv", "val.csv"):
                with contextlib.suppress(FileNotFoundError):
                    (out_dir / name).unlink()
    dist.barrier()

    raw = model
    net = model
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        # The buffers (the head's fixed scale, the target's constants) never change: no need to sync them.
        quiet = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DDP).parameters
                 else {"broadcast_buffers": False})
        net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None, **quiet)

    val_names = list(tc["val_metrics"])
    val_clips = val_set.validation_crops(int(tc["val_clips"])) if val_set is not None else None
    baseline = silence_baseline(val_clips, hc["sample_rate"], val_names) if val_clips is not None and dist.main else {}

    def snapshot() -> dict:
        return {"model": {k: v.detach().clone() for k, v in raw.state_dict().items()},
                "optimizer": copy.deepcopy(optimizer.state_dict()), "scheduler": copy.deepcopy(scheduler.state_dict()),
                "scaler": scaler.state_dict() if scaler is not None else None, "loop": dict(st)}

    def restore(snap: dict) -> None:
        raw.load_state_dict(snap["model"])
        optimizer.load_state_dict(copy.deepcopy(snap["optimizer"]))
        scheduler.load_state_dict(copy.deepcopy(snap["scheduler"]))
        if scaler is not None and snap["scaler"]:
            scaler.load_state_dict(snap["scaler"])

    def checkpoint(event: str = "checkpoint") -> None:
        nonlocal good
        tensors, structure = optimizer_to_tensors(optimizer.state_dict())
        tensors.update({f"model.{k}": v for k, v in raw.state_dict().items()})
        rng_tensors, rng_scalars = rng_state()
        with torch.no_grad():
            checksum = float(sum(p.detach().double().abs().sum() for p in raw.parameters()))
        gathered = dist.gather((rng_tensors, rng_scalars, checksum))
        st["rollbacks"] = 0
        good = snapshot()
        if not dist.main:
            return
        rng_meta = {}
        for r, (rt, rs, _) in enumerate(gathered):
            tensors.update({f"rng.{r}.{k}": v.cpu() for k, v in rt.items()})
            rng_meta[str(r)] = rs
        checksums = [g[2] for g in gathered]
        if len(set(checksums)) > 1:
            warn(f"the processes' parameters differ (checksums {checksums}): DDP lost synchronisation")
        epoch, offset = _position(st)
        state = {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "step": st["step"], "steps": steps,
            "world": dist.world, "loop": dict(st), "data": {"epoch": epoch, "offset": offset,
                                                            "clips": len(train_set), "per_rank_batch": per_rank},
            "optimizer": structure, "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None, "rng": rng_meta, "config": config,
            "sources": sources, "rank_checksums": checksums, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        write_checkpoint(out_dir, tensors, state)
        save_model(raw, config, out_dir / MODEL, _info())

    def _position(s) -> tuple[int, int]:
        _, epoch, offset = train_set.indices(s["step"] + s["data_skip"], per_rank, int(tc["seed"]), dist.rank,
                                              dist.world)
        return epoch, offset

    def _info() -> dict:
        return {"steps": st["step"], "seconds": round(st["elapsed"], 3), "clips": len(train_set),
                "val": st["val"], "rollbacks": st["total_rollbacks"], "world": dist.world,
                "sample_rate": hc["sample_rate"], "num_samples": hc["num_samples"]}

    def validate() -> dict | None:
        if val_clips is None or not dist.main:
            return None
        values = evaluate_clips(raw, val_clips, hc["sample_rate"], val_names, batch=max(1, per_rank),
                                device=device, warn=warn)
        record = {"kind": "val", "step": st["step"], **values, **baseline, "clips": len(val_clips),
                  "elapsed": round(st["elapsed"], 3)}
        log.write(record)
        st["val"] = {k: v for k, v in record.items() if k not in ("kind",)}
        return st["val"]

    def emit(event: str, loss=float("nan"), sisnr=float("nan"), rate=float("nan")) -> None:
        if callback is not None and dist.main:
            callback(TrainProgress(st["step"], steps, loss, sisnr, optimizer.param_groups[0]["lr"], st["elapsed"],
                                   rate, st["val"], event))

    good = snapshot()
    bar = None
    if progress and dist.main:
        from tqdm import tqdm

        if seconds > 0:  # the clock may be the budget: show the larger share of either, in %
            bar = tqdm(total=100, unit="%", dynamic_ncols=True, leave=True,
                       bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}")
        else:
            bar = tqdm(total=steps, initial=st["step"], unit="step", dynamic_ncols=True, leave=True)

    def show_progress() -> None:
        if bar is None:
            return
        if seconds > 0:
            bar.update(round(100 * min(1.0, max(st["step"] / steps, st["elapsed"] / seconds)), 1) - bar.n)
        else:
            bar.update(st["step"] - bar.n)

    interrupted = False
    last_loss, last_sisnr, rate = float("nan"), float("nan"), float("nan")
    start = time.perf_counter() - st["elapsed"]
    log_clock, log_step = time.perf_counter(), st["step"]
    validated_at = -1
    with _Signals() as signals:
        try:
            while st["step"] < steps:
                st["elapsed"] = time.perf_counter() - start
                stop_local = signals.received is not None or (should_stop is not None and dist.main and should_stop())
                out_of_time = seconds > 0 and st["elapsed"] >= seconds
                # Every rank stops at the same step, before touching anything (the saved RNG states are
                # then exactly those an uninterrupted run has at this step).
                stop_any, time_up = dist.any([stop_local, out_of_time], device)
                if stop_any or time_up:
                    interrupted = bool(stop_any)
                    break
                step = st["step"]
                wave = torch.from_numpy(train_set.batch(step + st["data_skip"], per_rank, tc, dist.rank,
                                                        dist.world)).to(device)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    params = net(wave, step)
                pred = raw.render({k: v.float() for k, v in params.items()}, wave.shape[-1])  # [B, H, T]
                target = wave.unsqueeze(1).expand_as(pred)
                loss, parts = compute_loss(loss_fn, pred, target, step, float(lc["lambda_mse"]))
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                else:
                    loss.backward()
                clip = float(tc["grad_clip"]) if tc["grad_clip"] > 0 else float("inf")
                norm = torch.nn.utils.clip_grad_norm_(trainable, clip)
                bad = not torch.isfinite(loss).item() or (scaler is None and not torch.isfinite(norm).item())
                (bad,) = dist.any([bad], device)
                if bad:
                    st["rollbacks"] += 1
                    st["total_rollbacks"] += 1
                    failed_at = step
                    if st["rollbacks"] > int(tc["max_rollbacks"]):
                        where = (f"; the last good state is in {checkpoint_path}" if checkpoint_path.exists() else "")
                        raise TrainingError(
                            f"training diverged: the loss or its gradient was not finite {st['rollbacks']} time(s) in "
                            f"a row (last at step {failed_at}) despite rolling back to step {good['loop']['step']} "
                            f"and halving the learning rate each time; lower train.lr or train.grad_clip{where}")
                    if scaler is not None:
                        scaler.update()  # closes this step's unscale_ (restore() then resets the scale)
                    restore(good)
                    kept = st["rollbacks"], st["total_rollbacks"]
                    st.update(good["loop"])
                    st["rollbacks"], st["total_rollbacks"] = kept
                    # Fresh batches after the rollback (the same ones would likely fail again).
                    st["data_skip"] = good["loop"]["data_skip"] + (failed_at - good["loop"]["step"]) + 1
                    st["lr_scale"] = good["loop"]["lr_scale"] * 0.5 ** st["rollbacks"]
                    for g in optimizer.param_groups:
                        g["lr"] *= 0.5 ** st["rollbacks"]
                    warn(f"non-finite loss at step {failed_at}: rolled back to step {st['step']}, learning rate "
                         f"x{st['lr_scale']:.3g}")
                    log.write({"kind": "rollback", "step": st["step"], "failed_at": failed_at,
                               "lr_scale": st["lr_scale"]})
                    emit("rollback")
                    if bar is not None and seconds == 0:
                        bar.n = st["step"]
                        bar.refresh()
                    continue
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                used_lr = optimizer.param_groups[0]["lr"]
                st["step"] = step + 1
                # The schedule's position: the step, or the share of the time budget when that is ahead.
                position = st["step"]
                if seconds > 0:
                    position = max(position, int(steps * min(1.0, (time.perf_counter() - start) / seconds)))
                scheduler.last_epoch = min(position, steps - 1) - 1
                scheduler.step()
                if st["lr_scale"] != 1.0:
                    for g in optimizer.param_groups:
                        g["lr"] *= st["lr_scale"]
                st["elapsed"] = time.perf_counter() - start
                done = st["step"] >= steps
                if st["step"] % int(tc["log_every"]) == 0 or done:
                    with torch.no_grad():
                        last_sisnr = float(si_snr(pred.detach()[:, 0].float(), wave).mean())
                    last_loss = float(loss.detach())
                    now = time.perf_counter()
                    rate = (st["step"] - log_step) * tc["batch_size"] / max(now - log_clock, 1e-9)
                    log_clock, log_step = now, st["step"]
                    record = {"kind": "train", "step": st["step"], "loss": last_loss, "l1": parts["l1"],
                              "stft": parts["stft"], "sisnr": last_sisnr, "lr": used_lr,
                              "clips_per_s": rate, "elapsed": round(st["elapsed"], 3)}
                    log.write(record)
                    if bar is not None:
                        bar.set_postfix_str(f"step {st['step']} loss {last_loss:.4f} SI-SNR {last_sisnr:.2f} dB "
                                            f"lr {record['lr']:.2e} {rate:.1f} clips/s")
                    emit("log", last_loss, last_sisnr, rate)
                show_progress()
                if st["step"] % int(tc["val_every"]) == 0 and not done:
                    validate()
                    validated_at = st["step"]
                    emit("val", last_loss, last_sisnr, rate)
                if st["step"] % int(tc["checkpoint_every"]) == 0 and not done:
                    checkpoint()
                    emit("checkpoint", last_loss, last_sisnr, rate)
        finally:  # a second Ctrl-C raises KeyboardInterrupt mid-step: nothing is saved, the last checkpoint stays
            if bar is not None:
                bar.close()
        st["elapsed"] = time.perf_counter() - start
        if validated_at != st["step"] and signals.received is None:  # a signal asks to be quick
            validate()
        checkpoint("done")
        emit("done", last_loss, last_sisnr, rate)
    if dist.main and interrupted:
        why = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}.get(signals.received, "a stop request")
        print(f"hyperaudio: training stopped by {why} at step {st['step']}: saved {out_dir / CHECKPOINT} "
              f"(continue with --resume)", file=sys.stderr)
    return TrainResult(out_dir, out_dir / MODEL, st["step"], st["elapsed"], interrupted, st["val"], log.history,
                       raw.eval())
