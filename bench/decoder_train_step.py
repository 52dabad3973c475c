"""Seconds per training step of the warm-started generative decoder, in fp32 and in bf16 autocast.

    .venv/bin/python bench/decoder_train_step.py [--steps 8] [--runs 2] [--batch-size 64] [--json PATH]

What `cubeqa train-decoder --precision auto` decides between: bf16 pays on CPUs with AMX and
costs on CPUs with only AVX-512 BF16. Each run takes `--steps` optimiser steps on batches of training
answers (the shipped decoder's shape, its teacher's weights) per precision, interleaved; the figure
per precision is the median step time after the first two steps of each run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import common


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--data", type=Path, default=common.DATA)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    import torch

    from pipeline import GenerativeConfig, TeacherEncoder, load_pairs
    from pipeline.decoders.generative import build_net
    from pipeline.hardware import cpu_has_amx
    from pipeline.training.decoder_trainer import (
        OutputVocab,
        autocast,
        pad,
        resolve_precision,
        sequence_loss,
        tokenize,
    )

    torch.set_num_threads(2)
    encoder = TeacherEncoder()
    texts = [pair.answer for pair in load_pairs(args.data)[: args.steps * args.batch_size]]
    vectors = torch.as_tensor(encoder.encode(texts).vectors)
    net = build_net(GenerativeConfig(), len(encoder.tokenizer), encoder.model_dir).train()
    sequences = tokenize(encoder.tokenizer, texts, net.config.max_tokens)
    vocab = OutputVocab.of(sequences, len(encoder.tokenizer))
    optimizer = torch.optim.AdamW([w for w in net.parameters() if w.requires_grad], lr=1e-5)
    device = torch.device("cpu")
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(args.runs):
        for precision, kept in times.items():
            for step in range(args.steps):
                rows = slice(step * args.batch_size, (step + 1) * args.batch_size)
                started = time.perf_counter()
                with autocast(device, precision):
                    loss = sequence_loss(net, vectors[rows], pad(sequences[rows]), vocab)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if step >= 2:
                    kept.append(time.perf_counter() - started)
    figures = {precision: statistics.median(values) for precision, values in times.items()}
    print(f"CPU has AMX: {cpu_has_amx()}; --precision auto resolves to {resolve_precision('auto', device)}")
    for precision, seconds in figures.items():
        print(f"{precision}: {seconds:.2f} s per step of {args.batch_size} sentences")
    print(f"bf16 / fp32: {figures['bf16'] / figures['fp32']:.2f}")
    common.write_json(args.json, {"amx": cpu_has_amx(), "auto": resolve_precision("auto", device), "seconds_per_step": figures, "batch_size": args.batch_size})


if __name__ == "__main__":
    main()
