"""NoProp's models: the discrete-time blocks (NoProp-DT) and the shared-encoder variant.

Each model owns its fixed noise schedule and its inference procedure, which reads only images:
labels never enter ``predict``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sparse_lab.checks import is_int, is_int_list, is_number, one_of, require
from sparse_lab.errors import ConfigError
from sparse_lab.models.cnn import conv_pool_out, conv_pool_relu
from sparse_lab.models.noise_schedule import CosineNoiseSchedule, LinearAlphaSchedule

EMBEDDINGS = ("onehot", "learned")


def channels_last(x: Tensor) -> Tensor:
    """Images in NHWC layout: oneDNN's and cuDNN's fast path (CPU: half the encoder's step time)."""
    return x.contiguous(memory_format=torch.channels_last)


def _scaled(width: float, n: int) -> int:
    return max(1, round(n * width))


class NoPropBlock(nn.Module):
    """One NoProp-DT block: predicts the label embedding from an image and a noisy embedding.

    Image path: conv32-ReLU-maxpool-dropout, conv64-ReLU-dropout, conv128-ReLU-maxpool-dropout (each
    pool before its ReLU: see :func:`conv_pool_relu`), flatten, FC256, BN. Label path: FC256-BN-ReLU, then a residual FC256-BN-ReLU-FC256-BN.
    Fusion: concat, FC256-BN-ReLU, FC128-BN-ReLU, FC(classes); softmax; ``u_hat = probs @ W_embed``.
    ``width`` scales every channel count and hidden width (1.0 = the paper).
    """

    def __init__(
        self, input_shape: Sequence[int], num_classes: int, embed_dim: int, width: float = 1.0, dropout: float = 0.2
    ) -> None:
        super().__init__()
        c, h, w = input_shape
        c1, c2, c3 = (_scaled(width, n) for n in (32, 64, 128))
        f256, f128 = _scaled(width, 256), _scaled(width, 128)
        self.image = nn.Sequential(
            *conv_pool_relu(c, c1, padding=1), nn.Dropout(dropout),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.Dropout(dropout),
            *conv_pool_relu(c2, c3, padding=1), nn.Dropout(dropout),
            nn.Flatten(),
            nn.Linear(c3 * conv_pool_out(conv_pool_out(h)) * conv_pool_out(conv_pool_out(w)), f256), nn.BatchNorm1d(f256),
        )  # fmt: skip
        self.label_in = nn.Sequential(nn.Linear(embed_dim, f256), nn.BatchNorm1d(f256), nn.ReLU())
        self.label_res = nn.Sequential(
            nn.Linear(f256, f256), nn.BatchNorm1d(f256), nn.ReLU(), nn.Linear(f256, f256), nn.BatchNorm1d(f256)
        )
        self.fuse = nn.Sequential(
            nn.Linear(2 * f256, f256), nn.BatchNorm1d(f256), nn.ReLU(),
            nn.Linear(f256, f128), nn.BatchNorm1d(f128), nn.ReLU(),
            nn.Linear(f128, num_classes),
        )  # fmt: skip

    def forward(self, x: Tensor, z: Tensor, embedding: Tensor) -> Tensor:
        """``u_hat``: the softmax over classes mapped through ``embedding`` (classes x dim)."""
        h = self.label_in(z)
        h = h + self.label_res(h)
        logits = self.fuse(torch.cat([self.image(channels_last(x)), h], dim=1))
        return logits.softmax(dim=1) @ embedding


class NoPropDTModel(nn.Module):
    """NoProp-DT: ``steps`` blocks, a class embedding and a linear output head.

    ``embedding="onehot"``: ``W_embed`` is the identity (a buffer); ``"learned"``: a parameter of
    shape ``(classes, embedding_dim)``, orthogonally initialised. The head reads the class from ``z_T``.
    Only the methods whose ``model_type`` is this class train it (read by config validation).
    """

    config_option = "noprop_dt"  # conf/model/noprop_dt.yaml

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        steps: int = 10,
        width: float = 1.0,
        embedding: str = "onehot",
        embedding_dim: int | None = None,
        dropout: float = 0.2,
        schedule_offset: float = 0.008,
        eta: float = 0.1,
    ) -> None:
        super().__init__()
        require(is_int(steps, 1), "model.steps", steps, "an integer >= 1 (NoProp blocks)")
        require(is_number(width, 0, open_low=True), "model.width", width, "a finite number > 0 (1.0 = the paper's block widths)")
        one_of("model.embedding", embedding, EMBEDDINGS)
        require(embedding_dim is None or is_int(embedding_dim, 1), "model.embedding_dim", embedding_dim, "null or an integer >= 1")
        require(is_number(dropout, 0) and dropout < 1, "model.dropout", dropout, "a number in [0, 1)")
        require(is_number(schedule_offset, 0, open_low=True), "model.schedule_offset", schedule_offset,
                "a finite number > 0 (0.008 in the paper): it keeps the SNR finite")
        require(is_number(eta, 0), "model.eta", eta, "a finite number >= 0")
        if min(input_shape[1:]) < 4:  # two conv+pool stages
            raise ConfigError(f"model=noprop_dt needs images of at least 4x4 pixels, the data has {input_shape[1]}x{input_shape[2]}")
        dim = num_classes if embedding == "onehot" else (embedding_dim or num_classes)
        if embedding == "onehot":
            self.register_buffer("embed", torch.eye(num_classes))
        else:
            self.embed = nn.Parameter(nn.init.orthogonal_(torch.empty(num_classes, dim)))
        self.embedding = embedding
        self.num_classes = num_classes
        self.schedule = CosineNoiseSchedule(steps, offset=schedule_offset, eta=eta)
        self.blocks = nn.ModuleList(NoPropBlock(input_shape, num_classes, dim, width, dropout) for _ in range(steps))
        self.head = nn.Linear(dim, num_classes)
        self.to(memory_format=torch.channels_last)  # conv weights in NHWC, like the images they meet

    @property
    def steps(self) -> int:
        return len(self.blocks)

    def targets(self, y: Tensor) -> Tensor:
        """``u_y``: the embedding of each label."""
        return self.embed[y]

    def step(self, t: int, z_prev: Tensor, u_hat: Tensor, eps: Tensor) -> Tensor:
        """The inference update ``z_t = a_t u_hat + b_t z_{t-1} + sqrt(c_t) eps`` (``t`` from 1)."""
        s = self.schedule
        return float(s.a[t - 1]) * u_hat + float(s.b[t - 1]) * z_prev + float(s.c[t - 1]) ** 0.5 * eps

    def predict_logits(self, x: Tensor, generator: torch.Generator | None = None, runs: int = 1) -> Tensor:
        """Head logits after the full chain from ``z_0 ~ N(0, I)``; ``runs`` draws at once, ``(runs, B, C)``.

        Reads images only. The ``runs`` chains are stacked along the batch dimension.
        """
        batch = len(x)
        xs = x.expand(runs, *x.shape).reshape(runs * batch, *x.shape[1:])
        shape = (self.steps + 1, runs * batch, self.embed.shape[1])
        noise = torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)
        z = noise[0]
        for t, block in enumerate(self.blocks, start=1):
            z = self.step(t, z, block(xs, z, self.embed), noise[t])
        return self.head(z).reshape(runs, batch, -1)


