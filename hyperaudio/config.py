"""Presets and resolved configurations.

A preset is a TOML file (``presets/*.toml``, or contributed by a plugin) with these tables::

    [preset]        name, description, paper
    [target]        name = "kan"            # a registered target network
    [target.params] constructor keywords of that target network
    [fit]           single-sound fitting budget and optimiser
    [loss]          reconstruction-loss weights (hypersound.md §3.4)
    [hypernet]      hypernetwork: encoder, strategy, head, model rate and clip length
    [train]         hypernetwork training (``hyperaudio train``, hyperaudio.hypernet.train)

``[train]`` (defaults follow hypersound.md §4.1 and kan-fewsound.txt §4.2 where they say):

``steps``             optimiser steps; the OneCycle schedule spans them
``seconds``           wall-clock budget (0 = none); the schedule then follows elapsed time
                      when that runs out first
``batch_size``        clips per step over all processes (HyperSound: 16)
``lr``                AdamW peak learning rate of the OneCycle schedule (HyperSound 1e-4,
                      FewSound 1e-5; SIREN targets need ~100x less)
``weight_decay``      AdamW weight decay
``pct_start``         OneCycle warm-up share; ``div_factor``, ``final_div_factor`` as torch's
                      ``OneCycleLR`` (whose defaults these are)
``grad_clip``         gradient-norm clipping threshold (0 = off)
``amp``               mixed precision (autocast) where the device supports it (CUDA); off on CPU
``checkpoint_every``  steps between checkpoints (also written on SIGINT/SIGTERM and at the end)
``val_every``         steps between validations on the held-out clips (and at the end)
``val_clips``         held-out clips evaluated (0 = all)
``val_metrics``       metric names (hyperaudio.metrics); add "pesq", "stoi" for perceptual ones
``log_every``         steps between lines in metrics.jsonl / metrics.csv
``seed``              seeds initialisation, data order, crops and augmentations
``random_crop``       random crops (False: always the clip's start; validation crops are fixed)
``phase_mangle``      probability of RAVE's random phase mangle (2nd-order all-pass filter)
``phase_mangle_min_hz``, ``phase_mangle_max_hz``, ``phase_mangle_amp``  its frequency range
                      (log-uniform) and pole radius (RAVE: 20 Hz, 2 kHz, 0.99)
``dequantize_bits``   add uniform noise of one step at this bit depth (RAVE: 16; 0 = off)
``max_rollbacks``     non-finite losses tolerated in a row (each rolls back to the last good
                      checkpoint and halves the learning rate) before training stops with an error

Test-time refinement (``hyperaudio encode --refine``) fits with the ``[fit]`` section (``lr``,
``optimizer``) and ``[loss]`` of the model's config.

Resolution order: built-in defaults < preset < ``--inr`` < ``--set key=value`` overrides.
The resolved config is validated (unknown keys, wrong types, unknown target parameters) and
stored verbatim in every ``.hya`` file, so a result can always be reproduced.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import tomllib
from pathlib import Path
from typing import Any

from .errors import ConfigError

DEFAULTS: dict[str, dict[str, Any]] = {
    "preset": {"name": "", "description": "", "paper": ""},
    # time_scale: the network sees t in [-s, s] (hyperaudio.recipe); the auto recipe chooses it.
    "target": {"name": "", "params": {}, "time_scale": 1.0},
    "fit": {
        "recipe": "auto",  # auto: hyperaudio.recipe chooses lr, time scale and loss; fixed: the settings below
        "steps": 2000,  # step budget per group of chunks
        "seconds": 0.0,  # wall-clock budget for the whole fit (0 = none)
        "target_sisnr": 0.0,  # stop once every chunk reaches this SI-SNR in dB (0 = off)
        "lr": 1e-3,
        "min_lr_ratio": 0.05,  # cosine decay floor, relative to lr
        "weight_decay": 0.0,
        "optimizer": "adamw",
        "chunk_samples": 32768,  # HyperSound/FewSound clip length (~1.5 s at 22.05 kHz)
        "overlap_samples": 1024,  # crossfade length between chunks
        "chunk_batch": 8,  # chunks (x channels) fitted together in one batched call
        "batch_samples": 0,  # time coordinates per step, drawn at random (0 = every sample; L1 only)
        "seed": 0,
        "eval_every": 25,
    },
    "loss": {"lambda_t": 1.0, "lambda_f": 1.0, "lambda_mse": 0.0, "p": 0.0, "ramp_steps": 0},
    # Hypernetworks (hypersound.md §3.2; defaults are HyperSound's): encoder + strategy + head.
    "hypernet": {
        "encoder": "soundstream",
        "encoder_params": {},
        "strategy": "standard",
        "strategy_params": {},
        "head_hidden": [400, 768, 768, 768, 768, 400],
        "head_kind": "dense",  # dense | lowrank | chunked (hyperaudio.hypernet.head)
        "head_rank": 64,
        "head_chunk": 4096,
        "sample_rate": 22050,  # the model's rate: inputs are resampled to it
        "num_samples": 32768,  # the model's clip length (~1.5 s at 22.05 kHz)
    },
    # Hypernetwork training (hyperaudio.hypernet.train); documented in the module docstring.
    "train": {
        "steps": 10000,
        "seconds": 0.0,
        "batch_size": 16,
        "lr": 1e-4,
        "weight_decay": 0.01,
        "pct_start": 0.3,
        "div_factor": 25.0,
        "final_div_factor": 1e4,
        "grad_clip": 1.0,
        "amp": True,
        "checkpoint_every": 500,
        "val_every": 500,
        "val_clips": 64,
        "val_metrics": ["mse", "lsd", "si-snr"],
        "log_every": 10,
        "seed": 0,
        "random_crop": True,
        "phase_mangle": 0.8,
        "phase_mangle_min_hz": 20.0,
        "phase_mangle_max_hz": 2000.0,
        "phase_mangle_amp": 0.99,
        "dequantize_bits": 16,
        "max_rollbacks": 3,
    },
}
OPTIMIZERS = ("adam", "adamw")
RECIPES = ("auto", "fixed")
MAX_TIME_SCALE = 1e4  # t in [-1e4, 1e4]: past every frequency a 32768-sample chunk holds


def _merge(base: dict, update: dict, where: str = "") -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "params":
            out[key] = _merge(out[key], value, f"{where}{key}.")
        elif isinstance(value, dict) and key == "params":
            out[key] = {**out.get(key, {}), **copy.deepcopy(value)}
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"fit.lr=1e-3"`` -> (["fit", "lr"], 0.001). Values are TOML literals; bare words are strings."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. fit.lr=0.001")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return path, value


def apply_overrides(config: dict, overrides: list[str]) -> dict:
    config = copy.deepcopy(config)
    for text in overrides:
        path, value = parse_override(text)
        node = config
        for part in path[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {text!r}: {part!r} is not a table")
            node = nxt
        node[path[-1]] = value
    return config


def read_preset_file(path: str | Path) -> dict:
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"preset file {path} not found") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"preset file {path}: {exc}") from None


def dumps_toml(data: dict) -> str:
    """TOML text of a preset or config (what :func:`read_preset_file` reads back)."""
    import tomli_w

    # TOML has no null. A None setting (possible from Python, never from a file) is left out, so
    # it takes its default when read back; None inside a list has no such reading and is refused.
    def tables(node: dict) -> dict:
        return {k: tables(v) if isinstance(v, dict) else v for k, v in node.items() if v is not None}

    try:
        return tomli_w.dumps(tables(data))
    except TypeError as exc:
        raise ConfigError(f"cannot write the config as TOML: {exc}") from None


def load_preset(name_or_path: str) -> dict:
    """A registered preset by name, or a TOML file by path."""
    from .plugins import RegistryError, get_registry

    if name_or_path.endswith(".toml") or Path(name_or_path).is_file():
        preset = read_preset_file(name_or_path)
        preset.setdefault("preset", {}).setdefault("name", Path(name_or_path).stem)
        return preset
    try:
        entry = get_registry().get("presets", name_or_path)
    except RegistryError as exc:
        raise ConfigError(str(exc)) from None
    preset = copy.deepcopy(entry.obj)
    preset.setdefault("preset", {}).setdefault("name", entry.name)
    return preset


def default_preset_for(target: str) -> str | None:
    """The preset named after a target network (``kan`` -> ``kan-inr``), if one is registered."""
    from .plugins import get_registry

    names = get_registry().names("presets")
    for candidate in (f"{target}-inr", target):
        if candidate in names:
            return candidate
    return None


def quick_preset_for(target: str) -> str | None:
    """The preset for a budget of minutes: ``<target>-fast`` if registered, else the default one.

    ``kan-fast`` drops the paper's mel-STFT term, which keeps SI-SNR negative for the first
    thousands of steps; the demo and the desktop app start from it.
    """
    from .plugins import get_registry

    fast = f"{target}-fast"
    return fast if fast in get_registry().names("presets") else default_preset_for(target)


def resolve(preset: str | dict | None = None, target: str | None = None, overrides: list[str] = ()) -> dict:
    """Defaults < preset < target < overrides, validated."""
    if preset is None and target:
        preset = default_preset_for(target)
    base = copy.deepcopy(DEFAULTS)
    if preset is not None:
        preset_dict = load_preset(preset) if isinstance(preset, str) else preset
        if target and preset_dict.get("target", {}).get("name") not in (None, target):
            # An explicit --inr wins, but the preset's parameters belong to another network.
            preset_dict = {k: v for k, v in preset_dict.items() if k != "target"}
        base = _merge(base, preset_dict)
    if target:
        base["target"]["name"] = target
    config = apply_overrides(base, list(overrides))
    validate(config)
    return config


def _check_type(where: str, value: Any, default: Any) -> None:
    if default is None:
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, (int, float)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple))
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(f"{where}: expected {type(default).__name__}, got {value!r}")


def _unknown(where: str, key: str, known) -> ConfigError:
    hint = difflib.get_close_matches(key, list(known), n=1)
    more = f"; did you mean {hint[0]!r}?" if hint else f"; known: {', '.join(sorted(known))}"
    return ConfigError(f"unknown setting {where}{key!r}{more}")


def target_signature(cls) -> dict[str, Any]:
    """Keyword hyperparameters of a target network and their defaults."""
    params = {}
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        params[name] = None if p.default is inspect.Parameter.empty else p.default
    return params


def check_tables(config: Any) -> None:
    """Raise ConfigError unless ``config`` is a table of known sections that are tables, with a
    table ``target.params``: the shape every other check relies on (a damaged file may lack it)."""
    if not isinstance(config, dict):
        raise ConfigError(f"a config must be a table of sections, got {type(config).__name__}")
    for section, values in config.items():
        if section not in DEFAULTS:
            raise _unknown("", section, DEFAULTS)
        if not isinstance(values, dict):
            raise ConfigError(f"[{section}] must be a table")
    params = config.get("target", {}).get("params", {})
    if not isinstance(params, dict):
        raise ConfigError(f"target.params must be a table, got {type(params).__name__}")


def validate(config: dict) -> None:
    from .plugins import RegistryError, get_registry

    check_tables(config)
    # A section or key missing (a file written before it existed, or damaged) takes its default.
    config = {section: {**defaults, **config.get(section, {})} for section, defaults in DEFAULTS.items()}
    for section, values in config.items():
        for key, value in values.items():
            if key not in DEFAULTS[section]:
                raise _unknown(f"{section}.", key, DEFAULTS[section])
            if key != "params":
                _check_type(f"{section}.{key}", value, DEFAULTS[section][key])
    name = config["target"]["name"]
    if not name:
        raise ConfigError("no target network chosen: pass --inr NAME or a preset")
    try:
        cls = get_registry().get("target_networks", name).obj
    except RegistryError as exc:
        raise ConfigError(str(exc)) from None
    signature = target_signature(cls)
    for key, value in config["target"]["params"].items():
        if key not in signature:
            raise _unknown(f"target.params.({name}) ", key, signature)
        _check_type(f"target.params.{key}", value, signature[key])
    scale = config["target"]["time_scale"]
    if not 0 < scale <= MAX_TIME_SCALE:  # also refuses NaN
        raise ConfigError(f"target.time_scale must be in (0, {MAX_TIME_SCALE:g}], got {scale}")
    fit = config["fit"]
    if fit["recipe"] not in RECIPES:
        raise ConfigError(f"fit.recipe must be one of {', '.join(RECIPES)}, got {fit['recipe']!r}")
    if fit["optimizer"] not in OPTIMIZERS:
        raise ConfigError(f"fit.optimizer must be one of {', '.join(OPTIMIZERS)}, got {fit['optimizer']!r}")
    for key in ("steps", "chunk_samples", "chunk_batch", "eval_every"):
        if fit[key] < 1:
            raise ConfigError(f"fit.{key} must be at least 1")
    if not 0 <= fit["overlap_samples"] < fit["chunk_samples"] // 2:
        raise ConfigError("fit.overlap_samples must be in [0, chunk_samples / 2)")
    if fit["lr"] <= 0:
        raise ConfigError("fit.lr must be positive")
    if fit["batch_samples"] < 0:
        raise ConfigError("fit.batch_samples must be >= 0 (0 = every sample)")
    if fit["batch_samples"] and config["loss"]["lambda_f"]:
        raise ConfigError("fit.batch_samples needs loss.lambda_f = 0: the mel-STFT term needs whole chunks")
    _validate_train(config["train"])


def _validate_train(tc: dict) -> None:
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(f"train.{message}")

    for key in ("steps", "batch_size", "checkpoint_every", "val_every", "log_every"):
        need(isinstance(tc[key], int) and tc[key] >= 1, f"{key} must be an integer of at least 1, got {tc[key]!r}")
    need(isinstance(tc["val_clips"], int) and tc["val_clips"] >= 0, "val_clips must be an integer >= 0 (0 = all)")
    need(isinstance(tc["seed"], int), f"seed must be an integer, got {tc['seed']!r}")
    need(tc["seconds"] >= 0, "seconds must be >= 0 (0 = no time budget)")
    need(tc["lr"] > 0, "lr must be positive")
    need(tc["weight_decay"] >= 0, "weight_decay must be >= 0")
    need(0 < tc["pct_start"] < 1, "pct_start must be in (0, 1)")
    need(tc["div_factor"] > 0 and tc["final_div_factor"] > 0, "div_factor and final_div_factor must be positive")
    need(tc["grad_clip"] >= 0, "grad_clip must be >= 0 (0 = off)")
    need(0 <= tc["phase_mangle"] <= 1, "phase_mangle is a probability in [0, 1]")
    need(0 < tc["phase_mangle_min_hz"] <= tc["phase_mangle_max_hz"],
         "phase_mangle_min_hz must be positive and not above phase_mangle_max_hz")
    need(0 <= tc["phase_mangle_amp"] < 1, "phase_mangle_amp (the pole radius) must be in [0, 1)")
    need(isinstance(tc["dequantize_bits"], int) and 0 <= tc["dequantize_bits"] <= 32,
         "dequantize_bits must be an integer in [0, 32] (0 = off)")
    need(isinstance(tc["max_rollbacks"], int) and tc["max_rollbacks"] >= 0, "max_rollbacks must be an integer >= 0")
    from .metrics import METRICS

    unknown = [m for m in tc["val_metrics"] if m not in METRICS]
    need(not unknown, f"val_metrics: unknown metric(s) {unknown}; known: {', '.join(METRICS)}")


def build_target(config: dict, out_channels: int | None = None):
    """Instantiate the configured target network, refusing one over the bounds of
    :mod:`hyperaudio.limits` (parameters, modules, layer width) before allocating it."""
    from .limits import TooLarge, check_size
    from .plugins import get_registry

    name = config["target"]["name"]
    cls = get_registry().get("target_networks", name).obj
    params = dict(config["target"].get("params", {}))
    if out_channels is not None and "out_channels" in target_signature(cls):
        params["out_channels"] = out_channels
    key = (cls, repr(sorted(params.items())))
    if key in _WITHIN_BOUNDS:  # fit builds one network per member: measure each configuration once
        return _scaled(_construct(name, cls, params), config)
    try:
        _dry_run(cls, params)
        module = _construct(name, cls, params)
        check_size(module)
    except TooLarge as exc:
        raise ConfigError(f"target network {name!r} is too large: {exc}; lower its target.params") from None
    if len(_WITHIN_BOUNDS) < 256:
        _WITHIN_BOUNDS.add(key)
    return _scaled(module, config)


def _scaled(module, config: dict):
    """Make ``module`` see ``t · target.time_scale``. A forward pre-hook, so parameter names, the
    functional call, rendering and ONNX export all stay those of the plain network."""
    scale = float(config["target"].get("time_scale", 1.0))
    if scale != 1.0:
        module.register_forward_pre_hook(lambda _module, args: (args[0] * scale, *args[1:]))
    return module


_WITHIN_BOUNDS: set = set()  # (class, params) already built and measured within hyperaudio.limits


def _dry_run(cls, params: dict) -> None:
    """Build and measure the network on the meta device, allocating nothing: an oversized one
    raises TooLarge here. Any other failure is left to the real build, which reports bad settings;
    a network whose initialisation needs real data (KAN's least-squares spline fit) fails on meta
    and is then still stopped by ``bounded_construction`` as soon as it registers too much."""
    import torch

    from .limits import TooLarge, bounded_construction, check_size

    try:
        with bounded_construction(), torch.device("meta"):
            check_size(cls(**params))
    except TooLarge:
        raise
    except Exception:  # noqa: BLE001  (meta unsupported, or bad settings)
        pass


def _construct(name: str, cls, params: dict):
    from .limits import bounded_construction

    try:
        with bounded_construction():
            return cls(**params)
    except (TypeError, ValueError, RuntimeError, ArithmeticError, IndexError, KeyError, MemoryError) as exc:
        # RuntimeError: torch refusing a size (a negative dimension, an allocation that fails)
        raise ConfigError(f"target network {name!r}: {type(exc).__name__}: {exc}") from None
