"""Checkpoints of a hypernetwork training run (the format is in :mod:`.train` and docs/hypernetworks.md).

``checkpoint.safetensors`` holds the tensors (``model.*``, ``optim.<param>.<key>``, ``rng.<rank>.*``)
and the state as JSON metadata; ``checkpoint.json`` is a readable copy of that state. Both are
written atomically, and nothing is pickled. The in-memory snapshot a rollback returns to is here too.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

from ..audio import atomic_path
from ..errors import ConfigError, TrainingError
from ..hya import read_safetensors

CHECKPOINT = "checkpoint.safetensors"
CHECKPOINT_JSON = "checkpoint.json"
MODEL = "model.safetensors"
CHECKPOINT_FORMAT = "hyperaudio.checkpoint"
CHECKPOINT_VERSION = 1
#: ``train`` settings a resumed run may change; everything else must match the checkpoint.
RESUMABLE_CHANGES = ("seconds", "checkpoint_every", "val_every", "val_clips", "val_metrics", "log_every",
                     "max_rollbacks")


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


# -- optimiser state as tensors -----------------------------------------------------------------------
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


# -- the files ------------------------------------------------------------------------------------------
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


# -- saving and resuming a run ----------------------------------------------------------------------------
def rank_state(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict, float]:
    """What each rank contributes to a checkpoint: its RNG states and a checksum of its parameters."""
    tensors, scalars = rng_state()
    with torch.no_grad():
        checksum = float(sum(p.detach().double().abs().sum() for p in model.parameters()))
    return tensors, scalars, checksum


def save_training_state(out_dir: Path, model, optimizer, scheduler, scaler, ranks: list, *, loop: dict, steps: int,
                        data: dict, config: dict, sources: dict) -> None:
    """Write the checkpoint of a run; ``ranks`` is every rank's :func:`rank_state`, in rank order."""
    tensors, structure = optimizer_to_tensors(optimizer.state_dict())
    tensors.update({f"model.{k}": v for k, v in model.state_dict().items()})
    rng_meta = {}
    for r, (rt, rs, _) in enumerate(ranks):
        tensors.update({f"rng.{r}.{k}": v.cpu() for k, v in rt.items()})
        rng_meta[str(r)] = rs
    state = {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "step": loop["step"], "steps": steps,
        "world": len(ranks), "loop": dict(loop), "data": data, "optimizer": structure,
        "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_meta, "config": config, "sources": sources, "rank_checksums": [r[2] for r in ranks],
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_checkpoint(out_dir, tensors, state)


def load_training_state(state: dict, tensors: dict[str, torch.Tensor], model, optimizer, scheduler, scaler,
                        loop: dict, rank: int, warn) -> None:
    """Put a checkpoint back: the weights, optimiser, schedule, ``loop`` (updated) and this rank's RNG states."""
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    optimizer.load_state_dict(optimizer_from_tensors(tensors, state["optimizer"]))
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    for key in loop:
        loop[key] = state["loop"].get(key, loop[key])
    ranks = state.get("rng", {})
    mine = str(rank) if str(rank) in ranks else "0"
    if str(rank) not in ranks:
        warn(f"the checkpoint was written by {state.get('world', 1)} process(es); rank {rank} takes "
             "rank 0's random state")
    rng_tensors = {k[len(f"rng.{mine}."):]: v for k, v in tensors.items() if k.startswith(f"rng.{mine}.")}
    if rng_tensors:
        set_rng_state(rng_tensors, ranks[mine])


def merge_resume_config(saved: dict, given: dict | None) -> dict:
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


# -- the last good state, in memory (what a rollback returns to) --------------------------------------------
def snapshot(model, optimizer, scheduler, scaler, loop: dict) -> dict:
    return {"model": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "optimizer": copy.deepcopy(optimizer.state_dict()), "scheduler": copy.deepcopy(scheduler.state_dict()),
            "scaler": scaler.state_dict() if scaler is not None else None, "loop": dict(loop)}


def restore(snap: dict, model, optimizer, scheduler, scaler) -> None:
    model.load_state_dict(snap["model"])
    optimizer.load_state_dict(copy.deepcopy(snap["optimizer"]))
    scheduler.load_state_dict(copy.deepcopy(snap["scheduler"]))
    if scaler is not None and snap["scaler"]:
        scaler.load_state_dict(snap["scaler"])
