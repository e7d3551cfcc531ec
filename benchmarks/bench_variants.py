"""Forward time of each filter type (implicit Hyena, H3, modal) at the same size: batch 1, width 256, 4 layers,
vocabulary 1000, ``logits_to_keep=1``, no grad (``--backward``: a training step's forward + backward of the LM
loss); the median of 3 calls after one warm-up. Prints one JSON line per (filter type, length).

    python benchmarks/bench_variants.py [--types implicit,h3,modal] [--lengths 2048,8192,32768] [--backward]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from hyena_hf.benchmarks.models import bench_hyena
from hyena_hf.benchmarks.timing import cpu_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", default="implicit,h3,modal")
    parser.add_argument("--lengths", default="2048,8192,32768")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backward", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for filter_type in args.types.split(","):
        for length in (int(x) for x in args.lengths.split(",")):
            torch.manual_seed(0)
            model = bench_hyena(256, 4, length, filter_type=filter_type, vocab=1000).train(args.backward)
            ids = torch.randint(0, 1000, (1, length))

            def step():
                if args.backward:
                    model(ids, labels=ids, use_cache=False).loss.backward()
                else:
                    with torch.no_grad():
                        model(ids, logits_to_keep=1, use_cache=False)

            step()
            times = []
            for _ in range(3):
                start = time.perf_counter()
                step()
                times.append(time.perf_counter() - start)
            row = {"filter_type": filter_type, "length": length, "backward": args.backward}
            row |= {"seconds": statistics.median(times), "cpu": cpu_model(), "threads": args.threads}
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
