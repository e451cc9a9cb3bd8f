"""Input images and masks for Stable Diffusion: any mode and size in, RGB at a multiple of 8 out.

Size rule (docs/stable-diffusion.md): an input is scaled, keeping its aspect ratio, down so that its longer side
is at most 1024 px and up so that its shorter side is at least 64 px; each side is then rounded to the nearest
multiple of 8 (a change of at most 4 px per side). Results are resized back to the input's own size, so the user
gets the size they gave. A mask of another size than its image is stretched to the image's size.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter, ImageOps

MULTIPLE = 8
MIN_SIDE = 64
MAX_SIDE = 1024
# Uploads larger than this are refused before decoding (4096x4096; they are scaled to MAX_SIDE anyway). Pillow's own
# decompression-bomb guard only warns below 179 megapixels, and a 12000x12000 upload took 451 s and 3.3 GB.
MAX_UPLOAD_PIXELS = 4096 * 4096
MASK_THRESHOLD = 128  # mask pixels at or above this (of 255) are repainted


def _has_alpha(image: Image.Image) -> bool:
    """Whether the image carries transparency (an alpha channel or a transparent palette entry)."""
    return image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Any PIL mode as RGB; transparency is composited onto `background` (white)."""
    image = ImageOps.exif_transpose(image) or image
    if image.mode == "RGB":
        return image
    if _has_alpha(image):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if image.mode.startswith("I") or image.mode == "F":  # 16/32-bit or float grayscale: rescale to 8 bits
        values = np.asarray(image, dtype=np.float64)
        peak = 1.0 if values.max(initial=0) <= 1.0 else 255.0 if values.max() <= 255 else 65535.0
        return Image.fromarray(np.clip(values / peak * 255, 0, 255).round().astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def _round_to_multiple(value: float) -> int:
    """Nearest multiple of 8 within [64, 1024]."""
    return int(min(MAX_SIDE, max(MIN_SIDE, round(value / MULTIPLE) * MULTIPLE)))


def working_size(width: int, height: int) -> tuple[int, int]:
    """The (width, height) Stable Diffusion works at for an input of this size (see the module docstring)."""
    if width < 1 or height < 1:
        raise ValueError(f"image is empty ({width}x{height})")
    scale = min(1.0, MAX_SIDE / max(width, height))
    scale = max(scale, MIN_SIDE / min(width, height))
    return _round_to_multiple(width * scale), _round_to_multiple(height * scale)


def prepare_image(image: Image.Image | None, name: str = "image") -> Image.Image:
    """Check an input image and return it as RGB (its own size)."""
    if image is None:
        raise ValueError(f"{name} is empty: upload an image")
    if image.width < 1 or image.height < 1:
        raise ValueError(f"{name} is empty ({image.width}x{image.height})")
    return to_rgb(image)


def prepare_mask(mask: Image.Image | None, size: tuple[int, int]) -> Image.Image:
    """A binary L mask (255 = repaint) of `size`: white pixels are repainted; on a layer with transparency, every
    painted (not fully transparent) pixel is, whatever its color, as with the page's semi-transparent brush."""
    if mask is None:
        raise ValueError("mask is empty: paint over the part of the image to repaint, or upload a mask")
    if _has_alpha(mask) and (alpha := np.asarray(mask.convert("RGBA").getchannel("A"))).min() < 255:
        mask = Image.fromarray(np.where(alpha > 0, 255, 0).astype(np.uint8))
    elif _has_alpha(mask) or mask.mode.startswith("I") or mask.mode == "F":
        mask = to_rgb(mask, background=(0, 0, 0))  # 16-bit and float masks are read on their own scale
    gray = mask.convert("L")
    if gray.size != size:
        gray = gray.resize(size, Image.Resampling.NEAREST)
    binary = gray.point(lambda value: 255 if value >= MASK_THRESHOLD else 0)
    if binary.getbbox() is None:
        raise ValueError("mask is empty: paint over the part of the image to repaint")
    return binary


def eroded_mask(mask: Image.Image, blur: int) -> Image.Image:
    """A binary mask shrunk by `blur` px: the pixels whose (2 blur + 1)^2 square is all 255 (as PIL's MinFilter
    gives, edges replicated), by a summed-area table: linear time, where MinFilter takes seconds at blur 64."""
    side = 2 * blur + 1
    painted = np.pad(np.asarray(mask) == 255, blur, mode="edge").astype(np.int64)
    table = np.pad(painted.cumsum(axis=0).cumsum(axis=1), ((1, 0), (1, 0)))
    sums = table[side:, side:] - table[:-side, side:] - table[side:, :-side] + table[:-side, :-side]
    return Image.fromarray(np.where(sums == side * side, 255, 0).astype(np.uint8))


def feathered_mask(mask: Image.Image, blur: int) -> Image.Image:
    """Soften the mask edge inward by `blur` px: 0 outside the mask, 255 deep inside, a ramp in between."""
    if blur <= 0:
        return mask
    eroded = eroded_mask(mask, blur)
    soft = eroded.filter(ImageFilter.GaussianBlur(blur / 2))
    return Image.fromarray(np.minimum(np.asarray(soft), np.asarray(mask)))


def paste_outside_mask(original: Image.Image, generated: Image.Image, alpha: Image.Image) -> Image.Image:
    """Generated pixels where alpha is 255, the original's where it is 0 (exactly), blended in between."""
    if generated.size != original.size:
        generated = generated.resize(original.size, Image.Resampling.LANCZOS)
    return Image.composite(generated, original, alpha)


OUTPAINT_NOISE = 0.1  # std of the noise on the pre-filled area, in [0, 1] pixel units


def border_mask(size: tuple[int, int], margins: tuple[int, int, int, int]) -> Image.Image:
    """An L mask of a canvas of `size`: 255 on the (left, right, top, bottom) margins added by outpainting, 0 on
    the original picture inside them."""
    left, right, top, bottom = margins
    mask = np.full((size[1], size[0]), 255, dtype=np.uint8)
    mask[top : size[1] - bottom, left : size[0] - right] = 0
    return Image.fromarray(mask)


def outpaint_canvas(image: Image.Image, margins: tuple[int, int, int, int], seed: int) -> Image.Image:
    """`image` on a canvas grown by (left, right, top, bottom) px, the new area pre-filled with the nearest edge
    pixel's color plus seeded Gaussian noise (a start the model can reshape: a flat fill reads as a flat wall)."""
    import torch

    left, right, top, bottom = margins
    pixels = np.pad(np.asarray(image, dtype=np.float32) / 255, ((top, bottom), (left, right), (0, 0)), mode="edge")
    noise = torch.randn(pixels.shape, generator=torch.Generator().manual_seed(seed)).numpy() * OUTPAINT_NOISE
    border = np.asarray(border_mask((pixels.shape[1], pixels.shape[0]), margins))[..., None] == 255
    filled = np.where(border, np.clip(pixels + noise, 0, 1), pixels)
    canvas = Image.fromarray((filled * 255).round().astype(np.uint8))
    canvas.paste(image, (left, top))  # the original's own bytes, not a float round trip
    return canvas
