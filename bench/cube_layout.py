"""Times one forward+backward of the lattice update in two layouts, to justify the channels-last choice.

    .venv/bin/python bench/cube_layout.py [--batch 256] [--size 8,8,4] [--channels 16] [--steps 4] [--repeats 5]

Prints the median seconds per forward+backward of T update steps for:
  conv3d  — (B, C, X, Y, Z), a fixed depthwise conv3d neighbour gather + 1×1×1 conv cell net;
  shifts  — (B, X, Y, Z, C), padded slices + nn.Linear cell net (what pipeline/cube.py does).
Both compute the same function (see tests/unit/test_cube.py for the reference check of the second).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from pipeline.cube import DIRECTIONS, SLOTS, CellNet, Perceive


def conv_kernel(channels: int) -> torch.Tensor:
    kernel = torch.zeros(SLOTS, 3, 3, 3)
    kernel[0, 1, 1, 1] = 1.0
    for slot, (dx, dy, dz) in enumerate(DIRECTIONS, start=1):
        kernel[slot, 1 + dx, 1 + dy, 1 + dz] = 1.0
    return kernel.repeat(channels, 1, 1, 1).unsqueeze(1)  # (7C, 1, 3, 3, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", default="8,8,4")
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size = tuple(int(s) for s in args.size.split(","))
    c, h = args.channels, args.hidden

    kernel = conv_kernel(c)
    conv_in, conv_out = torch.nn.Conv3d(SLOTS * c, h, 1), torch.nn.Conv3d(h, c, 1)
    perceive, cell = Perceive("walls"), CellNet(c, h)

    def conv_step(state: torch.Tensor) -> torch.Tensor:
        gathered = F.conv3d(F.pad(state, (1,) * 6), kernel, groups=c)
        return conv_out(F.gelu(conv_in(gathered)))

    def shift_step(state: torch.Tensor) -> torch.Tensor:
        return cell(perceive(state))

    layouts = {"conv3d": (conv_step, (args.batch, c, *size)), "shifts": (shift_step, (args.batch, *size, c))}
    print(f"batch {args.batch}, lattice {size}, C={c}, H={h}, T={args.steps}, {args.threads} threads; median of {args.repeats}")
    medians = {}
    for name, (step, shape) in layouts.items():
        times = []
        for repeat in range(args.repeats + 1):
            state = torch.randn(*shape, requires_grad=True)
            started = time.perf_counter()
            out = state
            for _ in range(args.steps):
                out = out + step(out)
            out.sum().backward()
            if repeat:  # the first run warms up
                times.append(time.perf_counter() - started)
        medians[name] = statistics.median(times)
        print(f"{name:7} {medians[name]:.3f} s  (min {min(times):.3f}, max {max(times):.3f})")
    print(f"ratio conv3d / shifts: {medians['conv3d'] / medians['shifts']:.2f}")


if __name__ == "__main__":
    main()
