"""The resume trial: a real ``train`` run killed with SIGKILL after its first checkpoint, at three
points, then resumed with ``--resume``, ends with exactly the weights of an uninterrupted run."""

import signal
import time

import pytest

from test_hypernet_train import _cli, _wait_for_checkpoint, dataset, model_tensors, same_tensors  # noqa: F401
from hyperaudio.hypernet.train import read_checkpoint

STEPS = 60
# The same settings for every run: a resumed run may change none that affect the weights.
SETTINGS = ["-q", "--steps", str(STEPS), "--set", "train.batch_size=2", "--set", "train.checkpoint_every=2",
            "--set", "train.val_every=1000", "--set", "train.log_every=1"]


def _finish(proc) -> None:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]


@pytest.fixture(scope="module")
def straight(dataset, tmp_path_factory):  # noqa: F811
    run = tmp_path_factory.mktemp("trial") / "straight"
    _finish(_cli("train", "--preset", "debug-standard", "--data", str(dataset / "train"), "-o", str(run), *SETTINGS))
    return model_tensors(run)


@pytest.mark.slow
@pytest.mark.parametrize("after,pause", [(2, 0.0), (12, 0.05), (24, 0.2)],
                         ids=["first-checkpoint", "mid-step", "later"])
def test_kill_9_then_resume_gives_the_uninterrupted_weights(dataset, straight, tmp_path, after, pause):  # noqa: F811
    run = tmp_path / "killed"
    proc = _cli("train", "--preset", "debug-standard", "--data", str(dataset / "train"), "-o", str(run), *SETTINGS)
    _wait_for_checkpoint(run, proc, after)
    time.sleep(pause)  # a different moment of the loop each time: a step, a log line, a checkpoint write
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    state, _ = read_checkpoint(run)
    assert after <= state["step"] < STEPS  # killed after a checkpoint and before the end
    _finish(_cli("train", "--resume", "-o", str(run), *SETTINGS))
    assert read_checkpoint(run)[0]["step"] == STEPS
    assert same_tensors(model_tensors(run), straight)
