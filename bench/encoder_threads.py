"""The encoder as an encode worker runs it: micro-batches on pool threads sharing one model copy,
each thread on one intra-op thread, at several encoder sub-batch sizes.

    .venv/bin/python bench/encoder_threads.py [--questions 2000] [--runs 3] [--threads 1,2]
        [--encode-batch-sizes 16,32,64] [--micro-batch 64] [--json PATH]

The questions are cut into the producer's micro-batches (sorted by word count, as
`tasks.producer.dispatch` sends them) and the micro-batches are shared out over T Python threads
that call one `TeacherEncoder` at once. Prints questions/s per (threads, sub-batch) and the
speed-up of T threads over one at the same sub-batch size.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import replace

import common


def encode_on_threads(encoder, batches: list[list[str]], threads: int) -> float:  # TeacherEncoder
    """Questions/s of `threads` Python threads encoding `batches` (dealt out round-robin) on one encoder."""
    from pipeline import set_threads

    def work(mine: list[list[str]]) -> None:
        set_threads(1, search=False)  # per thread, as each worker pool thread does before its first task
        for batch in mine:
            encoder.encode(batch)

    workers = [threading.Thread(target=work, args=(batches[i::threads],)) for i in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(map(len, batches)) / (time.perf_counter() - started)


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--threads", default="1,2", help="comma-separated numbers of pool threads to try")
    p.add_argument("--encode-batch-sizes", default="16,32,64", help="comma-separated encoder sub-batch sizes to try")
    p.add_argument("--micro-batch", type=int, default=64, help="questions per micro-batch (CUBEQA_MICRO_BATCH)")
    args = p.parse_args()
    from pipeline import TeacherEncoder
    from tasks.producer import WORDS

    texts = sorted(common.questions(args.data, args.questions), key=lambda text: len(WORDS.findall(text)))
    batches = [texts[i : i + args.micro_batch] for i in range(0, len(texts), args.micro_batch)]
    encoder = TeacherEncoder()
    encode_on_threads(encoder, batches[:2], 1)  # warm-up: first calls allocate
    grid = [(threads, size) for size in common.sizes(args.encode_batch_sizes) for threads in common.sizes(args.threads)]
    runs: dict[tuple[int, int], list[float]] = {config: [] for config in grid}
    for _ in range(args.runs):
        for threads, size in grid:  # interleaved, so drift hits every configuration alike
            encoder.config = replace(encoder.config, batch_size=size)
            runs[(threads, size)].append(encode_on_threads(encoder, batches, threads))
    figures = {f"{threads} threads, sub-batch {size}": common.spread(values) for (threads, size), values in runs.items()}
    one = {size: statistics.median(values) for (threads, size), values in runs.items() if threads == 1}
    speedup = {
        f"{threads} threads, sub-batch {size}": statistics.median(values) / one[size]
        for (threads, size), values in runs.items()
        if size in one
    }
    common.table(
        f"encoder on pool threads, {len(texts)} questions in micro-batches of {args.micro_batch}, {args.runs} runs (questions/s)",
        ["configuration", "median [min-max]", "vs 1 thread"],
        [[name, common.band(figure), speedup.get(name, "")] for name, figure in figures.items()],
    )
    common.write_json(args.json, {"questions": len(texts), "runs": args.runs, "micro_batch": args.micro_batch, "configurations": figures, "vs_one_thread": speedup})


if __name__ == "__main__":
    main()
