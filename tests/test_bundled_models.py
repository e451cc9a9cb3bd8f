"""Guidance measured on the shipped emoji models (models/emoji): the effects the tiny random models cannot show."""

import os

import numpy as np
import pytest
import torch

from pipelines import bundled
from pipelines.bundled import BUNDLED_LABEL

SHIPPED = os.path.join(bundled.REPO_ROOT, "models", "emoji")
STEPS = 20


def _shipped(*names):
    missing = [name for name in names if not bundled.weights_at(os.path.join(SHIPPED, bundled.WEIGHT_FILES[name]))]
    return pytest.mark.skipif(bool(missing), reason=f"bundled weights not shipped: {', '.join(missing)}")


@pytest.fixture()
def shipped_bundle(monkeypatch):
    from pipelines.cache import MODELS

    monkeypatch.setenv("BUNDLED_MODELS_DIR", SHIPPED)
    MODELS.clear()
    yield SHIPPED
    MODELS.clear()


def _pixels(images) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(image) for image in images])).permute(0, 3, 1, 2).float() / 255


@_shipped("ddpm")
def test_color_guidance_at_the_default_strength_halves_the_distance(shipped_bundle):
    from guidance import color_distance, parse_color
    from pipelines import unconditional as uncond

    def distance(scale: float) -> float:
        request = uncond.Request(
            model=BUNDLED_LABEL, steps=STEPS, batch_size=4, seed=7, color="#1e90ff", color_scale=scale
        )
        return color_distance(_pixels(uncond.generate(request).images), parse_color("#1e90ff")).mean().item()

    unguided, guided = distance(0.0), distance(uncond.DEFAULT_COLOR_SCALE)
    assert guided <= 0.5 * unguided, (guided, unguided)


@_shipped("ddpm", "clip", "clip-score")
def test_clip_guidance_raises_the_scoring_clips_similarity_to_the_prompt(shipped_bundle):
    from pipelines import unconditional as uncond
    from pipelines.clip import load_clip

    scorer = load_clip(f"local-dir:{os.path.join(SHIPPED, 'clip-score')}", None, torch.device("cpu"))
    prompt = "red heart"

    def similarity(scale: float) -> float:
        request = uncond.Request(
            model=BUNDLED_LABEL, steps=STEPS, batch_size=4, seed=11, prompt=prompt, clip_scale=scale
        )
        pixels = _pixels(uncond.generate(request).images)
        pixels = torch.nn.functional.interpolate(pixels, size=scorer.image_size, mode="bicubic", align_corners=False)
        mean, std = torch.tensor(scorer.mean).view(1, 3, 1, 1), torch.tensor(scorer.std).view(1, 3, 1, 1)
        with torch.no_grad():
            image = torch.nn.functional.normalize(scorer.model.encode_image((pixels - mean) / std).float(), dim=-1)
        text = torch.nn.functional.normalize(scorer.encode_text(prompt), dim=-1)
        return (image @ text.T).mean().item()

    unguided, guided = similarity(0.0), similarity(uncond.DEFAULT_CLIP_SCALE)
    assert guided > unguided + 0.05, (guided, unguided)


@_shipped("sd")
def test_sd_color_guidance_at_the_default_strength_halves_the_distance_and_keeps_the_emoji(shipped_bundle):
    from guidance import color_distance, parse_color
    from pipelines import stable_diffusion as sd

    def images(scale: float) -> torch.Tensor:
        request = sd.Request(
            task="txt2img",
            model=BUNDLED_LABEL,
            prompt="red heart",
            steps=STEPS,
            batch_size=2,
            seed=7,
            color="#1e90ff",
            color_scale=scale,
        )
        result = sd.generate(request)
        assert scale == 0 or result.info["color_decoder"].startswith("vae")  # the bundle's latent_rgb.json says so
        return _pixels([image.convert("RGB") for image in result.images])

    plain, guided = images(0.0), images(sd.DEFAULT_SD_COLOR_SCALE)
    target = parse_color("#1e90ff")
    assert color_distance(guided, target).mean() <= 0.5 * color_distance(plain, target).mean()
    # Still a heart, recoloured: the red heart's red pixels turn blue.
    red = (plain[:, 0] > 0.6) & (plain[:, 2] < 0.3)
    assert red.float().mean() > 0.2 and (guided[:, 2][red] > guided[:, 0][red]).float().mean() > 0.8


