"""PyTorch CPU reference for bench/train-step: one plain-SGD step of the same MLP (784-128-10,
ReLU, mean softmax cross-entropy), timed per step. Prints one JSON line: {"torch": {...}}.

Usage: /usr/bin/python3 bench/train_step_torch.py --threads 1 --batches 32,128 --steps 2000
"""
import argparse
import json
import sys
import time

try:
    import torch
except ImportError as e:  # the caller reports the skip
    print(json.dumps({"skipped": f"torch not importable: {e}"}))
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
    ap.add_argument("--batches", default="32,128")
    ap.add_argument("--steps", type=int, default=2000)
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
    result = {}
    for b in (int(s) for s in args.batches.split(",")):
        # A pool of distinct batches, like a real epoch, rather than one batch over and over.
        pool = [(torch.rand(b, sizes[0]), torch.randint(0, sizes[-1], (b,))) for _ in range(64)]

        def step(i: int) -> None:
            x, y = pool[i % len(pool)]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            loss.item()  # the trainer reads every loss

        for i in range(200):
            step(i)
        # Median of 5 timed chunks: the machine may be shared.
        per = max(1, args.steps // 5)
        chunks = []
        for _ in range(5):
            t = time.perf_counter()
            for i in range(per):
                step(i)
            chunks.append((time.perf_counter() - t) * 1000 / per)
        result[str(b)] = sorted(chunks)[len(chunks) // 2]
    print(json.dumps({"torch": result, "version": torch.__version__, "threads": torch.get_num_threads(), "blas": loaded_blas()}))


if __name__ == "__main__":
    main()
