"""Build the emoji data set: Noto Color Emoji glyphs on a plain background, centred, 64x64, with their names.

    python training/build_emoji_dataset.py            # -> data/emoji64.npz (git-ignored)

Deterministic: emoji are taken in code-point order from the `emoji` package's list of fully-qualified emoji,
skin-tone variants are skipped, and sequences (flags, ZWJ families...) are kept only where the font draws them as
one glyph. The font (Debian package `fonts-noto-color-emoji`) is under the SIL Open Font License 1.1.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_PATH = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
FONT_SIZE = 109  # the only size the bitmap font renders at
SKIN_TONES = {chr(code) for code in range(0x1F3FB, 0x1F400)}
BACKGROUND = (255, 255, 255)
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "emoji64.npz")


def emoji_names() -> list[tuple[str, str]]:
    """(emoji, name) for every fully-qualified emoji without a skin tone, in code-point order."""
    import emoji

    entries = []
    for character, data in emoji.EMOJI_DATA.items():
        if data.get("status") != emoji.STATUS["fully_qualified"] or SKIN_TONES & set(character):
            continue
        name = data["en"].strip(":").replace("_", " ")
        entries.append((character, name))
    return sorted(entries, key=lambda entry: [ord(char) for char in entry[0]])


def render(character: str, font: ImageFont.FreeTypeFont, size: int) -> Image.Image | None:
    """The emoji centred on a plain square background at `size`, or None where the font has no single glyph."""
    canvas = Image.new("RGBA", (FONT_SIZE * 4, FONT_SIZE * 2), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((FONT_SIZE // 2, FONT_SIZE // 2), character, font=font, embedded_color=True)
    box = canvas.getchannel("A").getbbox()
    if box is None:
        return None
    width, height = box[2] - box[0], box[3] - box[1]
    if width > 1.4 * FONT_SIZE or height > 1.4 * FONT_SIZE:  # drawn as several glyphs side by side
        return None
    side = max(width, height)
    square = Image.new("RGBA", (side, side), (*BACKGROUND, 255))
    glyph = canvas.crop(box)
    square.alpha_composite(glyph, ((side - width) // 2, (side - height) // 2))
    return square.convert("RGB").resize((size, size), Image.Resampling.LANCZOS)


def build(limit: int | None = None, size: int = 64, font_path: str = FONT_PATH) -> dict[str, np.ndarray]:
    """Render the data set in memory: images (N, size, size, 3) uint8, names and emoji (N,) str."""
    font = ImageFont.truetype(font_path, FONT_SIZE)
    images, names, characters = [], [], []
    for character, name in emoji_names():
        image = render(character, font, size)
        if image is None:
            continue
        images.append(np.asarray(image))
        names.append(name)
        characters.append(character)
        if limit is not None and len(images) >= limit:
            break
    return {"images": np.stack(images), "names": np.array(names), "emoji": np.array(characters)}


def load_dataset(path: str = DEFAULT_OUT) -> dict[str, np.ndarray]:
    """The saved data set: images uint8 (N, H, W, 3), names and emoji str (N,)."""
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--limit", type=int, default=None, help="stop after this many emoji (tests)")
    parser.add_argument("--grid", default=None, help="also write a PNG grid of the first 64 emoji here")
    args = parser.parse_args()
    if not os.path.exists(FONT_PATH):
        sys.exit(f"{FONT_PATH} is missing: apt-get install -y fonts-noto-color-emoji")
    data = build(args.limit, args.size)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    np.savez_compressed(args.out, **data)
    print(f"{len(data['images'])} emoji at {args.size}x{args.size} -> {args.out}")
    if args.grid:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from training.common import save_grid

        save_grid(data["images"][:64], args.grid)


if __name__ == "__main__":
    main()