@_shipped("sd", "clip", "clip-score")
def test_sd_clip_guidance_makes_the_scoring_clip_name_the_prompt(shipped_bundle):
    """txt2img with no text prompt, CLIP-guided toward a name: the scoring CLIP (never the guiding one) ranks that
    name above the others far more often than without guidance."""
    from pipelines import stable_diffusion as sd
    from pipelines.clip import load_clip

    scorer = load_clip(f"local-dir:{os.path.join(SHIPPED, 'clip-score')}", None, torch.device("cpu"))
    names = ["red heart", "pizza", "fire", "frog"]  # 12 steps: the test is about the effect, not the quality
    with torch.no_grad():
        texts = torch.nn.functional.normalize(torch.cat([scorer.encode_text(name) for name in names]), dim=-1)

    def hits(scale: float) -> int:
        count = 0
        for index, name in enumerate(names):
            request = sd.Request(
                task="txt2img",
                model=BUNDLED_LABEL,
                prompt="",
                steps=12,
                seed=1000 + 10 * index,
                clip_prompt=name,
                clip_scale=scale,
            )
            image = _pixels([sd.generate(request).images[0].convert("RGB")])
            mean = torch.tensor(scorer.mean).view(1, 3, 1, 1)
            std = torch.tensor(scorer.std).view(1, 3, 1, 1)
            size = (scorer.image_size, scorer.image_size)
            pixels = torch.nn.functional.interpolate(image, size=size, mode="bicubic", antialias=True)
            with torch.no_grad():
                features = torch.nn.functional.normalize(scorer.model.encode_image((pixels - mean) / std), dim=-1)
            count += int((features @ texts.T).argmax().item() == index)
        return count

    unguided, guided = hits(0.0), hits(sd.DEFAULT_SD_CLIP_SCALE)
    assert guided >= unguided + 2, (guided, unguided)


def _reference_emoji(character: str):
    """The emoji as the data set renders it (Noto Color Emoji), on white."""
    from PIL import ImageFont

    from pipelines.images import to_rgb
    from training.build_emoji_dataset import FONT_PATH, FONT_SIZE, render

    if not os.path.exists(FONT_PATH):
        pytest.skip(f"{FONT_PATH} is missing: apt-get install -y fonts-noto-color-emoji")
    return to_rgb(render(character, ImageFont.truetype(FONT_PATH, FONT_SIZE), 64))


@_shipped("ddpm", "sd", "clip", "clip-score")
def test_guidance_toward_a_reference_picture_raises_the_scoring_clips_similarity_to_it(shipped_bundle):
    """Both bundled models, no text at all: the scoring CLIP (never the guiding one) finds the images far closer to
    the reference picture (a frog emoji) when guided toward it than unguided with the same seeds."""
    from pipelines import stable_diffusion as sd
    from pipelines import unconditional as uncond
    from pipelines.clip import load_clip

    scorer = load_clip(f"local-dir:{os.path.join(SHIPPED, 'clip-score')}", None, torch.device("cpu"))
    reference = _reference_emoji("\N{FROG FACE}")
    target = torch.nn.functional.normalize(scorer.encode_image(reference), dim=-1)

    def similarity(images) -> float:
        features = torch.cat([scorer.encode_image(image.convert("RGB")) for image in images])
        return (torch.nn.functional.normalize(features, dim=-1) @ target.T).mean().item()

    def pixel_images(scale: float):
        request = uncond.Request(
            model=BUNDLED_LABEL, steps=STEPS, batch_size=2, seed=11, clip_image=reference, clip_image_scale=scale
        )
        return uncond.generate(request).images

    def sd_images(scale: float):
        request = sd.Request(
            task="txt2img",
            model=BUNDLED_LABEL,
            prompt="",
            steps=12,  # the test is about the effect, not the quality
            batch_size=2,
            seed=1000,
            clip_image=reference,
            clip_image_scale=scale,
        )
        return sd.generate(request).images

    for images, default in ((pixel_images, uncond.DEFAULT_CLIP_SCALE), (sd_images, sd.DEFAULT_SD_CLIP_SCALE)):
        unguided, guided = similarity(images(0.0)), similarity(images(default))
        assert guided > unguided + 0.3, (images.__name__, guided, unguided)
