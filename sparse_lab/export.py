"""Export a pruned run as a model whose Linear layers run on sparse kernels, and load it back.

``python -m sparse_lab.export RUN_DIR [--out FILE]`` (or ``sparse-lab export RUN_DIR``) reads the run's
``config_resolved.yaml`` and ``checkpoints/last.ckpt`` and writes ``RUN_DIR/sparse_model.pt``: the
model config, the input shape and class count, the normalized value of a black image (which the
fused kernel skips), and the trained weights, each Linear weight stored
as CSR arrays of its nonzero entries (masked weights are exactly zero after training; checkpoints
of the earlier prune-based code are converted by :mod:`sparse_lab.sparsity.legacy`).
:func:`load_sparse_model` turns that file into an ``nn.Module`` in eval mode: an MLP becomes a
:class:`~sparse_lab.sparsity.kernels.SparseChain` (one compiled call for the whole net), any other
model keeps its layers and has its Linear layers swapped for
:class:`~sparse_lab.sparsity.kernels.SparseLinear`; convolutions stay dense. Inputs are what the
trained model saw: normalized images.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from sparse_lab.models import MLP
from sparse_lab.sparsity.kernels import SparseChain, sparsify_linears
from sparse_lab.sparsity.legacy import convert_pruned_state_dict
from sparse_lab.sparsity.kernels.sparse_linear import row_pointers

FORMAT = "sparse_lab.sparse_model/1"
MODEL_PREFIX = "model."


def model_state(checkpoint_state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The model's own state dict from a Lightning checkpoint's: the ``model.`` entries without the
    prefix (and without ``torch.compile``'s ``_orig_mod.``); old prune-based layouts converted."""
    state = {
        key[len(MODEL_PREFIX):].replace("_orig_mod.", ""): value
        for key, value in checkpoint_state.items()
        if key.startswith(MODEL_PREFIX)
    }
    return convert_pruned_state_dict(state)[0]


def build_model(model_cfg: Mapping[str, Any], input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """The run's model, freshly built from its config section."""
    from hydra.utils import instantiate

    return instantiate(OmegaConf.create(dict(model_cfg)), input_shape=tuple(input_shape), num_classes=num_classes)


def _csr(weight: Tensor) -> dict[str, Any]:
    """A 2-D weight's nonzero entries in CSR arrays (plain tensors: no sparse-layout API to depend on)."""
    rows, cols = weight.nonzero(as_tuple=True)
    return {
        "shape": list(weight.shape),
        "crow_indices": row_pointers(rows, weight.shape[0]),
        "col_indices": cols,
        "values": weight[rows, cols],
    }


def _dense(csr: Mapping[str, Any]) -> Tensor:
    """The weight that :func:`_csr` stored."""
    rows = torch.repeat_interleave(torch.arange(csr["shape"][0]), csr["crow_indices"].diff())
    weight = torch.zeros(csr["shape"], dtype=csr["values"].dtype)
    weight[rows, csr["col_indices"]] = csr["values"]
    return weight


def export_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``run_dir``'s trained model as a sparse model file (default ``run_dir/sparse_model.pt``)."""
    from hydra.utils import instantiate

    run_dir = Path(run_dir)
    cfg: DictConfig = OmegaConf.load(run_dir / "config_resolved.yaml")
    data = instantiate(cfg.data)
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    state = model_state(checkpoint["state_dict"])
    model = build_model(OmegaConf.to_container(cfg.model, resolve=True), data.input_shape, data.num_classes)
    model.load_state_dict(state)  # checks the keys and shapes
    linears = {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    stored = {key: _csr(value) if key in linears else value for key, value in state.items()}
    out = Path(out) if out is not None else run_dir / "sparse_model.pt"
    torch.save(
        {
            "format": FORMAT,
            "model": OmegaConf.to_container(cfg.model, resolve=True),
            "input_shape": list(data.input_shape),
            "num_classes": int(data.num_classes),
            "input_background": data.normalize(torch.zeros(1, *data.input_shape)).flatten(),
            "state_dict": stored,
        },
        out,
    )
    return out


def load_sparse_model(path: str | Path) -> nn.Module:
    """The model saved by :func:`export_run`, in eval mode, its Linear layers on sparse kernels."""
    saved = torch.load(path, map_location="cpu", weights_only=False)
    if saved.get("format") != FORMAT:
        raise ValueError(f"{path} is not a sparse_lab sparse model file (format {saved.get('format')!r})")
    state = {key: _dense(value) if isinstance(value, dict) else value for key, value in saved["state_dict"].items()}
    model = build_model(saved["model"], saved["input_shape"], saved["num_classes"])
    model.load_state_dict(state)
    if isinstance(model, MLP):
        return SparseChain.from_linears(model.linears, saved.get("input_background")).eval()
    masks = {f"{name}.weight": m.weight.detach() != 0 for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    sparsify_linears(model, masks)
    return model.eval()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sparse_lab.export RUN_DIR [--out FILE]``."""
    parser = argparse.ArgumentParser(prog="sparse-lab export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a run dir with config_resolved.yaml and checkpoints/last.ckpt")
    parser.add_argument("--out", default=None, help="default: RUN_DIR/sparse_model.pt")
    args = parser.parse_args(argv)
    out = export_run(args.run_dir, args.out)
    print(f"wrote {out}; load it with sparse_lab.export.load_sparse_model({str(out)!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
