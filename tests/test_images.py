"""Input images and masks: any mode and size in, the documented working size, exact pixels outside the mask."""

import numpy as np
import pytest
from PIL import Image

from pipelines.images import (
    feathered_mask,
    paste_outside_mask,
    prepare_image,
    prepare_mask,
    to_rgb,
    working_size,
)
from ui.inpaint import mask_from_editor


@pytest.mark.parametrize(
    "size, expected",
    [
        ((512, 512), (512, 512)),
        ((100, 70), (96, 72)),  # nearest multiples of 8
        ((2048, 1024), (1024, 512)),  # longer side down to 1024
        ((4000, 3000), (1024, 768)),
        ((30, 20), (96, 64)),  # shorter side up to 64
        ((13, 13), (64, 64)),
        ((5000, 10), (1024, 64)),  # extreme ratio: clamped to the limits
    ],
)
def test_working_size_rule(size, expected):
    width, height = working_size(*size)
    assert (width, height) == expected
    assert width % 8 == 0 and height % 8 == 0


def test_working_size_keeps_aspect_ratio_within_rounding():
    for width, height in [(1234, 567), (333, 777), (640, 480), (1920, 1080)]:
        new_width, new_height = working_size(width, height)
        assert abs(new_width / new_height - width / height) < 0.05 * width / height


@pytest.mark.parametrize(
    "mode, color",
    [
        ("RGBA", (255, 0, 0, 255)),
        ("L", 128),
        ("P", 5),
        ("CMYK", (0, 255, 0, 0)),
        ("I;16", 65535),
        ("1", 1),
        ("LA", (9, 255)),
    ],
)
def test_every_mode_becomes_rgb(mode, color):
    image = to_rgb(Image.new(mode, (10, 6), color))
    assert image.mode == "RGB" and image.size == (10, 6)


def test_transparency_is_composited_on_white():
    image = to_rgb(Image.new("RGBA", (2, 2), (255, 0, 0, 0)))
    assert image.getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_grayscale_keeps_its_brightness():
    assert to_rgb(Image.new("I;16", (2, 2), 65535)).getpixel((0, 0)) == (255, 255, 255)


def test_empty_image_is_a_named_error():
    with pytest.raises(ValueError, match="image is empty"):
        prepare_image(None)


def test_mask_of_another_size_is_stretched_and_binarised():
    mask = Image.new("L", (10, 5), 0)
    mask.paste(200, (0, 0, 5, 5))
    prepared = prepare_mask(mask, (40, 20))
    values = np.asarray(prepared)
    assert prepared.size == (40, 20) and set(np.unique(values)) == {0, 255}
    assert values[:, :20].min() == 255 and values[:, 20:].max() == 0


def test_mask_from_rgba_uses_opaque_white_only():
    mask = Image.new("RGBA", (4, 4), (255, 255, 255, 0))
    mask.putpixel((1, 1), (255, 255, 255, 255))
    assert np.asarray(prepare_mask(mask, (4, 4))).sum() == 255


def test_a_layer_with_transparency_is_masked_wherever_it_is_painted_as_in_the_page():
    """A transparent layer painted with the page's semi-transparent colored brush (alpha 140, dark red) is the same
    mask through the API as in the editor; an opaque RGBA mask is still read by its whiteness."""
    layer = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    layer.putpixel((1, 1), (255, 59, 48, 140))
    layer.putpixel((2, 2), (0, 0, 0, 1))
    assert np.argwhere(np.asarray(prepare_mask(layer, (4, 4)))).tolist() == [[1, 1], [2, 2]]
    _, editor_mask = mask_from_editor({"background": Image.new("RGB", (4, 4)), "layers": [layer]})
    assert np.array_equal(np.asarray(prepare_mask(layer, (4, 4))), np.asarray(editor_mask))
    opaque = Image.new("RGBA", (4, 4), (0, 0, 0, 255))
    opaque.putpixel((3, 0), (255, 255, 255, 255))
    assert np.argwhere(np.asarray(prepare_mask(opaque, (4, 4)))).tolist() == [[0, 3]]


def test_blank_mask_is_a_named_error():
    with pytest.raises(ValueError, match="mask is empty"):
        prepare_mask(Image.new("L", (8, 8), 0), (8, 8))


@pytest.mark.parametrize("blur", [0, 1, 4, 12])
def test_feathering_stays_inside_the_mask(blur):
    mask = Image.new("L", (128, 128), 0)
    mask.paste(255, (16, 16, 112, 112))
    soft = np.asarray(feathered_mask(mask, blur))
    assert soft[np.asarray(mask) == 0].max() == 0
    assert soft[64, 64] == 255


def test_paste_keeps_original_pixels_outside_the_mask_exactly():
    rng = np.random.default_rng(0)
    original = Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    generated = Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8))  # working size
    mask = Image.new("L", (60, 40), 0)
    mask.paste(255, (10, 10, 30, 30))
    result = np.asarray(paste_outside_mask(original, generated, feathered_mask(mask, 3)))
    outside = np.asarray(mask) == 0
    assert result.shape == (40, 60, 3)
    np.testing.assert_array_equal(result[outside], np.asarray(original)[outside])


def test_mask_from_editor_takes_painted_layer_pixels():
    background = Image.new("RGBA", (20, 10), (10, 20, 30, 255))
    layer = Image.new("RGBA", (20, 10), (0, 0, 0, 0))
    layer.paste((0, 0, 0, 255), (2, 2, 6, 6))
    image, mask = mask_from_editor({"background": background, "layers": [layer], "composite": background})
    assert image.size == (20, 10)
    assert np.asarray(mask)[2:6, 2:6].min() == 255 and np.asarray(mask).sum() == 255 * 16


def test_a_semi_transparent_brush_stroke_is_a_full_mask():
    background = Image.new("RGB", (20, 10), (10, 20, 30))
    layer = Image.new("RGBA", (20, 10), (0, 0, 0, 0))
    layer.paste((255, 59, 48, 90), (4, 1, 9, 8))  # the page's brush is 55% opaque, less at a stroke's edge
    _, mask = mask_from_editor({"background": background, "layers": [layer], "composite": background})
    assert np.asarray(mask)[1:8, 4:9].min() == 255 and np.asarray(mask).sum() == 255 * 35


def test_editor_without_image_is_a_named_error():
    with pytest.raises(ValueError, match="image is empty"):
        mask_from_editor({"background": None, "layers": [], "composite": None})