INFERENCES = ("renoise", "chain")


class NoPropSharedModel(nn.Module):
    """The shared-encoder variant: one CNN encoder and ``steps`` denoiser MLPs.

    Encoder: (conv3x3 ``channels[i]``-ReLU-maxpool) per entry of ``channels``, then FC(``features``),
    no activation after it; with the seed comparison's unpadded convolutions (``padding=0``) an MNIST
    image becomes 32x13x13, then 64x5x5 = 1600 inputs to FC128. Denoiser ``t``:
    ``concat(features, z_t) -> hidden -> ReLU -> classes``, trained towards the one-hot label.

    ``inference="renoise"`` (the seed comparison's): from ``z ~ N(0, I)``, denoiser ``t`` (T down to 1)
    predicts ``u_hat`` and ``sqrt(alpha_t) u_hat + sqrt(1 - alpha_t) eps`` goes on (with
    ``alpha_1 = 1`` the last prediction comes out as it is). ``inference="chain"``: each
    prediction is the next denoiser's input as it is, no noise after the start.
    Only the methods whose ``model_type`` is this class train it (read by config validation).
    """

    config_option = "noprop_shared"  # conf/model/noprop_shared.yaml

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        steps: int = 10,
        channels: Sequence[int] = (32, 64),
        features: int = 128,
        hidden: int = 256,
        alpha_start: float = 1.0,
        alpha_end: float = 0.1,
        padding: int = 0,
        inference: str = "renoise",
    ) -> None:
        super().__init__()
        require(is_int(steps, 1), "model.steps", steps, "an integer >= 1 (denoisers)")
        require(is_int_list(channels, empty=True), "model.channels", channels,
                "a list of positive integers (one conv layer each), e.g. model.channels=[32,64]")
        require(is_int(features, 1), "model.features", features, "an integer >= 1")
        require(is_int(hidden, 1), "model.hidden", hidden, "an integer >= 1 (the denoisers' hidden width)")
        for key, alpha in (("model.alpha_start", alpha_start), ("model.alpha_end", alpha_end)):
            require(is_number(alpha, 0, 1, open_low=True), key, alpha, "a number in (0, 1]")
        require(is_int(padding, 0), "model.padding", padding, "an integer >= 0 (the encoder's 3x3 convolutions)")
        one_of("model.inference", inference, INFERENCES)
        c, h, w = input_shape
        layers: list[nn.Module] = []
        for out in channels:
            layers += conv_pool_relu(c, out, padding)
            c, h, w = out, conv_pool_out(h, padding), conv_pool_out(w, padding)
        require(min(h, w) >= 1, "model.channels", channels,
                f"at most as many conv+pool stages (with model.padding={padding}) as the {input_shape[1]}x{input_shape[2]} "
                "images allow")
        layers += [nn.Flatten(), nn.Linear(c * h * w, features)]
        self.encoder = nn.Sequential(*layers)
        self.denoisers = nn.ModuleList(
            nn.Sequential(nn.Linear(features + num_classes, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
            for _ in range(steps)
        )
        self.schedule = LinearAlphaSchedule(steps, alpha_start, alpha_end)
        self.num_classes = num_classes
        self.inference = inference
        self.to(memory_format=torch.channels_last)  # conv weights in NHWC, like the images they meet

    def features(self, x: Tensor) -> Tensor:
        """The shared encoder's features of images ``x``."""
        return self.encoder(channels_last(x))

    @property
    def steps(self) -> int:
        return len(self.denoisers)

    def targets(self, y: Tensor) -> Tensor:
        """The one-hot labels."""
        return F.one_hot(y, self.num_classes).float()

    def denoise(self, t: int, features: Tensor, z: Tensor) -> Tensor:
        """Denoiser ``t`` (from 1): its prediction of the one-hot label."""
        return self.denoisers[t - 1](torch.cat([features, z], dim=1))

    def block_mse(self, features: Tensor, zs: Tensor, u: Tensor) -> dict[int, Tensor]:
        """Each denoiser's MSE to the one-hot labels ``u`` from its own ``z_t = zs[t - 1]``, keyed from 1."""
        return {t: F.mse_loss(self.denoise(t, features, zs[t - 1]), u) for t in range(1, self.steps + 1)}

    def predict_logits(self, x: Tensor, generator: torch.Generator | None = None, runs: int = 1) -> Tensor:
        """From ``z_T ~ N(0, I)``, denoisers ``T..1`` as ``inference`` says; ``(runs, B, C)``."""
        batch = len(x)
        features = self.features(x).repeat(runs, 1)
        renoise = self.inference == "renoise"
        noise = torch.randn(
            (self.steps + 1 if renoise else 1, runs * batch, self.num_classes),
            generator=generator, device=x.device, dtype=x.dtype,
        )  # fmt: skip
        alpha = self.schedule.alpha.to(device=x.device, dtype=x.dtype)
        z = noise[0]
        for t in range(self.steps, 0, -1):
            z = self.denoise(t, features, z)
            if renoise:
                z = alpha[t - 1].sqrt() * z + (1 - alpha[t - 1]).sqrt() * noise[t]
        return z.reshape(runs, batch, -1)
