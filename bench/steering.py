"""Does guidance get the named emoji? The pieces the bench's random-name rows and its front (`--only pareto`) share:
names drawn at random from the data set, the nearest-real-emoji judge, best-of-N by the guiding CLIP, the front."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

JUDGE_SIZE = 32  # the judge compares pixels at the bundled DDPM's native size
RANDOM_NAMES, RANDOM_NAMES_SEED = 40, 7


def random_names(names: list[str], count: int, seed: int, exclude: list[str]) -> list[int]:
    """Indices of `count` data-set names drawn at random (seeded), none of `exclude` (the hand-picked names)."""
    pool = [index for index, name in enumerate(names) if name not in set(exclude)]
    return [int(index) for index in np.random.default_rng(seed).choice(pool, count, replace=False)]


def pixels_at(images: np.ndarray, size: int = JUDGE_SIZE) -> torch.Tensor:
    """uint8 (N, H, W, 3) images area-resampled to `size` px, as float (N, 3 * size * size) in [0, 1]."""
    pixels = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255
    return torch.nn.functional.interpolate(pixels, size=(size, size), mode="area").flatten(1)


class NearestJudge:
    """Which real emoji an image is: its nearest data-set images in pixels at 32 px (L2). It names the shipped
    unconditional samples correctly, and knows nothing of CLIP, so guidance cannot fool it with texture."""

    def __init__(self, images: np.ndarray):
        self.real = pixels_at(images)

    def ranks(self, images: np.ndarray, labels: list[int]) -> np.ndarray:
        """Where each image's label stands among its nearest real emoji (0: the nearest)."""
        distances = torch.cdist(pixels_at(images), self.real)
        own = distances[torch.arange(len(labels)), torch.tensor(labels)]
        return (distances < own[:, None]).sum(dim=1).numpy()

    def nearest(self, images: np.ndarray, count: int = 3) -> np.ndarray:
        """(N, count) indices of each image's nearest real emoji."""
        return torch.cdist(pixels_at(images), self.real).argsort(dim=1)[:, :count].numpy()


def hit_rates(ranks: np.ndarray) -> tuple[float, float]:
    """(top-1, top-3) hit rates of judge ranks."""
    return float(np.mean(ranks < 1)), float(np.mean(ranks < 3))


@torch.no_grad()
def guiding_scores(images: np.ndarray, text: str, clip) -> torch.Tensor:
    """Cosine of each uint8 image's embedding to `text`'s, by the guiding CLIP (a `pipelines.clip.ClipBundle`), the
    whole image seen at its input size: what best-of-N keeps."""
    pixels = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255
    size = clip.image_size
    pixels = torch.nn.functional.interpolate(pixels, size=(size, size), mode="bicubic", antialias=True)
    mean, std = torch.tensor(clip.mean).view(1, 3, 1, 1), torch.tensor(clip.std).view(1, 3, 1, 1)
    dtype = next(clip.model.visual.parameters()).dtype
    features = clip.model.encode_image(((pixels - mean) / std).to(dtype)).float()
    features = torch.nn.functional.normalize(features, dim=-1)
    return features @ torch.nn.functional.normalize(clip.encode_text(text), dim=-1)[0]


@dataclass(frozen=True)
class Point:
    """One method and setting on the front: top-3 hit rate, projection precision as a share of unguided's, and
    seconds per delivered image."""

    label: str
    hit: float
    precision: float
    seconds: float

    def beats(self, other: Point) -> bool:
        """Whether this point is at least as good as `other` on all three and better on one."""
        mine, theirs = (self.hit, self.precision, -self.seconds), (other.hit, other.precision, -other.seconds)
        return all(a >= b for a, b in zip(mine, theirs)) and mine != theirs


def front(points: list[Point]) -> list[Point]:
    """The points no other point beats on hit rate, precision and time (the Pareto front), fastest first."""
    return sorted(
        (point for point in points if not any(other.beats(point) for other in points)), key=lambda p: p.seconds
    )


def labelled_grid(images: np.ndarray, captions: list[str], columns: int, path: str) -> str:
    """uint8 images in a grid on white, each with its caption under it (cut to fit); written to `path`."""
    from PIL import Image, ImageDraw, ImageFont

    from pipelines.sweep import fitted

    side = images.shape[1]
    caption_height, font = 18, ImageFont.load_default(size=12)
    rows = -(-len(images) // columns)
    grid = Image.new("RGB", (columns * side, rows * (side + caption_height)), "white")
    draw = ImageDraw.Draw(grid)
    for index, (image, caption) in enumerate(zip(images, captions, strict=True)):
        left, top = (index % columns) * side, (index // columns) * (side + caption_height)
        grid.paste(Image.fromarray(image), (left, top))
        text = fitted(draw, caption, font, side - 4)
        width = draw.textlength(text, font=font)
        draw.text((left + (side - width) / 2, top + side + 2), text, fill=(20, 20, 20), font=font)
    grid.save(path)
    return path
