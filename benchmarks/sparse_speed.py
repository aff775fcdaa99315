"""Sparse kernels against dense ones, in one process: inference, training steps, crossover density, convolutions.

1. Inference latency of a pruned LeNet-300-100 (784-300-100-10, 95% of its Linear weights zero) at
   batch 1, 2, 4, 32, 128 and 1024, with 1 and 2 threads: torch's dense module and a fused dense
   kernel (the whole dense MLP in one numba call) against the exported model (``sparse_lab.export``:
   one fused compiled call, :class:`SparseChain`, which skips black pixels) and against the model with
   :class:`SparseLinear` layers. Weights of a pruned MNIST run (trained here unless ``--run-dir``
   names one; ``progressive`` to exactly 95% at the second epoch) on real test images, and random
   weights with random 95% masks on random inputs.
2. Training step time, random-walk backward (through sparse_lab, one epoch limited to a number of
   batches; a step's time is the mean from one batch's start to the next's from the 11th step on, and
   the epoch's training time / steps, which includes what runs once, is saved beside it): ``full``
   against ``rw_target paths=1000`` with ``rw_backward`` dense, edges and rows, on the 784-256-128-10
   MLP and the wide 784-2048-2048-10; with ``--walk-paths``, also ``rw_random`` on pixels in [0, 1]
   (``experiment=rw_mnist_rows``) at those path counts on the first MLP.
3. Training step time of LeNet-300-100 at 98% sparsity (a plain loop: forward, loss, backward, fused
   Adam): the masked dense model (weights times masks, as ``torch.nn.utils.prune`` runs) against
   :class:`SparseLinear` layers over the same masks; and through sparse_lab, ``method=snip`` at 95
   and 98% and ``method=rigl`` at 98% with ``sparse_kernels`` false and true.
4. Crossover: a 300x784 layer's forward (batch 1, 8, 16, 32, 128) and forward+backward (batch 16, 32, 128), sparse
   kernels against dense, over densities, and the fused chain at batch 1 (scatter kernel, random inputs)
   against torch's dense module; the largest density where sparse is faster.
5. Convolutions: LeNet-5-Caffe's two convolutions at batch 128, torch's dense convolution against the
   convolution lowered to a product (unfold, feature-major patches, the CSR kernel at 98 and 99%
   sparsity, back to NCHW) and against the lowering's copies alone; the convolutions' share of the
   dense model's forward and training step.

The compiled kernels run on one thread; torch runs ``--threads`` threads (default 1: on this shared
2-core machine, a second torch thread competing with other processes made torch's dense products
up to 50 times slower). Every comparison interleaves its variants ``--rounds`` times; medians, min/max spread and ratios of
medians are printed and saved as JSON. Usage::

    python benchmarks/sparse_speed.py [--rounds 5] [--threads 1] [--data mnist|synthetic] [--run-dir RUN] [--quick]
        [--skip PART ...] [--walk-paths N ...] [--out FILE]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from epoch_time import default_data, framework_config, run_framework  # noqa: E402
from results_io import save_result  # noqa: E402
from step_timer import steady_step_ms, timer_overrides  # noqa: E402

from sparse_lab.app import train  # noqa: E402
from sparse_lab.export import export_run, load_sparse_model, model_state  # noqa: E402
from sparse_lab.models import MLP  # noqa: E402
from sparse_lab.sparsity.kernels import SparseChain, SparseLinear, sparsify_linears  # noqa: E402

LENET = (300, 100)
QUIET = ["callbacks.progress_bar=null", "+trainer.enable_progress_bar=false"]
PRUNED_RUN = [
    "method=progressive", "sparsity=0.95", "epochs=2", f"model.hidden=[{LENET[0]},{LENET[1]}]",
    "method.callbacks.pruner.schedule._target_=sparse_lab.sparsity.LinearExactSchedule",
]


def interleaved(variants: dict[str, Callable[[], object]], rounds: int, calls: int) -> dict[str, dict[str, float | list[float]]]:
    """Seconds per call of each variant: ``rounds`` rounds, each timing ``calls`` calls of every variant
    in turn (after one warm-up call each)."""
    for fn in variants.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            times[name].append((time.perf_counter() - t0) / calls)
    return {name: spread(v) for name, v in times.items()}


def spread(values: list[float]) -> dict[str, float | list[float]]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "all": values}


def ratio(timings: dict, slow: str, fast: str) -> float:
    """How many times faster ``fast`` is than ``slow`` (ratio of medians)."""
    return timings[slow]["median"] / timings[fast]["median"]


def pruned_lenet(run_dir: str | None, data: str, quick: bool, tmp: str) -> tuple[MLP, nn.Module, torch.Tensor]:
    """(masked dense MLP, its exported sparse model, test inputs) from a pruned run, trained here when
    ``run_dir`` is None."""
    if run_dir is None:
        extra = ["+trainer.limit_train_batches=3", "+trainer.limit_test_batches=1"] if quick else []
        cfg = framework_config(data, f"{tmp}/pruned", PRUNED_RUN + QUIET + extra)
        train(cfg)
        run_dir = cfg.output_dir
    dense = MLP((1, 28, 28), 10, LENET)
    dense.load_state_dict(model_state(torch.load(Path(run_dir) / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]))
    from hydra.utils import instantiate

    dm = instantiate(framework_config(data, f"{tmp}/data", []).data)
    dm.prepare_data()
    dm.setup("test")
    images = dm.splits["test"][0][:1024]
    inputs = ((images.float() / 255 - dm.mean[0]) / dm.std[0]).reshape(len(images), 1, 28, 28)
    return dense.eval(), load_sparse_model(export_run(run_dir, f"{tmp}/sparse_model.pt")), inputs


def random_masks(model: nn.Module, density: float, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {f"{name}.weight": torch.rand(m.weight.shape, generator=gen) < density
            for name, m in model.named_modules() if isinstance(m, nn.Linear)}


def random_lenet(density: float) -> tuple[MLP, nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    dense = MLP((1, 28, 28), 10, LENET)
    with torch.no_grad():
        for name, mask in random_masks(dense, density).items():
            dense.get_parameter(name).mul_(mask)
    return dense.eval(), SparseChain.from_linears(dense.linears).eval(), torch.randn(1024, 1, 28, 28)


def fused_dense(model: MLP) -> Callable[[torch.Tensor], torch.Tensor]:
    """The 3-layer MLP's dense forward as one compiled call (numba calling BLAS for each layer's
    product, no Python or torch dispatch between layers): the "fused dense kernel" the sparse
    kernels are also compared with."""
    import numpy as np
    from numba import njit

    @njit(cache=True, nogil=True)
    def chain(x, w1, b1, w2, b2, w3, b3):  # noqa: ANN001, ANN202
        zero = np.float32(0.0)
        h = np.maximum(np.dot(x, w1.T) + b1, zero)
        h = np.maximum(np.dot(h, w2.T) + b2, zero)
        return np.dot(h, w3.T) + b3

    if len(model.linears) != 3:
        raise ValueError("the fused dense kernel is written for three Linear layers")
    arrays = [t.detach().numpy() for lin in model.linears for t in (lin.weight, lin.bias)]
    return lambda x: torch.from_numpy(chain(x.reshape(x.shape[0], -1).numpy(), *arrays))


def inference(dense: MLP, sparse: nn.Module, inputs: torch.Tensor, rounds: int, quick: bool) -> dict:
    """Per batch size and thread count: seconds per forward of each model, and the speed-ups."""
    dense_fused = fused_dense(dense)
    layers = copy.deepcopy(dense)
    sparsify_linears(layers, {f"{n}.weight": m.weight != 0 for n, m in layers.named_modules() if isinstance(m, nn.Linear)})
    out = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for batch in (1, 2, 4, 32, 128, 1024):
            x = inputs[:batch].contiguous()
            calls = max(2, (100 if quick else 2000) // batch)
            with torch.no_grad():
                assert torch.allclose(sparse(x), dense(x), atol=1e-4)
                assert torch.allclose(dense_fused(x), dense(x), atol=1e-4)
                t = interleaved({"torch_dense": lambda: dense(x), "fused_dense": lambda: dense_fused(x),
                                 "sparse_fused": lambda: sparse(x), "sparse_layers": lambda: layers(x)}, rounds, calls)
            t["speedup_fused_vs_dense"] = ratio(t, "torch_dense", "sparse_fused")
            t["speedup_fused_vs_fused_dense"] = ratio(t, "fused_dense", "sparse_fused")
            t["speedup_layers_vs_dense"] = ratio(t, "torch_dense", "sparse_layers")
            out[f"threads{threads}_batch{batch}"] = t
            print(f"  inference torch threads={threads} batch={batch}: dense {t['torch_dense']['median'] * 1e6:.1f} us, "
                  f"fused dense {t['fused_dense']['median'] * 1e6:.1f} us, "
                  f"fused sparse {t['sparse_fused']['median'] * 1e6:.1f} us ({t['speedup_fused_vs_dense']:.1f}x; "
                  f"{t['speedup_fused_vs_fused_dense']:.1f}x fused dense), "
                  f"layers {t['sparse_layers']['median'] * 1e6:.1f} us ({t['speedup_layers_vs_dense']:.1f}x)", flush=True)
    return out


def timed_step_ms(data: str, out_dir: str, overrides: list[str], epoch_ms: list[float], quick: bool) -> float:
    """One epoch of a sparse_lab run: its mean step time in ms from the 11th step on (without what
    happens once: scoring at initialization, first calls of compiled kernels); appends the epoch's
    training time / steps, which includes those, to ``epoch_ms``."""
    cfg = framework_config(data, out_dir, [*QUIET, "+trainer.limit_test_batches=1", *overrides,
                                           *timer_overrides(f"{out_dir}/step_times.json")])
    epoch_s = run_framework(cfg)[0]
    steps = json.loads((Path(cfg.output_dir) / "metrics.json").read_text())["epochs"][0]["step"]
    epoch_ms.append(epoch_s / steps * 1e3)
    return steady_step_ms(f"{out_dir}/step_times.json", skip=0 if quick else 10)


def walk_steps(data: str, rounds: int, quick: bool, tmp: str, paths: Sequence[int] = ()) -> dict:
    """ms per training step through sparse_lab: full against rw_target paths=1000 with each of the
    three backwards (``rw_<backward>``) and, on the 784-256-128-10 MLP, against the settings of
    ``experiment=rw_mnist_rows`` (rw_random, pixels in [0, 1]) at the other ``paths``
    (``rw_random_<backward>_paths<N>``)."""
    out = {}
    nets = (("mlp_256_128", "[256,128]", 150), ("wide_2048_2048", "[2048,2048]", 40))
    for label, hidden, batches in nets[:1] if quick else nets:
        batches = 3 if quick else batches
        counts = [n for n in paths if n != 1000] if label == "mlp_256_128" else []
        variants = {"full": ["method=full"]} | {
            f"rw_{b}": ["method=rw_target", "paths=1000", f"rw_backward={b}"] for b in ("dense", "edges", "rows")
        } | {
            f"rw_random_{b}_paths{n}": ["method=rw_random", f"paths={n}", f"rw_backward={b}", "data.standardize=false"]
            for n in counts for b in ("dense", "edges", "rows")
        }
        if quick:  # the smoke runs the new backwards only
            variants = {name: variants[name] for name in ("rw_edges", "rw_rows")}
        ms: dict[str, list[float]] = {name: [] for name in variants}
        epoch_ms: dict[str, list[float]] = {name: [] for name in variants}
        for r in range(rounds):
            for name, overrides in variants.items():
                ms[name].append(timed_step_ms(data, f"{tmp}/{label}_{name}_{r}", [
                    f"model.hidden={hidden}", f"+trainer.limit_train_batches={batches}", *overrides], epoch_ms[name], quick))
        t = {name: spread(v) for name, v in ms.items()}
        t["epoch_time_per_step_ms"] = {name: spread(v) for name, v in epoch_ms.items()}
        if "full" in t:
            t.update({f"{name}_over_full": t[name]["median"] / t["full"]["median"] for name in variants})
        out[label] = t
        print(f"  {label}: " + ", ".join(f"{n} {t[n]['median']:.2f} ms" for n in variants), flush=True)
    return out


def masked_training(inputs: torch.Tensor, labels: torch.Tensor, density: float, rounds: int, quick: bool) -> dict:
    """ms per plain training step of LeNet-300-100 at ``density``: masked dense against SparseLinear."""
    torch.manual_seed(0)
    masked = MLP((1, 28, 28), 10, LENET)
    masks = random_masks(masked, density)
    sparse = copy.deepcopy(masked)
    sparsify_linears(sparse, masks)
    mask_of = {masked.get_parameter(name): mask.float() for name, mask in masks.items()}

    def masked_forward(x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        for i, lin in enumerate(masked.linears):  # a masked dense forward: weight * mask
            h = F.linear(h, lin.weight * mask_of[lin.weight], lin.bias)
            h = torch.relu(h) if i < len(masked.linears) - 1 else h
        return h

    def stepper(forward: Callable, model: nn.Module) -> Callable[[], None]:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
        state = {"i": 0}

        def step() -> None:
            i = state["i"] = (state["i"] + 128) % (len(inputs) - 128)
            loss = F.cross_entropy(forward(inputs[i : i + 128]), labels[i : i + 128])
            opt.zero_grad()
            loss.backward()
            opt.step()

        return step

    t = interleaved({"masked_dense": stepper(masked_forward, masked), "sparse_linear": stepper(sparse, sparse)},
                    rounds, 5 if quick else 60)
    t["speedup"] = ratio(t, "masked_dense", "sparse_linear")
    print(f"  training density {density}: masked dense {t['masked_dense']['median'] * 1e3:.3f} ms, "
          f"SparseLinear {t['sparse_linear']['median'] * 1e3:.3f} ms ({t['speedup']:.2f}x)", flush=True)
    return t


def flagged_training(data: str, rounds: int, quick: bool, tmp: str) -> dict:
    """ms per training step through sparse_lab: LeNet-300-100 pruned at initialization (SNIP) to 95
    and 98%, and RigL at 98% (its masks move after step 100, whose dense gradient it reads),
    ``sparse_kernels`` false against true (one epoch cut to 150 batches of 128; the mean step from
    the 11th on, and the epoch time / steps, which includes the first step's scoring)."""
    out = {}
    batches = 3 if quick else 150
    for method, sparsity in (("snip", 0.95), ("snip", 0.98), ("rigl", 0.98)):
        key = str(sparsity) if method == "snip" else f"{method}_{sparsity}"
        ms: dict[str, list[float]] = {"dense_kernels": [], "sparse_kernels": []}
        epoch_ms: dict[str, list[float]] = {name: [] for name in ms}
        for r in range(rounds):
            for name, flag in (("dense_kernels", "false"), ("sparse_kernels", "true")):
                ms[name].append(timed_step_ms(data, f"{tmp}/flag_{key}_{name}_{r}", [
                    f"method={method}", f"sparsity={sparsity}", "model=lenet300", f"sparse_kernels={flag}",
                    f"+trainer.limit_train_batches={batches}"], epoch_ms[name], quick))
        t = {name: spread(v) for name, v in ms.items()}
        t["epoch_time_per_step_ms"] = {name: spread(v) for name, v in epoch_ms.items()}
        t["speedup"] = t["dense_kernels"]["median"] / t["sparse_kernels"]["median"]
        t["speedup_epoch_time"] = t["epoch_time_per_step_ms"]["dense_kernels"]["median"] / t["epoch_time_per_step_ms"]["sparse_kernels"]["median"]
        out[key] = t
        print(f"  {method} sparsity={sparsity} through sparse_lab: dense kernels {t['dense_kernels']['median']:.2f} ms, "
              f"sparse_kernels=true {t['sparse_kernels']['median']:.2f} ms a step ({t['speedup']:.2f}x)", flush=True)
    return out


def crossover(rounds: int, quick: bool) -> dict:
    """Sparse against dense kernels for a 300x784 layer over densities: forward at batch 1, 8, 16, 32
    and 128, forward+backward at 16, 32 and 128; per case the largest density where sparse is faster."""
    densities = (0.02, 0.3) if quick else (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
    weight = torch.randn(300, 784)
    out: dict = {}
    for case, batch, backward in (("forward_b1", 1, False), ("forward_b8", 8, False), ("forward_b16", 16, False),
                                  ("forward_b32", 32, False), ("forward_b128", 128, False), ("train_b16", 16, True),
                                  ("train_b32", 32, True), ("train_b128", 128, True)):
        x = torch.randn(batch, 784, requires_grad=backward)
        rows = {}
        for d in densities:
            mask = torch.rand(300, 784) < d
            layer = SparseLinear(weight.clone(), mask, torch.zeros(300), dense_above=1.0)
            dense_w = nn.Parameter(weight * mask)

            def run(fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
                if backward:
                    return lambda: fn().sum().backward()
                return lambda: fn()

            with torch.set_grad_enabled(backward):
                t = interleaved({"dense": run(lambda: F.linear(x, dense_w * mask if backward else dense_w)),
                                 "sparse": run(lambda: layer(x))}, rounds, 3 if quick else max(20, 1000 // batch))
            rows[str(d)] = {"dense_us": t["dense"]["median"] * 1e6, "sparse_us": t["sparse"]["median"] * 1e6,
                            "speedup": ratio(t, "dense", "sparse")}
        faster = [float(d) for d, r in rows.items() if r["speedup"] > 1]
        out[case] = {"densities": rows, "sparse_faster_up_to": max(faster) if faster else None}
        print(f"  crossover {case}: " + ", ".join(f"{d}: {r['speedup']:.2f}x" for d, r in rows.items()), flush=True)
    rows = {}  # the fused chain's scatter kernel at batch 1 (random inputs: no zero to skip) against torch's module
    x = torch.randn(1, 1, 28, 28)
    for d in densities:
        dense, chain, _ = random_lenet(d)
        for layer in chain.layers:
            layer.dense_above = 1.0
        with torch.no_grad():
            t = interleaved({"dense": lambda: dense(x), "sparse": lambda: chain(x)}, rounds, 3 if quick else 500)
        rows[str(d)] = {"dense_us": t["dense"]["median"] * 1e6, "sparse_us": t["sparse"]["median"] * 1e6,
                        "speedup": ratio(t, "dense", "sparse")}
    faster = [float(d) for d, r in rows.items() if r["speedup"] > 1]
    out["chain_b1"] = {"densities": rows, "sparse_faster_up_to": max(faster) if faster else None}
    print("  crossover chain_b1: " + ", ".join(f"{d}: {r['speedup']:.2f}x" for d, r in rows.items()), flush=True)
    return out


def convolutions(rounds: int, quick: bool) -> dict:
    """Why convolutions stay dense: LeNet-5-Caffe's two convolutions at batch 128 (random weights and
    inputs), torch's dense convolution against the same convolution lowered to a sparse product
    (``F.unfold`` to patches, made feature-major, the CSR kernel of :class:`SparseLinear` at 98 and
    99% sparsity, the result back to NCHW), with the lowering's copies alone beside them; and the
    convolutions' share of the dense model's forward and training step."""
    from sparse_lab.models import LeNet5
    from sparse_lab.sparsity.kernels.sparse_linear import csr_matmul

    torch.manual_seed(0)
    model = LeNet5((1, 28, 28), 10)
    convs = [m for m in model.net if isinstance(m, nn.Conv2d)]
    x = torch.randn(128, 1, 28, 28)
    with torch.no_grad():
        layer_inputs = [x, F.max_pool2d(convs[0](x), 2)]
    calls = 3 if quick else 50
    out: dict = {}
    for name, conv, a in zip(("conv1", "conv2"), convs, layer_inputs):
        o, c, k, _ = conv.weight.shape
        rows = {}
        for density in (0.02, 0.01):
            mask = torch.rand(o, c * k * k) < density
            flat = SparseLinear(conv.weight.detach().reshape(o, -1).clone(), mask, dense_above=1.0)
            weight = (flat.weight.detach() * mask).reshape_as(conv.weight)
            bias = conv.bias.detach()
            side = a.shape[-1] - k + 1

            def patches() -> torch.Tensor:  # (c*k*k, batch * positions), feature-major
                return F.unfold(a, k).transpose(0, 1).reshape(c * k * k, -1)

            def lowered() -> torch.Tensor:
                y_t = csr_matmul(flat.csr_indptr, flat.csr_indices, flat.weight, flat.csr_positions, patches().contiguous(), o, bias)
                return y_t.view(o, a.shape[0], side, side).permute(1, 0, 2, 3).contiguous()

            with torch.no_grad():
                assert torch.allclose(lowered(), F.conv2d(a, weight, bias), atol=1e-4)
                t = interleaved({"dense_conv": lambda: F.conv2d(a, weight, bias), "lowering_copies": lambda: patches().contiguous(),
                                 "lowered_sparse": lowered}, rounds, calls)
            rows[str(density)] = {v: t[v]["median"] * 1e6 for v in ("dense_conv", "lowering_copies", "lowered_sparse")}
            rows[str(density)]["speedup"] = ratio(t, "dense_conv", "lowered_sparse")
        out[name] = rows
        print(f"  {name} {tuple(conv.weight.shape)} on {tuple(a.shape)}: " + "; ".join(
            f"density {d}: dense {r['dense_conv']:.0f} us, the lowering's copies alone {r['lowering_copies']:.0f} us, "
            f"lowered sparse {r['lowered_sparse']:.0f} us ({r['speedup']:.2f}x)" for d, r in rows.items()), flush=True)
    features = model.net[:4]

    def train(module: nn.Module) -> Callable[[], None]:
        return lambda: module(x).sum().backward()

    with torch.no_grad():
        t = interleaved({"model": lambda: model(x), "convolutions": lambda: features(x)}, rounds, calls)
    t_train = interleaved({"model": train(model), "convolutions": train(features)}, rounds, calls)
    out["share_forward"] = t["convolutions"]["median"] / t["model"]["median"]
    out["share_training"] = t_train["convolutions"]["median"] / t_train["model"]["median"]
    print(f"  convolutions and pools: {out['share_forward']:.0%} of the dense model's forward, "
          f"{out['share_training']:.0%} of its forward and backward (batch 128)", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data", choices=["mnist", "synthetic"], default=None, help="default: mnist if present")
    parser.add_argument("--run-dir", default=None, help="a pruned LeNet-300-100 run (default: train one here)")
    parser.add_argument("--quick", action="store_true", help="a smoke test: few calls, a few training batches")
    parser.add_argument("--skip", nargs="*", default=[], choices=["inference", "walk", "training", "crossover", "convolutions"])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for the training, crossover and walk parts (inference runs 1 and 2)")
    parser.add_argument("--walk-paths", type=int, nargs="*", default=[],
                        help="more path counts for the walk steps on the 784-256-128-10 MLP, as experiment=rw_mnist_rows")
    parser.add_argument("--out", default="benchmarks/results/sparse_speed.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = args.data or default_data()
    tmp = tempfile.mkdtemp(prefix="sparse_lab_sparse_speed_")
    rounds = 2 if args.quick else args.rounds
    result: dict = {"benchmark": "sparse_speed", "data": data, "rounds": rounds, "quick": args.quick, "threads": args.threads}

    if "inference" not in args.skip:
        print("inference, LeNet-300-100 at 95% sparsity, pruned run weights:", flush=True)
        dense, sparse, inputs = pruned_lenet(args.run_dir, data, args.quick, tmp)
        result["pruned_run_sparsity"] = float(sum((l.weight == 0).sum() for l in dense.linears) / sum(l.weight.numel() for l in dense.linears))
        result["inference_pruned_run"] = inference(dense, sparse, inputs, rounds, args.quick)
        print("inference, random weights and masks at 95% sparsity:", flush=True)
        result["inference_random"] = inference(*random_lenet(0.05), rounds, args.quick)
        torch.set_num_threads(args.threads)
    if "training" not in args.skip:
        torch.manual_seed(0)
        inputs, labels = torch.randn(2048, 1, 28, 28), torch.randint(0, 10, (2048,))
        print("training steps, LeNet-300-100 with fixed masks:", flush=True)
        result["masked_training"] = {str(d): masked_training(inputs, labels, d, rounds, args.quick) for d in (0.02, 0.05)}
        print("training steps through sparse_lab, sparse_kernels=false/true:", flush=True)
        result["flagged_training"] = flagged_training(data, rounds, args.quick, tmp)
    if "crossover" not in args.skip:
        print("crossover, 300x784 layer:", flush=True)
        result["crossover"] = crossover(rounds, args.quick)
    if "convolutions" not in args.skip:
        print("convolutions, LeNet-5-Caffe, batch 128:", flush=True)
        result["convolutions"] = convolutions(rounds, args.quick)
    if "walk" not in args.skip:
        print("random-walk training steps through sparse_lab:", flush=True)
        result["walk_steps"] = walk_steps(data, 1 if args.quick else rounds, args.quick, tmp, args.walk_paths)
    result.update({"torch": torch.__version__, "machine": platform.machine()})
    save_result(result, args.out, ("data", "pruned_run_sparsity"))


if __name__ == "__main__":
    main()
