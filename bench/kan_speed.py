"""Time one KAN training step (forward + backward) on a 32768-sample chunk: dense vs fast bases.

    .venv/bin/python bench/kan_speed.py [--samples 32768] [--repeats 9] [--threads N] [--batch B]
                                        [--keep-freed-memory]

"dense" evaluates the B-spline bases with the reference Cox–de Boor recursion over every knot
(efficient-KAN's ``b_splines``); "fast" is the closed-form local evaluation the model uses
(``hyperaudio.targets.kan.bspline_basis``). Both feed the same matmul. The script first checks that
the two agree, then prints the median and minimum wall time of each. ``--batch B`` times
``call_batched`` with ``B`` parameter sets (the fitting path) instead of the plain module.

On a machine shared with other jobs take several runs; the minimum is the least disturbed one.

``--keep-freed-memory`` applies ``hyperaudio.runtime.keep_freed_memory`` (glibc keeps freed memory
instead of returning it to the kernel), which the ``hyperaudio`` CLI does for every command; without
it the figures show the page-fault cost a library user pays in a default process.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from hyperaudio.functional import call_batched, fresh_parameters
from hyperaudio.runtime import keep_freed_memory
from hyperaudio.targets.kan import KAN


def dense_basis(x: torch.Tensor, grid: torch.Tensor, order: int) -> torch.Tensor:
    """Reference: Cox–de Boor over all ``G + 2k`` knot intervals, ``[N, in]`` -> ``[N, in, G+k]``."""
    x = x.unsqueeze(-1)
    bases = ((x >= grid[:-1]) & (x < grid[1:])).to(x.dtype)
    for d in range(1, order + 1):
        left = (x - grid[: -(d + 1)]) / (grid[d:-1] - grid[: -(d + 1)]) * bases[..., :-1]
        right = (grid[d + 1 :] - x) / (grid[d + 1 :] - grid[1:-d]) * bases[..., 1:]
        bases = left + right
    return bases


def use_dense(model: KAN) -> None:
    """Swap every layer's basis evaluation for the reference."""
    def basis(x, layer):  # in the layer's layout: k+1 zero-coefficient margin columns before each input, k+1 at the end
        k = layer.spline_order
        return F.pad(F.pad(dense_basis(x, layer.grid, k), (k + 1, 0)).flatten(-2), (0, k + 1))

    for layer in model.layers:
        layer.basis = lambda x, layer=layer: basis(x, layer)


def timed(step, repeats: int) -> list[float]:
    step()  # warm-up: allocator, thread pool
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=32768)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--dense-repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batch", type=int, default=0, help="time call_batched with this many parameter sets")
    parser.add_argument("--keep-freed-memory", action="store_true", help="glibc: reuse freed memory (see above)")
    args = parser.parse_args()
    if args.keep_freed_memory:
        keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t = torch.linspace(-1, 1, args.samples).unsqueeze(-1)
    target = torch.sin(300 * t) * torch.exp(-t**2)

    fast, dense = KAN(), KAN()
    dense.load_state_dict(fast.state_dict())
    use_dense(dense)
    with torch.no_grad():
        err = (fast(t[:4096]) - dense(t[:4096])).abs().max().item()
    print(f"KAN {sum(p.numel() for p in fast.parameters()):,} parameters, N={args.samples}, "
          f"threads={torch.get_num_threads()}, keep-freed-memory={args.keep_freed_memory}, "
          f"max |fast - dense| output = {err:.2e}")

    def step_for(model):
        if args.batch:
            params = {n: p.requires_grad_(True) for n, p in fresh_parameters(KAN, args.batch).items()}

            def step():
                loss = (call_batched(model, params, t) - target).pow(2).mean()
                loss.backward()
                for p in params.values():
                    p.grad = None
        else:
            def step():
                model.zero_grad(set_to_none=True)
                loss = (model(t) - target).pow(2).mean()
                loss.backward()
        return step

    results = {}
    for name, model, repeats in (("fast", fast, args.repeats), ("dense", dense, args.dense_repeats)):
        times = timed(step_for(model), repeats)
        results[name] = statistics.median(times)
        what = f"call_batched B={args.batch}" if args.batch else "forward+backward"
        print(f"{name:5s} {what}: median {1e3 * results[name]:8.1f} ms   "
              f"min {1e3 * min(times):8.1f} ms   ({repeats} runs)")
    print(f"speed-up (median): {results['dense'] / results['fast']:.1f}x")


if __name__ == "__main__":
    main()
