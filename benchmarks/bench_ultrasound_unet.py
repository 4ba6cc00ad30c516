"""A small U-Net learned from the study's own expert outlines against the classical one-click method (issue 29)

    .venv/bin/python benchmarks/bench_ultrasound_unet.py [--clicks 3] [--folds 5] [--epochs 40]

Needs PyTorch (the CPU build), which the project does not depend on: install it beside the project
(``pip install torch``, or ``pip install --target DIR torch`` and ``PYTHONPATH=DIR``). Nothing is downloaded at run
time: no pretrained weights, every network starts from random weights (seeded).

On ``../shared/data/busi_sample`` (40 lesion images), the same five folds over the images and the same clicks as
``bench_ultrasound_learned.py`` (``--clicks`` random points at least 3 px inside the expert outline, plus the
deepest point): a U-Net (four levels, 8 to 64 channels, batch norm; 0.12 M weights) is trained on the training
folds' images and expert outlines only and applied to the held-out images. Input, at 128 x 128 px (the image
resized, z-scored per image): the image and a Gaussian at the click (sigma 4 px), the prompt; in the second variant
also the classical method's mask for that click (a learned refinement of it). Training: the training images' clicks,
flipped left-right at random (depth is not symmetric), binary cross-entropy plus soft Dice, Adam (learning rate
1e-3), ``--epochs`` passes. The probability is resized back to the image; the mask is the component of probability >
0.5 that holds the click (or lies nearest to it), holes filled, and its Dice with the expert outline is set against
the classical mask's for the same click. About 25 minutes on 2 cores for both variants (0.2 s per training
step of 8 images).
"""

from __future__ import annotations

import argparse
from functools import partial

import numpy as np
import SimpleITK as sitk
import torch
from bench_ultrasound_learned import classical_results, click_component, print_comparison
from bench_ultrasound_seg import dice, ground_truth
from torch import nn
from torch.nn import functional

from radiomics_assets.ingest.file_pairs import read_pair_image
from radiomics_assets.masks.ultrasound import segment_ultrasound_array

SIZE = 128
CLICK_SIGMA_PX = 4.0
BATCH = 8


def classical_masks(pair, clicks: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray, list]:
    """The image, its expert outline and, per click, (click, the classical mask)."""
    pixels = sitk.GetArrayFromImage(read_pair_image(pair))[0].astype(np.float32)
    return pixels, ground_truth(pair), [(click, segment_ultrasound_array(pixels, click)) for click in clicks]


def _resized(layer: np.ndarray) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(layer, dtype=np.float32))[None, None]
    return functional.interpolate(tensor, size=(SIZE, SIZE), mode="bilinear", align_corners=False)[0, 0]


def network_input(pixels: np.ndarray, click, mask: np.ndarray, with_classical: bool) -> torch.Tensor:
    """Channels at SIZE x SIZE: the z-scored image, the click as a Gaussian, optionally the classical mask."""
    image = _resized((pixels - pixels.mean()) / (pixels.std() + 1e-6))
    rows, columns = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    row, column = (click[0] + 0.5) * SIZE / pixels.shape[0] - 0.5, (click[1] + 0.5) * SIZE / pixels.shape[1] - 0.5
    prompt = torch.exp(-((rows - row) ** 2 + (columns - column) ** 2) / (2 * CLICK_SIGMA_PX**2))
    channels = [image, prompt] + ([_resized(mask)] if with_classical else [])
    return torch.stack(channels)


def _block(channels_in: int, channels_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 3, padding=1),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels_out, channels_out, 3, padding=1),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    def __init__(self, channels_in: int, width: int = 8, levels: int = 4):
        super().__init__()
        widths = [width * 2**level for level in range(levels)]
        self.down = nn.ModuleList(_block(a, b) for a, b in zip([channels_in, *widths[:-1]], widths, strict=True))
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(b, a, 2, stride=2) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.merge = nn.ModuleList(_block(2 * a, a) for a in widths[:-1])
        self.out = nn.Conv2d(width, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level, block in enumerate(self.down):
            x = block(x if level == 0 else functional.max_pool2d(x, 2))
            skips.append(x)
        for level in reversed(range(len(self.up))):
            x = self.merge[level](torch.cat([skips[level], self.up[level](x)], dim=1))
        return self.out(x)[:, 0]


def _loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    probability = torch.sigmoid(logits)
    overlap = (probability * target).sum(dim=(1, 2))
    soft_dice = (2 * overlap + 1) / (probability.sum(dim=(1, 2)) + target.sum(dim=(1, 2)) + 1)
    return functional.binary_cross_entropy_with_logits(logits, target) + (1 - soft_dice).mean()


def train(inputs: torch.Tensor, targets: torch.Tensor, epochs: int, seed: int) -> UNet:
    torch.manual_seed(seed)
    model = UNet(inputs.shape[1])
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(inputs))
        for start in range(0, len(order), BATCH):
            batch = order[start : start + BATCH]
            x, y = inputs[batch], targets[batch]
            flip = torch.rand(len(batch)) < 0.5
            x, y = (
                torch.where(flip[:, None, None, None], x.flip(-1), x),
                torch.where(flip[:, None, None], y.flip(-1), y),
            )
            optimiser.zero_grad()
            _loss(model(x), y).backward()
            optimiser.step()
    return model.eval()


def cross_validated_dice(cases: list, folds: int, n_random: int, epochs: int, with_classical: bool) -> dict:
    """Dice of the U-Net's and of the classical mask for every held-out (image, click), and the click's kind."""
    fold_of = np.random.default_rng(0).permutation(np.arange(len(cases)) % folds)  # bench_ultrasound_learned's
    learned, classical_dice, kind = [], [], []
    for fold in range(folds):
        inputs, targets = [], []
        for i in np.flatnonzero(fold_of != fold):
            pixels, truth, per_click = cases[i]
            target = (_resized(truth.astype(np.float32)) > 0.5).float()
            for click, mask in per_click:
                inputs.append(network_input(pixels, click, mask, with_classical))
                targets.append(target)
        model = train(torch.stack(inputs), torch.stack(targets), epochs, seed=fold)
        for i in np.flatnonzero(fold_of == fold):
            pixels, truth, per_click = cases[i]
            for j, (click, mask) in enumerate(per_click):
                with torch.no_grad():
                    logits = model(network_input(pixels, click, mask, with_classical)[None])
                probability = functional.interpolate(
                    torch.sigmoid(logits)[None], size=pixels.shape, mode="bilinear", align_corners=False
                )[0, 0].numpy()
                learned.append(dice(click_component(probability, click), truth))
                classical_dice.append(dice(mask, truth))
                kind.append("random" if j < n_random else "deepest")
    return {"learned": np.array(learned), "classical": np.array(classical_dice), "kind": np.array(kind)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clicks", type=int, default=3, help="random clicks per image (plus the deepest point)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(2)
    cases = classical_results(classical_masks, args.clicks)
    variants = {"U-Net": False, "U-Net given the classical mask": True}
    print_comparison(
        {
            name: partial(cross_validated_dice, cases, args.folds, args.clicks, args.epochs, flag)
            for name, flag in variants.items()
        },
        args.folds,
    )


if __name__ == "__main__":
    main()
