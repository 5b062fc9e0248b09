"""A seeded synthetic segmentation dataset: six kinds of shapes and textures on a noisy background.

The demo trains on it, so it must be learnable in a minute on a CPU, yet not be solvable by colour alone: two
classes share texture-based appearance, colours are jittered per object, objects occlude each other, and the
background carries a gradient and noise. Edges are hard (no anti-aliasing) so that every pixel's label is exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from hostctl.report import PALETTE

CLASS_NAMES = ("background", "disc", "square", "triangle", "ring", "stripes", "checker")
NUM_CLASSES = len(CLASS_NAMES)

# Base colours of the object classes (index = class); textures use two colours.
_COLOURS = {
    1: ((205, 60, 55),),
    2: ((55, 175, 70),),
    3: ((60, 85, 205),),
    4: ((215, 195, 45),),
    5: ((190, 60, 190), (235, 225, 235)),
    6: ((40, 190, 200), (20, 30, 40)),
}


@dataclass(frozen=True)
class SyntheticDataset:
    root: Path
    train: tuple[str, ...]
    test: tuple[str, ...]


def palette_image(mask: np.ndarray) -> Image.Image:
    """A class-index mask as a palette PNG: pixel values stay class indices, viewers show the report's colours."""
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    flat = [channel for colour in PALETTE for channel in colour]
    image.putpalette(flat + [0] * (768 - len(flat)))
    return image


def make_sample(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """One image ([H,W,3] uint8) and its class map ([H,W] uint8)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    scale = min(height, width) / 64.0

    # A grey of random brightness with a mild tint, so no object colour is ever the background's.
    base = rng.uniform(70, 170) + rng.uniform(-25, 25, size=3)
    tilt = rng.uniform(-40, 40, size=3)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx / width + np.sin(angle) * yy / height)[..., None]
    image = base + tilt * ramp
    mask = np.zeros((height, width), dtype=np.uint8)

    for _ in range(int(rng.integers(2, 5))):
        cls = int(rng.integers(1, NUM_CLASSES))
        cy, cx = rng.uniform(0.1, 0.9) * height, rng.uniform(0.1, 0.9) * width
        radius = rng.uniform(7, 16) * scale
        region = _shape(cls, rng, yy - cy, xx - cx, radius)
        colours = [np.clip(np.array(c) + rng.uniform(-25, 25, size=3), 0, 255) for c in _COLOURS[cls]]
        if len(colours) == 1:
            fill = np.broadcast_to(colours[0], image.shape)
        else:
            pattern = _texture(cls, rng, yy, xx, scale)[..., None]
            fill = np.where(pattern, colours[0], colours[1])
        image = np.where(region[..., None], fill, image)
        mask[region] = cls

    image = image + rng.normal(0, 12, size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask


def _shape(cls: int, rng: np.random.Generator, dy: np.ndarray, dx: np.ndarray, radius: float) -> np.ndarray:
    theta = rng.uniform(0, 2 * np.pi)
    # Coordinates in the object's own rotated frame.
    u = np.cos(theta) * dx + np.sin(theta) * dy
    v = -np.sin(theta) * dx + np.cos(theta) * dy
    dist = np.hypot(dx, dy)
    if cls == 1:  # disc
        return dist <= radius
    if cls == 2:  # axis-aligned rectangle
        aspect = rng.uniform(0.6, 1.4)
        return (np.abs(dx) <= radius * aspect) & (np.abs(dy) <= radius / aspect)
    if cls == 3:  # equilateral-ish triangle, rotated
        inside = np.ones_like(dist, dtype=bool)
        for k in range(3):
            phi = 2 * np.pi * k / 3
            inside &= np.cos(phi) * u + np.sin(phi) * v <= radius * 0.55
        return inside
    if cls == 4:  # ring
        return (dist <= radius) & (dist >= radius * 0.55)
    if cls == 5:  # ellipse of stripes
        return (u / radius) ** 2 + (v / (radius * 0.7)) ** 2 <= 1
    return (np.abs(u) <= radius * 0.9) & (np.abs(v) <= radius * 0.9)  # rotated square of checkers


def _texture(cls: int, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, scale: float) -> np.ndarray:
    period = rng.uniform(4, 6) * scale
    if cls == 5:
        phi = rng.uniform(0, np.pi)
        return np.sin((np.cos(phi) * xx + np.sin(phi) * yy) * 2 * np.pi / period) > 0
    return ((np.floor(xx / period) + np.floor(yy / period)) % 2).astype(bool)


def generate_arrays(count: int, height: int, width: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield make_sample(rng, height, width)


def write_dataset(root: Path, num_train: int, num_test: int, height: int, width: int, seed: int,
                  on_sample=None) -> SyntheticDataset:  # noqa: ANN001 - a plain progress callback
    """Write images/NAME.png, masks/NAME.png (palette PNG) and splits/{train,test}.txt under root."""
    for sub in ("images", "masks", "splits"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    names = [f"sample_{i:05d}" for i in range(num_train + num_test)]
    for name, (image, mask) in zip(names, generate_arrays(len(names), height, width, seed), strict=True):
        Image.fromarray(image, mode="RGB").save(root / "images" / f"{name}.png")
        palette_image(mask).save(root / "masks" / f"{name}.png")
        if on_sample is not None:
            on_sample()
    train, test = tuple(names[:num_train]), tuple(names[num_train:])
    (root / "splits" / "train.txt").write_text("".join(f"{n}\n" for n in train))
    (root / "splits" / "test.txt").write_text("".join(f"{n}\n" for n in test))
    return SyntheticDataset(root=root, train=train, test=test)
