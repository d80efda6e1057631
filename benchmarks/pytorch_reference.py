"""The sigma-VAE reference training step in PyTorch, timed the way `throughput.py` times ours.

The same network as `keras_vae.networks.conv_encoder`/`conv_decoder` (the
sigma-VAE paper's small net, latent 20), the optimal-sigma Gaussian ELBO
(sigma*^2 = batch MSE, log sigma soft-clipped at -6, summed over pixels,
mean over the batch), Adam 1e-3, batch 128, shuffled batches from a
`torch.utils.data.DataLoader` over the embedded 9,000 MNIST training images,
as the official PyTorch code trains. By default the loader hands out tensors
of a `TensorDataset`, which skips the per-item work of the official script's
`torchvision.datasets.MNIST` + `transforms.ToTensor()` loader (each item
becomes a PIL image, then a float tensor). `--pil_loader` does that per-item
work the way torchvision does it (needs Pillow, not torchvision, which would
pull another torch build), for the official script's input cost. Needs only
torch and numpy (and Pillow for `--pil_loader`), so it can run from a separate
virtualenv:

    /path/to/torch-venv/bin/python benchmarks/pytorch_reference.py --steps=15 --windows=4 --warmup=5

Prints one line `RESULT {json}` in the format of `throughput.py`'s children.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

MNIST = Path(__file__).resolve().parent.parent / "keras_vae" / "data" / "mnist" / "t10k-images-idx3-ubyte.gz"
BATCH, LATENT, TRAIN_IMAGES = 128, 20, 9000


def load_train_bytes() -> np.ndarray:
    """The first 9,000 images of the embedded MNIST file, uint8 (N, 28, 28)."""
    with gzip.open(MNIST, "rb") as handle:
        raw = np.frombuffer(handle.read(), np.uint8, offset=16)
    return raw.reshape(-1, 28, 28)[:TRAIN_IMAGES]


def load_train_images() -> torch.Tensor:
    """The same images as float32 in [0, 1], NCHW."""
    return torch.from_numpy(load_train_bytes()[:, None].astype(np.float32) / 255.0)


class PILItems(torch.utils.data.Dataset):
    """Items as `torchvision.datasets.MNIST` with `transforms.ToTensor()` makes them.

    `__getitem__` turns the uint8 image into a PIL image (`Image.fromarray`,
    mode "L"), and ToTensor turns that into a (1, 28, 28) float tensor / 255.
    """

    def __init__(self, images: np.ndarray):
        from PIL import Image

        self.images = torch.from_numpy(images.copy())
        self.labels = torch.zeros(len(images))
        self._image = Image

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index):
        picture = self._image.fromarray(self.images[index].numpy(), mode="L")
        array = torch.from_numpy(np.array(picture, np.uint8, copy=True))
        tensor = array.view(28, 28, 1).permute(2, 0, 1).contiguous().to(torch.float32).div(255)
        return tensor, self.labels[index]


class ConvVAE(nn.Module):
    """Conv(32,k3,s1)-Conv(64,k4,s2)-Conv(128,k5,s2) / Dense(7*7*128)-ConvT(64,k6,s2)-ConvT(32,k6,s2)-ConvT(1,k5,s1)."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 32, 3, stride=1, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, 128, 5, stride=2, padding=2), nn.ReLU(),
            nn.Flatten(),
        )
        self.mean = nn.Linear(7 * 7 * 128, LATENT)
        self.log_variance = nn.Linear(7 * 7 * 128, LATENT)
        self.dense = nn.Linear(LATENT, 7 * 7 * 128)
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(128, 64, 6, stride=2, padding=2), nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 6, stride=2, padding=2), nn.ReLU(),
            nn.ConvTranspose2d(32, 1, 5, stride=1, padding=2), nn.Sigmoid(),
        )

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """The negative optimal-sigma ELBO, nats per image."""
        features = self.encoder(x)
        mean, log_variance = self.mean(features), self.log_variance(features)
        z = mean + torch.exp(0.5 * log_variance) * torch.randn_like(mean)
        x_hat = self.decoder(self.dense(z).view(-1, 128, 7, 7))
        log_sigma = 0.5 * torch.log(torch.mean((x - x_hat) ** 2))
        log_sigma = -6 + nn.functional.softplus(log_sigma + 6)
        nll = 0.5 * ((x - x_hat) / log_sigma.exp()) ** 2 + log_sigma + 0.5 * math.log(2 * math.pi)
        kl = -0.5 * torch.sum(1 + log_variance - mean**2 - log_variance.exp(), dim=1)
        return nll.sum(dim=(1, 2, 3)).mean() + kl.mean()


def sgemm_gflops(size: int = 1024, repeats: int = 10) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=15, help="training steps per timed window")
    parser.add_argument("--windows", type=int, default=4, help="timed windows")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--bf16", action="store_true", help="networks under torch.autocast(bfloat16)")
    parser.add_argument("--pil_loader", action="store_true",
                        help="per-item PIL image + ToTensor, as the official script's torchvision loader")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dataset = PILItems(load_train_bytes()) if args.pil_loader else torch.utils.data.TensorDataset(load_train_images())
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True, drop_last=True)
    model = ConvVAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    total = args.warmup + args.steps * args.windows
    stamps = []
    while len(stamps) < total:
        for x, *_ in loader:
            optimizer.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                loss = model.loss(x)
            loss.backward()
            optimizer.step()
            loss.item()  # as the reference logs it every step
            stamps.append(time.perf_counter())
            if len(stamps) == total:
                break
    rates = []
    for window in range(args.windows):
        start = stamps[args.warmup - 1 + window * args.steps]
        end = stamps[args.warmup - 1 + (window + 1) * args.steps]
        rates.append(args.steps * BATCH / (end - start))
    variant = "pytorch" + ("_bf16" if args.bf16 else "") + ("_pil_loader" if args.pil_loader else "")
    result = {"variant": variant, "images_per_second": rates,
              "final_loss": loss.item(), "torch": torch.__version__, "sgemm_gflops_now": sgemm_gflops()}
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
