"""Hypernetwork jobs, run in a worker process like fits (see ``worker``): encoding a sound with a
trained hypernetwork (``hyperaudio.hypernet.encode``) and training one on a folder of audio
(``hyperaudio.hypernet.train``). No Qt here."""

from __future__ import annotations

from pathlib import Path

from .worker import Reporter


def encode_job(spec: dict, rep: Reporter) -> dict:
    """``spec``: model (run folder or model.safetensors), audio ``[C, N]``, sample_rate,
    refine_steps, out (the .hya to write)."""
    import numpy as np

    from hyperaudio import hya
    from hyperaudio.hypernet.encode import encode

    steps = int(spec.get("refine_steps", 0))

    def callback(progress) -> None:
        rep.wait_if_paused()
        if rep.should_stop():
            # encode() has no stop hook; its refinement is a fit, which ends on KeyboardInterrupt
            # and keeps what it has learnt, exactly what Stop means for a fit.
            raise KeyboardInterrupt
        rep.progress(fraction=progress.fraction, step=progress.step, loss=progress.loss, sisnr=progress.sisnr,
                     lr=progress.lr, elapsed=progress.elapsed)

    rep.log(f"encoding with {spec['model']}" + (f", then {steps} refinement steps" if steps else ""))
    rep.progress(force=True, fraction=0.0)
    from hyperaudio import fit

    with rep.using_clock(fit):
        inr = encode(spec["model"], np.asarray(spec["audio"], np.float32), float(spec["sample_rate"]),
                     refine_steps=steps, callback=callback if steps else None)
    out = Path(spec["out"])
    hya.save(inr, out)
    rep.progress(force=True, fraction=1.0)
    return {"path": str(out), "info": inr.info}


def train_job(spec: dict, rep: Reporter) -> dict:
    """``spec``: config (resolved), data (folder, list file or glob), val (or None), out_dir, resume."""
    from hyperaudio.hypernet import train as train_module
    from hyperaudio.hypernet.train import train

    cfg = spec["config"]
    budget = float(cfg["train"]["seconds"]) if cfg is not None else 0.0

    def callback(progress) -> None:
        rep.wait_if_paused()
        fraction = progress.step / max(1, progress.steps)
        if budget > 0:
            fraction = max(fraction, progress.elapsed / budget)
        rep.progress(force=progress.event != "log", fraction=min(1.0, fraction), step=progress.step,
                     loss=progress.loss, sisnr=progress.sisnr, lr=progress.lr, elapsed=progress.elapsed,
                     event=progress.event, val=progress.val)
        if progress.event in ("val", "checkpoint", "rollback"):
            rep.log(f"step {progress.step}: {progress.event}")

    rep.log(f"training on {spec['data']} into {spec['out_dir']}")
    with rep.using_clock(train_module):
        result = train(cfg, spec["data"], spec.get("val"), out_dir=spec["out_dir"],
                       resume=bool(spec.get("resume")), callback=callback, should_stop=rep.should_stop,
                       progress=False)
    return {"out_dir": str(result.out_dir), "model_path": str(result.model_path), "steps": result.steps,
            "seconds": result.seconds, "interrupted": result.interrupted, "val": result.val}
