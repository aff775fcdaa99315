"""Wall time of each pruning-at-initialization method's scoring and selection, and the same against one
dense training step of the model, measured in the same process.

For every method in ``--methods`` the method's own Pruner (built from its YAML with the zoo's settings)
prunes a freshly initialized model to ``--sparsity`` on one batch of ``--batch`` MNIST-shaped random
images, as it does on the first training step (SynFlow: its 100 rounds); repeated ``--repeats`` times,
interleaved, median and range reported. The training step is SGD with momentum on the same batch.
Usage::

    python benchmarks/scoring_time.py [--model lenet300|lenet5] [--repeats 7] [--out FILE]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import save_result  # noqa: E402

from sparse_lab.app import CONFIG_DIR  # noqa: E402


class _Trainer:
    global_step = 0


def build(model: str, method: str, sparsity: float, seed: int) -> tuple[torch.nn.Module, object]:
    """The zoo's model (seeded) and the method's Pruner callback, set up on it (None for a dense method)."""
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[
            "experiment=sparse_zoo_mnist", f"model={model}", f"method={method}", f"sparsity={sparsity}", f"seed={seed}",
            "output_dir=/tmp/sparse_lab_scoring_time",
        ])
    torch.manual_seed(seed)
    net = instantiate(cfg.model, input_shape=(1, 28, 28), num_classes=10)
    if "pruner" not in cfg.method.callbacks:
        return net, None
    pruner = instantiate(cfg.method.callbacks.pruner)

    class _Module:
        model = net

    pruner.setup(None, _Module, "fit")
    return net, pruner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lenet300")
    parser.add_argument("--methods", default="snip,grasp,synflow,random,prune_at_init")
    parser.add_argument("--sparsity", type=float, default=0.98)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=None, help="default: benchmarks/results/scoring_time_<model>.json")
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    batch = (torch.randn(args.batch, 1, 28, 28, generator=generator), torch.arange(args.batch) % 10)
    methods = args.methods.split(",")
    seconds: dict[str, list[float]] = {m: [] for m in [*methods, "train_step"]}
    for r in range(args.repeats):
        for method in methods:
            _, pruner = build(args.model, method, args.sparsity, seed=r)
            t0 = time.perf_counter()
            pruner.prune_to(args.sparsity, _Trainer(), batch)
            seconds[method].append(time.perf_counter() - t0)
            assert abs(pruner.masks.kept / pruner.masks.total - (1 - args.sparsity)) < 1e-3
        net, _ = build(args.model, "full", args.sparsity, seed=r)
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        for _ in range(3):  # warm-up steps, then one timed
            optimizer.zero_grad()
            F.cross_entropy(net(batch[0]), batch[1]).backward()
            optimizer.step()
        t0 = time.perf_counter()
        optimizer.zero_grad()
        F.cross_entropy(net(batch[0]), batch[1]).backward()
        optimizer.step()
        seconds["train_step"].append(time.perf_counter() - t0)
        print(f"repeat {r}: " + ", ".join(f"{k} {v[-1] * 1e3:.1f} ms" for k, v in seconds.items()), flush=True)
    median = {k: statistics.median(v) for k, v in seconds.items()}
    result = {
        "benchmark": "scoring_time",
        "model": args.model,
        "sparsity": args.sparsity,
        "batch": args.batch,
        "repeats": args.repeats,
        "seconds": seconds,
        "median_s": median,
        "range_s": {k: [min(v), max(v)] for k, v in seconds.items()},
        "over_train_step": {m: median[m] / median["train_step"] for m in methods},
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    out = args.out or f"benchmarks/results/scoring_time_{args.model}.json"
    save_result(result, out, ("median_s", "over_train_step"))


if __name__ == "__main__":
    main()
