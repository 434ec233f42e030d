"""What one ``AdaptiveLR.step`` costs, next to ``ReduceLROnPlateau.step`` and one optimizer step.

What it measures: microseconds per call of ``AdaptiveLR.step`` (src/adaptive_lr/scheduler.py, with
the knobs of params.yaml ``schedules.adaptive``) fed

* a float (the mean validation loss),
* a Python list of per-sample losses (what the training loop passes after a probe), and
* a 1-D tensor of per-sample losses,

for a few probe sizes (default 32, 256 and 2048 samples), and of torch's ``ReduceLROnPlateau.step``
(params.yaml ``schedules.plateau``) fed the same stream as floats. The stream is synthetic: fixed
per-sample difficulties times a decaying level with 10% noise, so the scheduler takes real
decisions (new references, raises, cuts) rather than one branch. The references are one
``Adam.step()`` on the vision task's model (params.yaml ``tasks.vision.model``) and one whole
training step of that model (forward, loss, backward, Adam step; a random batch of the
configured batch size, with the configured autocast). Every figure is the median over repeats,
and the repeats of all variants are interleaved so machine noise hits them alike.

How to read it: ``x plateau`` is the call's cost over ``ReduceLROnPlateau.step(float)``;
``% Adam step`` and ``% train step`` are its cost as a share of one optimizer step and of one
training step. The loop calls ``step`` a few times per epoch (``probes`` + 1), not per batch,
so its share of an epoch is roughly ``(probes + 1) / steps_per_epoch`` times the last column.

Run: ``python bench/step_cost.py`` (sizes 32 256 2048, 15 repeats, about 20 s).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import replace

import torch
from _common import REPO, machine, median, table

from adaptive_lr import schedules
from adaptive_lr.config import load_params
from adaptive_lr.tasks import get_task
from adaptive_lr.train import autocast_for


def loss_stream(n_samples: int, length: int, seed: int = 0) -> list[torch.Tensor]:
    """``length`` measurements of ``n_samples`` per-sample losses: fixed difficulties x a decaying level x noise."""
    g = torch.Generator().manual_seed(seed)
    difficulty = torch.empty(n_samples, dtype=torch.float64).exponential_(generator=g)
    out = []
    for t in range(length):
        level = 0.3 + 2.0 * math.exp(-t / (length / 4))
        noise = 1 + 0.1 * torch.randn(n_samples, generator=g, dtype=torch.float64)
        out.append((difficulty * level * noise).float())
    return out


def time_calls(make: Callable[[], Callable], inputs: list) -> float:
    """Microseconds per call of a fresh ``make()``'s step over ``inputs`` (setup not timed)."""
    step = make()
    start = time.perf_counter()
    for x in inputs:
        step(x)
    return (time.perf_counter() - start) / len(inputs) * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[32, 256, 2048], help="probe sizes in samples (default: 32 256 2048)"
    )
    parser.add_argument(
        "--length", type=int, default=100, help="measurements in the stream fed per repeat (default: 100)"
    )
    parser.add_argument(
        "--repeats", type=int, default=15, help="interleaved repeats; figures are medians (default: 15)"
    )
    parser.add_argument(
        "--train-steps", type=int, default=3, help="optimizer/training steps timed per repeat (default: 3)"
    )
    parser.add_argument(
        "--width", type=int, default=None, help="vision model width (default: params.yaml's; 64 = ResNet-18)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    parser.add_argument("--params", default=str(REPO / "params.yaml"), help="params file (default: the repository's)")
    args = parser.parse_args(argv)
    for name in ("length", "repeats", "train_steps", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if min(args.sizes) < 2:
        parser.error("--sizes must be >= 2 (a per-sample test needs two samples)")
    if args.width is not None and args.width < 1:
        parser.error("--width must be >= 1")
    torch.set_num_threads(args.threads)

    params = load_params(args.params)
    cfg = params.tasks["vision"]
    if args.width is not None:
        cfg = replace(cfg, model={**cfg.model, "width": args.width})
    ctx = schedules.Context(cfg.lr, 0.0, cfg.epochs, 1)

    def scheduler(name: str) -> Callable[[], Callable]:
        def make() -> Callable:
            param = torch.nn.Parameter(torch.zeros(1))
            return schedules.build(params.schedules[name], [param], ctx).scheduler.step

        return make

    # the per-sample stream of the largest probe; smaller probes are its first samples, as a probe is
    # the first validation batches; floats are the means (what a plateau scheduler is fed)
    full = loss_stream(max(args.sizes), args.length)
    floats = [float(x.mean()) for x in full]
    variants: dict[str, tuple[Callable[[], Callable], list]] = {
        "ReduceLROnPlateau.step(float)": (scheduler("plateau"), floats),
        "AdaptiveLR.step(float)": (scheduler("adaptive"), floats),
    }
    for n in sorted(args.sizes):
        variants[f"AdaptiveLR.step(list of {n})"] = (scheduler("adaptive"), [x[:n].tolist() for x in full])
        variants[f"AdaptiveLR.step(tensor of {n})"] = (scheduler("adaptive"), [x[:n].clone() for x in full])

    # the references: one Adam step, and one training step, of the vision task's model
    task = get_task("vision", cfg)
    device = torch.device("cpu")
    model = task.build_model()
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    batch = torch.randn(cfg.batch_size, 3, 32, 32), torch.randint(0, 10, (cfg.batch_size,))

    def train_step(_: object) -> None:
        with autocast_for(device, cfg.amp):
            loss = torch.nn.functional.cross_entropy(model(batch[0]).float(), batch[1])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    train_step(None)  # warm-up: Adam's state, the first-call kernel setup
    steps = [None] * args.train_steps
    references = {
        f"Adam.step() (vision model, {n_params / 1e6:.2f}M params)": (lambda: lambda _: opt.step(), steps),
        f"train step (fwd+bwd+Adam, batch {cfg.batch_size}, amp {cfg.amp})": (lambda: train_step, steps),
    }

    print("step_cost: microseconds per scheduler step, next to ReduceLROnPlateau and one optimizer step")
    print(
        f"stream: {args.length} measurements per repeat, probe sizes {' '.join(map(str, sorted(args.sizes)))}; "
        f"{args.repeats} interleaved repeat(s), median; knobs: params.yaml schedules.adaptive / schedules.plateau"
    )
    print(machine())
    samples: dict[str, list[float]] = {name: [] for name in {**variants, **references}}
    for _ in range(args.repeats):
        for name, (make, inputs) in {**variants, **references}.items():
            samples[name].append(time_calls(make, inputs))
    us = {name: median(v) for name, v in samples.items()}
    plateau = us["ReduceLROnPlateau.step(float)"]
    adam, train = (us[name] for name in references)

    rows = []
    for name in variants:
        rows.append(
            [
                name,
                f"{us[name]:.1f}",
                f"{min(samples[name]):.1f}",
                f"{us[name] / plateau:.2f}",
                f"{100 * us[name] / adam:.3f}",
                f"{100 * us[name] / train:.4f}",
            ]
        )
    for name in references:
        rows.append(
            [
                name,
                f"{us[name]:.1f}",
                f"{min(samples[name]):.1f}",
                f"{us[name] / plateau:.1f}",
                f"{100 * us[name] / adam:.1f}",
                f"{100 * us[name] / train:.1f}",
            ]
        )
    print()
    print(table(["call", "us/call", "min", "x plateau", "% Adam step", "% train step"], rows))
    big = max(args.sizes)
    print()
    print(
        f"ratio AdaptiveLR.step(float) / ReduceLROnPlateau.step(float): {us['AdaptiveLR.step(float)'] / plateau:.2f}x"
    )
    ours = us[f"AdaptiveLR.step(list of {big})"]
    print(f"ratio AdaptiveLR.step(list of {big}) / ReduceLROnPlateau.step(float): {ours / plateau:.2f}x")
    print(f"ratio AdaptiveLR.step(list of {big}) / Adam.step(): {ours / adam:.4f}x")
    print(f"ratio AdaptiveLR.step(list of {big}) / train step: {us[f'AdaptiveLR.step(list of {big})'] / train:.5f}x")


if __name__ == "__main__":
    main()
