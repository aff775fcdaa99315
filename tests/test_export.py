"""Export of a pruned run to sparse kernels, and the loader."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from sparse_lab import app
from sparse_lab.app import train
from sparse_lab.export import export_run, load_sparse_model, model_state
from sparse_lab.models import MLP
from sparse_lab.sparsity.kernels import SparseChain, SparseLinear
from tests.conftest import REPO, make_cfg

PRUNED = ["method=progressive", "sparsity=0.9", "epochs=2", "model.hidden=[64,32]", "+trainer.limit_train_batches=3",
          "method.callbacks.pruner.schedule._target_=sparse_lab.sparsity.LinearExactSchedule"]


def trained_model(run_dir: Path) -> MLP:
    model = MLP((1, 28, 28), 10, (64, 32))
    model.load_state_dict(model_state(torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]))
    return model


@pytest.fixture(scope="module")
def pruned_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("pruned")
    train(make_cfg(run_dir, *PRUNED))
    return run_dir


def test_exported_mlp_equals_the_masked_model_on_a_batch(pruned_run: Path) -> None:
    state = torch.load(pruned_run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert not any(k.endswith("weight_orig") for k in state)  # plain weights: the MaskSet zeroes them in place
    reference = trained_model(pruned_run).eval()
    zeros = sum(int((lin.weight == 0).sum()) for lin in reference.linears)
    total = sum(lin.weight.numel() for lin in reference.linears)
    assert zeros / total == pytest.approx(0.9, abs=0.01)
    out = export_run(pruned_run)
    assert out == pruned_run / "sparse_model.pt"
    model = load_sparse_model(out)
    assert isinstance(model, SparseChain) and not model.training
    assert [layer.nnz for layer in model.layers] == [int((lin.weight != 0).sum()) for lin in reference.linears]
    black = torch.load(out, weights_only=False)["input_background"]  # a black image, normalized as the data module does
    assert torch.equal(model.input_background, black) and black.unique().numel() == 1 and black[0] < 0
    for batch in (1, 2, 128):
        x = torch.randn(batch, 1, 28, 28)
        x = torch.where(torch.rand_like(x) < 0.8, black.view(1, 1, 28, 28), x)  # mostly black, as MNIST
        with torch.no_grad():
            assert torch.allclose(model(x), reference(x), atol=1e-5)


def test_a_model_that_is_not_an_mlp_keeps_its_layers_and_gets_sparse_linears(tmp_path: Path) -> None:
    run_dir = tmp_path / "cnn"
    train(make_cfg(run_dir, "method=progressive", "sparsity=0.5", "epochs=2", "model=cnn", "+trainer.limit_train_batches=2",
                   "+trainer.limit_test_batches=1"))
    model = load_sparse_model(export_run(run_dir, tmp_path / "cnn.pt"))
    linears = [m for m in model.modules() if isinstance(m, SparseLinear)]
    assert linears and not any(type(m) is nn.Linear for m in model.modules())
    assert any(isinstance(m, nn.Conv2d) for m in model.modules())  # convolutions stay dense


def test_sparse_lab_export_dispatches_to_the_exporter(pruned_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["sparse-lab", "export", str(pruned_run), "--out", str(tmp_path / "m.pt")])
    with pytest.raises(SystemExit) as exit_info:
        app.cli()
    assert exit_info.value.code == 0 and (tmp_path / "m.pt").is_file()


@pytest.mark.slow
def test_python_m_sparse_lab_export(pruned_run: Path, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "sparse_lab.export", str(pruned_run), "--out", str(tmp_path / "m.pt")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "load_sparse_model" in done.stdout and (tmp_path / "m.pt").is_file()
