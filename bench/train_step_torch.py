"""PyTorch CPU reference for bench/train-step: plain-SGD steps of the same MLP (784-128-10, ReLU,
mean softmax cross-entropy), timed per step.

Serves timing requests so the caller can interleave them with its own measurements (the machine
may be shared): prints one JSON line {"ready": ..., "version", "threads", "blas"} and then, for each
stdin line "BATCH STEPS", runs STEPS steps at that batch size and prints {"ms": ms_per_step}.

Usage: /usr/bin/python3 bench/train_step_torch.py --threads 1
"""
import argparse
import json
import sys
import time

try:
    import torch
except ImportError as e:  # the caller reports the skip
    print(json.dumps({"skipped": f"torch not importable: {e}"}), flush=True)
    sys.exit(0)


def loaded_blas() -> str:
    """The BLAS library actually mapped into this process (Debian's torch uses the system libblas.so.3,
    whose speed depends on which implementation the alternatives system points at)."""
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "blas" in line.lower() and "/" in line}
        return ", ".join(sorted(libs)) or "unknown"
    except OSError:
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sizes", default="784,128,10")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sizes = [int(s) for s in args.sizes.split(",")]
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    pools = {}

    def step(pool, i: int) -> None:
        x, y = pool[i % len(pool)]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        loss.item()  # the trainer reads every loss

    step([(torch.rand(8, sizes[0]), torch.randint(0, sizes[-1], (8,)))], 0)
    print(json.dumps({"ready": True, "version": torch.__version__, "threads": torch.get_num_threads(), "blas": loaded_blas()}), flush=True)
    for line in sys.stdin:
        b, steps = (int(v) for v in line.split())
        if b not in pools:
            # A pool of distinct batches, like a real epoch, rather than one batch over and over.
            pools[b] = [(torch.rand(b, sizes[0]), torch.randint(0, sizes[-1], (b,))) for _ in range(64)]
            for i in range(100):
                step(pools[b], i)
        t = time.perf_counter()
        for i in range(steps):
            step(pools[b], i)
        print(json.dumps({"ms": (time.perf_counter() - t) * 1000 / steps}), flush=True)


if __name__ == "__main__":
    main()
