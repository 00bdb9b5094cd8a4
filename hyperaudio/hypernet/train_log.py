"""What a training run reports: metrics.jsonl, metrics.csv and val.csv, the progress bar and the lines
on stderr. Only rank 0 writes or prints; the other ranks get the same objects, disabled."""

from __future__ import annotations

import contextlib
import csv
import json
import math
import signal
import sys
from pathlib import Path

from ..audio import atomic_path

TRAIN_COLUMNS = ("step", "loss", "l1", "stft", "sisnr", "lr", "clips_per_s", "elapsed")
METRICS_FILES = ("metrics.jsonl", "metrics.csv", "val.csv")


class MetricsLog:
    """metrics.jsonl, metrics.csv and val.csv in the run folder; ``history`` keeps every record."""

    def __init__(self, out_dir: Path, enabled: bool):
        self.dir, self.enabled = out_dir, enabled
        self.history: list[dict] = []

    def restart(self) -> None:
        """A new run: the files of an earlier one in this folder go."""
        if not self.enabled:
            return
        for name in METRICS_FILES:
            with contextlib.suppress(FileNotFoundError):
                (self.dir / name).unlink()

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


class ProgressBar:
    """tqdm on stderr: steps, or under a time budget the larger share of steps and time, in %."""

    def __init__(self, enabled: bool, steps: int, seconds: float, step: int):
        self.steps, self.seconds, self.bar = steps, seconds, None
        if not enabled:
            return
        from tqdm import tqdm

        if seconds > 0:
            self.bar = tqdm(total=100, unit="%", dynamic_ncols=True, leave=True,
                            bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}")
        else:
            self.bar = tqdm(total=steps, initial=step, unit="step", dynamic_ncols=True, leave=True)

    def show(self, step: int, elapsed: float) -> None:
        if self.bar is None:
            return
        if self.seconds > 0:
            self.bar.update(round(100 * min(1.0, max(step / self.steps, elapsed / self.seconds)), 1) - self.bar.n)
        else:
            self.bar.update(step - self.bar.n)

    def rewind(self, step: int) -> None:
        """Back to ``step`` after a rollback (a time share never goes back)."""
        if self.bar is not None and self.seconds == 0:
            self.bar.n = step
            self.bar.refresh()

    def describe(self, r: dict) -> None:
        """The latest training record beside the bar."""
        if self.bar is not None:
            self.bar.set_postfix_str(f"step {r['step']} loss {r['loss']:.4f} SI-SNR {r['sisnr']:.2f} dB "
                                     f"lr {r['lr']:.2e} {r['clips_per_s']:.1f} clips/s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def warner(enabled: bool):
    def warn(message: str) -> None:
        if enabled:
            print(f"hyperaudio: warning: {message}", file=sys.stderr)

    return warn


def announce(config: dict, train_set, val_set, world: int, resume_step: int | None) -> None:
    """The line that opens a run: the model, the data and the budget."""
    tc, hc = config["train"], config["hypernet"]
    steps, seconds = int(tc["steps"]), float(tc["seconds"])
    budget = f"{steps} steps" + (f" or {seconds:g} s" if seconds else "")
    held = f", {len(val_set)} held out" if val_set is not None else ", no validation set"
    processes = f" over {world} processes" if world > 1 else ""
    resuming = f", resuming at step {resume_step}" if resume_step is not None else ""
    print(f"training {config['preset'].get('name') or 'a hypernetwork'}: {hc['encoder']} -> {hc['strategy']} -> "
          f"{config['target']['name']} ({hc['head_kind']} head) on {len(train_set)} clips "
          f"({train_set.seconds:.0f} s at {hc['sample_rate']} Hz){held}; {budget}, batch {tc['batch_size']}"
          f"{processes}{resuming}", file=sys.stderr)


def announce_stop(signum: int | None, step: int, checkpoint: Path) -> None:
    why = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}.get(signum, "a stop request")
    print(f"hyperaudio: training stopped by {why} at step {step}: saved {checkpoint} (continue with --resume)",
          file=sys.stderr)
