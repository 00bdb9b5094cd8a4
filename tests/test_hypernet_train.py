"""Hypernetwork training: the CLI, exact resume, rollback on NaN, signals, kill -9, torchrun."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from conftest import chirp, speechlike
from hyperaudio import config
from hyperaudio.cli import main
from hyperaudio.hypernet import train as train_mod
from hyperaudio.hypernet.model import load_model
from hyperaudio.hypernet.train import TrainingError, read_checkpoint, train

pytestmark = pytest.mark.usefixtures("one_thread")

SR = 8000
ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
# Tiny and quick: 2 clips per step, no validation unless asked.
TINY = ["train.batch_size=2", "train.log_every=1", "train.val_every=1000", "train.checkpoint_every=3"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("hypernet-data")
    (root / "train").mkdir()
    (root / "val").mkdir()
    for i in range(6):
        sf.write(str(root / "train" / f"s{i}.wav"), speechlike(SR, 0.4 + 0.05 * i, seed=i), SR)
    for i in range(2):
        sf.write(str(root / "val" / f"v{i}.wav"), chirp(SR, 0.3, 150 + 100 * i, 2500), SR)
    return root


def tiny_config(*overrides, preset="debug-standard"):
    return config.resolve(preset, None, [*TINY, *overrides])


def model_tensors(run: Path) -> dict:
    return load_file(str(run / "model.safetensors"))


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_config_section_is_validated():
    assert config.resolve("debug-standard")["train"]["batch_size"] == 4
    assert config.resolve("hypersound-nerf")["train"]["batch_size"] == 16
    with pytest.raises(config.ConfigError, match="batch_sise.*batch_size"):
        config.resolve("debug-standard", None, ["train.batch_sise=2"])
    with pytest.raises(config.ConfigError, match="pct_start"):
        config.resolve("debug-standard", None, ["train.pct_start=1.5"])
    with pytest.raises(config.ConfigError, match="val_metrics"):
        config.resolve("debug-standard", None, ["train.val_metrics=['mse', 'snr']"])
    with pytest.raises(config.ConfigError, match="unknown setting"):
        config.resolve({"target": {"name": "nerf"}, "train": {"stepz": 3}})


def test_cli_train_writes_a_run_folder(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(["train", "--preset", "debug-standard", "--data", str(dataset / "train"), "--val",
               str(dataset / "val"), "-o", str(run), "--steps", "4", "-q", "--set", "train.batch_size=2",
               "--set", "train.val_every=2", "--set", "train.checkpoint_every=2", "--set", "train.log_every=2"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "saved" in err and "si-snr" in err and "silence" in err
    names = {p.name for p in run.iterdir()}
    assert {"model.safetensors", "checkpoint.safetensors", "checkpoint.json", "config.toml", "metrics.jsonl",
            "metrics.csv", "val.csv"} <= names
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in records if r["kind"] == "train"]
    assert train_steps == [2, 4]
    vals = [r for r in records if r["kind"] == "val"]
    assert [v["step"] for v in vals] == [2, 4]
    assert {"mse", "lsd", "si-snr", "silence.mse", "silence.lsd", "silence.si-snr"} <= set(vals[-1])
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header == ["step", "loss", "l1", "stft", "sisnr", "lr", "clips_per_s", "elapsed"]
    model, cfg = load_model(run)
    assert cfg["preset"]["name"] == "debug-standard" and cfg["train"]["steps"] == 4
    state, tensors = read_checkpoint(run)
    assert state["step"] == 4 and any(k.startswith("optim.") for k in tensors)
    assert tensors["rng.0.torch"].dtype == torch.uint8 and tensors["rng.0.numpy"].dtype == torch.uint8
    assert json.loads((run / "checkpoint.json").read_text())["step"] == 4
    assert config.read_preset_file(run / "config.toml")["hypernet"]["num_samples"] == 2048
    # An existing run is never overwritten silently.
    assert main(["train", "--preset", "debug-standard", "--data", str(dataset / "train"), "-o", str(run), "-q"]) == 2
    assert "--resume" in capsys.readouterr().err


def test_resume_is_exact(dataset, tmp_path):
    cfg = tiny_config("train.steps=6", "train.val_every=3")
    straight = train(cfg, dataset / "train", dataset / "val", out_dir=tmp_path / "a", progress=False)
    assert straight.steps == 6 and not straight.interrupted
    calls = []
    half = train(cfg, dataset / "train", dataset / "val", out_dir=tmp_path / "b", progress=False,
                 should_stop=lambda: len(calls) >= 3, callback=lambda p: calls.append(p) if p.event == "log" else None)
    assert half.interrupted and half.steps == 3
    assert read_checkpoint(tmp_path / "b")[0]["step"] == 3
    resumed = train(None, dataset / "train", dataset / "val", out_dir=tmp_path / "b", resume=True, progress=False)
    assert resumed.steps == 6 and not resumed.interrupted
    assert same_tensors(model_tensors(tmp_path / "a"), model_tensors(tmp_path / "b"))
    a, b = read_checkpoint(tmp_path / "a"), read_checkpoint(tmp_path / "b")
    assert a[0]["scheduler"] == b[0]["scheduler"] and same_tensors(a[1], b[1])
    # The metrics of the resumed run continue the file without duplicates.
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]
    # Resuming with another model is refused.
    with pytest.raises(config.ConfigError, match="cannot resume"):
        train(tiny_config("train.steps=6", "hypernet.head_hidden=[8]"), dataset / "train", out_dir=tmp_path / "b",
              resume=True, progress=False)


def test_nan_rolls_back_then_gives_up(dataset, tmp_path, monkeypatch):
    real = train_mod.compute_loss
    calls = {"n": 0}

    def once_nan(*args, **kwargs):
        loss, parts = real(*args, **kwargs)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] == 5 else loss), parts

    monkeypatch.setattr(train_mod, "compute_loss", once_nan)
    events = []
    result = train(tiny_config("train.steps=6"), dataset / "train", out_dir=tmp_path / "nan", progress=False,
                   callback=lambda p: events.append(p.event))
    assert result.steps == 6 and "rollback" in events
    rollback = [r for r in result.history if r["kind"] == "rollback"][0]
    assert rollback["failed_at"] == 4 and rollback["step"] == 3 and rollback["lr_scale"] == 0.5
    assert all(torch.isfinite(v).all() for v in model_tensors(tmp_path / "nan").values())

    def always_nan(*args, **kwargs):
        loss, parts = real(*args, **kwargs)
        return loss * float("nan"), parts

    monkeypatch.setattr(train_mod, "compute_loss", always_nan)
    with pytest.raises(TrainingError, match="diverged.*3 time"):
        train(tiny_config("train.steps=6", "train.max_rollbacks=2"), dataset / "train", out_dir=tmp_path / "nan2",
              progress=False)


def _cli(*args, **kwargs):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([PYTHON, "-m", "hyperaudio.cli", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def _wait_for_checkpoint(run: Path, proc, min_step: int, timeout: float = 90.0) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"training ended early: {proc.communicate()}")
        with_json = run / "checkpoint.json"
        if with_json.exists():
            try:
                step = json.loads(with_json.read_text())["step"]
            except (ValueError, KeyError):
                step = -1
            if step >= min_step:
                return step
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("no checkpoint was written in time")


@pytest.mark.slow
def test_kill_9_then_resume_loses_at_most_one_interval(dataset, tmp_path):
    run = tmp_path / "killed"
    args = ["train", "--preset", "debug-standard", "--data", str(dataset / "train"), "-o", str(run), "-q",
            "--steps", "400", "--set", "train.batch_size=2", "--set", "train.checkpoint_every=2",
            "--set", "train.val_every=1000", "--set", "train.log_every=1"]
    proc = _cli(*args)
    _wait_for_checkpoint(run, proc, 4)
    time.sleep(0.3)  # let it get in the middle of something, possibly a checkpoint write
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    logged = max(json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines())
    state, _ = read_checkpoint(run)  # whatever moment it died at, the checkpoint on disk is whole
    load_model(run)
    assert logged - state["step"] <= 2  # at most one checkpoint interval lost
    # Resume (no preset needed) and finish a few more steps.
    proc = _cli("train", "--resume", "-o", str(run), "-q", "--steps", "400",
                "--set", "train.checkpoint_every=2", "--set", "train.val_every=1000", "--set", "train.log_every=1")
    _wait_for_checkpoint(run, proc, state["step"] + 2)
    proc.send_signal(signal.SIGTERM)  # SIGTERM saves and exits cleanly
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "SIGTERM" in err and "--resume" in err
    final, _ = read_checkpoint(run)
    assert final["step"] > state["step"]
    assert not [p.name for p in run.iterdir() if ".tmp" in p.name]  # no temporary file left behind
    model, _ = load_model(run)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == final["step"]


@pytest.mark.slow
def test_torchrun_two_processes_stay_in_sync(dataset, tmp_path):
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "hyperaudio.cli"]
    proc = subprocess.Popen([*torchrun, "train", "--preset", "debug-standard", "--data", str(dataset / "train"),
                             "-o", str(run), "-q", "--steps", "4", "--set", "train.batch_size=4",
                             "--set", "train.checkpoint_every=2", "--set", "train.val_every=1000"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both workers
        raise
    assert proc.returncode == 0, err[-3000:]
    assert err.count("saved ") == 1  # only rank 0 reports (and writes)
    state, tensors = read_checkpoint(run)
    assert state["world"] == 2 and state["step"] == 4 and state["data"]["per_rank_batch"] == 2
    assert {"rng.0.torch", "rng.1.torch"} <= set(tensors)
    # Each rank's own parameters, summed at the last checkpoint: DDP kept them identical.
    sums = state["rank_checksums"]
    assert len(sums) == 2 and sums[0] == sums[1]
    assert "lost synchronisation" not in err


def test_should_stop_keeps_a_usable_model_and_the_cli_runs_under_python_m(dataset, tmp_path):
    # python -m hyperaudio.cli is what torchrun -m runs.
    proc = subprocess.run([PYTHON, "-m", "hyperaudio.cli", "train", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "--resume" in proc.stdout
    result = train(tiny_config("train.steps=50"), dataset / "train", out_dir=tmp_path / "stop", progress=False,
                   should_stop=lambda: True)
    assert result.interrupted and result.steps == 0
    model, _ = load_model(tmp_path / "stop")
    assert read_checkpoint(tmp_path / "stop")[0]["step"] == 0


def _no_training(monkeypatch):
    """Make starting a run (or building its model) fail the test: a refusal must come first."""
    monkeypatch.setattr(train_mod, "train", lambda *a, **k: pytest.fail("training started"))
    monkeypatch.setattr(train_mod, "build", lambda *a, **k: pytest.fail("the model was built"))


def test_a_fitting_preset_is_refused_for_training(dataset, tmp_path, capsys, monkeypatch):
    _no_training(monkeypatch)
    run = tmp_path / "run"
    rc = main(["train", "--preset", "kan-fast", "--data", str(dataset / "train"), "--steps", "2", "-o", str(run)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("hyperaudio: error: ")
    assert "[hypernet]" in err and "fewsound-kan" in err  # names a hypernetwork preset for the same target
    assert not run.exists()


def test_an_oversized_hypernetwork_is_refused_before_anything_is_allocated(dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(train_mod, "build", lambda *a, **k: pytest.fail("the model was built"))
    monkeypatch.setattr(train_mod, "load_datasets", lambda *a, **k: pytest.fail("the data was read"))
    run = tmp_path / "run"
    # Two 100k-wide layers: 10^10 weights (40 GB for the weights alone).
    rc = main(["train", "--preset", "debug-standard", "--data", str(dataset / "train"), "--steps", "2", "-o",
               str(run), "--set", "hypernet.head_hidden=[100000, 100000]"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("hyperaudio: error: ")
    assert "10,0" in err and "parameters" in err and "head_hidden" in err


def test_every_hypernetwork_preset_is_within_the_size_bound():
    from hyperaudio.hypernet import model as model_mod
    from hyperaudio.plugins import get_registry

    names = [n for n in get_registry().names("presets") if "hypernet" in config.load_preset(n)]
    assert len(names) >= 10
    for name in names:
        train_mod.check_hypernet_preset(name)
        count = model_mod.parameter_count(config.resolve(name))
        assert count is not None and 10_000 < count <= model_mod.MAX_PARAMETERS, (name, count)


def test_checkpoint_files_round_trip(tmp_path):
    from hyperaudio.hypernet import checkpoint as ckpt

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    tensors, structure = ckpt.optimizer_to_tensors(optimizer.state_dict())
    rng_tensors, rng_scalars = ckpt.rng_state()
    draws = torch.rand(5)
    tensors.update({f"rng.0.{k}": v for k, v in rng_tensors.items()})
    ckpt.write_checkpoint(tmp_path, tensors, {"step": 1, "optimizer": structure, "rng": {"0": rng_scalars}})
    state, back = read_checkpoint(tmp_path)
    assert json.loads((tmp_path / "checkpoint.json").read_text()) == state and state["step"] == 1
    fresh = torch.optim.AdamW(model.parameters(), lr=1e-3)
    fresh.load_state_dict(ckpt.optimizer_from_tensors(back, state["optimizer"]))
    assert fresh.state_dict()["param_groups"] == optimizer.state_dict()["param_groups"]
    for a, b in zip(fresh.state_dict()["state"].values(), optimizer.state_dict()["state"].values()):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ckpt.set_rng_state({k[len("rng.0."):]: v for k, v in back.items() if k.startswith("rng.0.")}, state["rng"]["0"])
    assert torch.equal(torch.rand(5), draws)
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
    with pytest.raises(TrainingError, match="no checkpoint"):
        read_checkpoint(tmp_path / "missing")
