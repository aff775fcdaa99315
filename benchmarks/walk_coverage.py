"""How much of an MLP a random walk visits, and the arithmetic bound that sets on the row- and
edge-sparse backwards (no timing: multiply-adds counted from the visited rows).

For ``rw_target`` walks of ``--paths`` paths on the MLP 784-``--hidden``-10, on batches of real
training labels: the share of each layer's rows (output units) visited and the distinct edges, with
the weights at initialization and after ``--train-batches`` steps of ``rw_target
rw_backward=edges`` through sparse_lab. From them, multiply-adds per sample of one training step:

- ``full``: forward, every weight gradient, the input gradients of every layer but the first;
- ``rows`` (``rw_backward=rows``): the dense forward; the weight gradients of the visited rows (rows x
  fan-in); the input gradients through the visited rows only, the second layer's into the first
  layer's visited rows only; a layer with at least ``GATHER_BELOW`` of its rows visited runs dense
  products, as the code does;
- ``edges`` (``rw_backward=edges``): the dense forward; a weight gradient per distinct edge; the
  full input gradients, the second layer's into the first layer's visited rows only.

``full / rows`` and ``full / edges`` are upper bounds on the step-time ratios: the optimizer step
over every weight, the walk and the density recording come on top.

Usage::

    python benchmarks/walk_coverage.py [--hidden 2048 2048] [--paths 1000] [--out FILE]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from hydra.utils import instantiate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from epoch_time import default_data, framework_config  # noqa: E402
from results_io import save_result  # noqa: E402

from sparse_lab.app import train  # noqa: E402
from sparse_lab.export import model_state  # noqa: E402
from sparse_lab.models import MLP  # noqa: E402
from sparse_lab.sparsity import RandomWalkMask  # noqa: E402
from sparse_lab.sparsity.random_walk import linear_chain  # noqa: E402
from sparse_lab.sparsity.row_sparse import GATHER_BELOW  # noqa: E402


def coverage(model: MLP, labels: torch.Tensor, paths: int, batch: int, batches: int) -> dict:
    """Mean share of visited rows and mean distinct edges per layer over ``batches`` batches of labels."""
    linears = linear_chain(model)
    walk = RandomWalkMask(paths, start="target")
    generator = torch.Generator().manual_seed(0)
    shares: list[list[float]] = [[] for _ in linears]
    edges: list[list[int]] = [[] for _ in linears]
    for b in range(batches):
        rows, cols = walk.edges(linears, labels[b * batch : (b + 1) * batch], generator)
        for i, lin in enumerate(linears):
            shares[i].append(rows[i].unique().numel() / lin.out_features)
            edges[i].append((rows[i] * lin.in_features + cols[i]).unique().numel())
    return {"visited_rows": [statistics.fmean(s) for s in shares], "distinct_edges": [statistics.fmean(e) for e in edges]}


def multiply_adds(widths: list[int], visited: list[float], distinct_edges: list[float]) -> dict[str, float]:
    """Multiply-adds per sample of a training step: full, rows, edges (see the module docstring)."""
    layers = [(a, b) for a, b in zip(widths[:-1], widths[1:])]  # (fan-in, fan-out)
    forward = sum(a * b for a, b in layers)
    full = 2 * forward + sum(a * b for a, b in layers[1:])
    rows = edges = forward
    for i, (a, b) in enumerate(layers):
        r = visited[i] if visited[i] < GATHER_BELOW else 1.0  # above it the code runs dense products
        rows += r * a * b
        edges += distinct_edges[i]  # one multiply-add a sample per distinct edge
        if i == 0:
            continue
        columns = visited[0] if (i == 1 and visited[0] < GATHER_BELOW) else 1.0  # the first layer's visited rows
        rows += r * columns * a * b
        edges += columns * a * b
    return {"forward": float(forward), "full": float(full), "rows": rows, "edges": edges}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, nargs="+", default=[2048, 2048])
    parser.add_argument("--paths", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--batches", type=int, default=50, help="batches of labels whose walks are counted")
    parser.add_argument("--train-batches", type=int, default=200)
    parser.add_argument("--data", choices=["mnist", "synthetic"], default=None, help="default: mnist if present")
    parser.add_argument("--out", default="benchmarks/results/walk_coverage.json")
    args = parser.parse_args()
    data = args.data or default_data()
    torch.manual_seed(0)
    hidden = "[" + ",".join(map(str, args.hidden)) + "]"
    result: dict = {"data": data, "hidden": args.hidden, "paths": args.paths, "batch": args.batch, "batches": args.batches,
                    "train_batches": args.train_batches, "gather_below": GATHER_BELOW, "python": platform.python_version(),
                    "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        dm = instantiate(framework_config(data, f"{tmp}/data", []).data)
        dm.prepare_data()
        dm.setup("fit")
        labels = dm.splits["train"][1][: args.batch * args.batches]
        overrides = ["method=rw_target", f"paths={args.paths}", "rw_backward=edges", f"model.hidden={hidden}",
                     f"batch_size={args.batch}", f"+trainer.limit_train_batches={args.train_batches}",
                     "+trainer.limit_test_batches=1", "callbacks.progress_bar=null", "+trainer.enable_progress_bar=false"]
        cfg = framework_config(data, f"{tmp}/run", overrides)
        train(cfg)
        trained = MLP((1, 28, 28), 10, args.hidden)
        state = torch.load(Path(cfg.output_dir) / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
        trained.load_state_dict(model_state(state))
        torch.manual_seed(0)
        models = {"init": MLP((1, 28, 28), 10, args.hidden), "trained": trained}
        widths = [784, *args.hidden, 10]
        for name, model in models.items():
            c = coverage(model, labels, args.paths, args.batch, args.batches)
            macs = multiply_adds(widths, c["visited_rows"], c["distinct_edges"])
            c["multiply_adds_per_sample"] = macs
            c["bound_full_over_rows"] = macs["full"] / macs["rows"]
            c["bound_full_over_edges"] = macs["full"] / macs["edges"]
            result[name] = c
            print(f"{name}: visited rows {[round(v, 3) for v in c['visited_rows']]}, distinct edges "
                  f"{[round(e) for e in c['distinct_edges']]}; multiply-adds full / rows {c['bound_full_over_rows']:.2f}, "
                  f"full / edges {c['bound_full_over_edges']:.2f} (forward {macs['forward'] / macs['full']:.0%} of full's)",
                  flush=True)
    save_result(result, args.out, summary=["data", "hidden", "paths"])


if __name__ == "__main__":
    main()
