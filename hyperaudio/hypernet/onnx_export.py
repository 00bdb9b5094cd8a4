"""Export a trained hypernetwork (encoder + head + strategy) to ONNX, so other hosts encode instantly.

The model
---------
``audio``            float32 ``[B, T]``  ``T = hypernet.num_samples`` samples at ``hypernet.sample_rate``,
                                         mono, peak-normalised (as in training; keep the peak as the
                                         INR's gain)
``params.<name>``    float32 ``[B, *shape]`` one output per parameter of the target network, in its
                                         ``named_parameters`` order: the complete parameter set of
                                         each clip's INR (generated, shared and the target's own)

The batch axis is dynamic; ``T`` is fixed, because the head's input size is the encoder's latent
size for that length. Feed the outputs to the target network (e.g. ``torch.func.functional_call``)
on ``t = linspace(-1, 1, T)``, or write them into a ``.hya`` file. Metadata (``metadata_props``):
``hyperaudio.format = hyperaudio.hypernet.onnx``, ``sample_rate``, ``num_samples``, ``target``,
``parameters`` (JSON names and shapes) and the full ``config``.

Which encoders export: ``soundstream`` and ``snac`` are convolutions; ``whisper-lora``'s
transformer exports with the TorchScript exporter; ``spectrogram`` cannot — its pitch and
aperiodicity come from pyworld (numpy, outside the torch graph). An encoder that cannot be traced
gives a :class:`hyperaudio.onnx_export.ExportError` naming it and the reason.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from torch import nn

from ..onnx_export import OPSET, trace_to_onnx
from .model import HyperNetwork

FORMAT = "hyperaudio.hypernet.onnx"
INPUT = "audio"


class _Graph(nn.Module):
    def __init__(self, model: HyperNetwork):
        super().__init__()
        self.model = model
        self.names = [name for name, _ in model.target.named_parameters()]

    def forward(self, audio: torch.Tensor):
        full = self.model.full_parameters(self.model(audio))
        return tuple(full[name] for name in self.names)


def export_bytes(model: HyperNetwork, config: dict, opset: int = OPSET) -> bytes:
    model = model.eval()
    graph = _Graph(model)
    outputs = [f"params.{name}" for name in graph.names]
    meta = {
        "format": FORMAT,
        "sample_rate": str(int(config["hypernet"]["sample_rate"])),
        "num_samples": str(model.num_samples),
        "target": str(config["target"]["name"]),
        "parameters": json.dumps({name: list(p.shape) for name, p in model.target.named_parameters()}),
        "config": json.dumps(config),
    }
    doc = (f"hyperaudio hypernetwork: {INPUT} float32 [B, {model.num_samples}] at {meta['sample_rate']} Hz -> "
           "params.<name> float32 [B, *shape]")
    encoder = config.get("hypernet", {}).get("encoder", type(model.encoder).__name__)
    example = (torch.randn(2, model.num_samples) * 0.3,)
    return trace_to_onnx(graph, example, f"the hypernetwork (encoder {encoder!r})", meta, doc, opset,
                         input_names=[INPUT], output_names=outputs,
                         dynamic_axes={INPUT: {0: "B"}, **{o: {0: "B"} for o in outputs}})


def verify(model: HyperNetwork, data: bytes, seed: int = 0) -> float:
    """Largest |onnxruntime - torch| over all outputs for a batch of 3 random clips."""
    import onnxruntime as ort

    gen = torch.Generator().manual_seed(seed)
    audio = torch.randn(3, model.num_samples, generator=gen) * 0.3
    with torch.no_grad():
        expected = _Graph(model.eval())(audio)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = session.run(None, {INPUT: audio.numpy()})
    return max(float(np.max(np.abs(g - e.detach().numpy()))) if e.numel() else 0.0 for g, e in zip(got, expected))

