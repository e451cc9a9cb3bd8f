"""Color strings from pickers, people and scripts parse to RGB in [0, 1]; anything else is a named error."""

import pytest

from guidance.colors import parse_color


@pytest.mark.parametrize(
    "text, expected",
    [
        ("#ff8800", (1.0, 136 / 255, 0.0)),
        ("ff8800", (1.0, 136 / 255, 0.0)),
        ("#FF8800", (1.0, 136 / 255, 0.0)),
        ("#f80", (1.0, 136 / 255, 0.0)),
        ("f80", (1.0, 136 / 255, 0.0)),
        ("#ff880080", (1.0, 136 / 255, 0.0)),
        ("#f808", (1.0, 136 / 255, 0.0)),
        ("rgb(255, 136, 0)", (1.0, 136 / 255, 0.0)),
        ("rgba(255, 136, 0, 0.5)", (1.0, 136 / 255, 0.0)),
        ("rgba(254.99999, 136.0, 0.0, 1)", (254.99999 / 255, 136 / 255, 0.0)),
        ("rgb(100%, 50%, 0%)", (1.0, 0.5, 0.0)),
        ("rgb(255 136 0 / 50%)", (1.0, 136 / 255, 0.0)),
        ("  RGB( 0 , 0 , 255 ) ", (0.0, 0.0, 1.0)),
        ("hsl(120, 100%, 50%)", (0.0, 1.0, 0.0)),
        ("hsla(240deg, 100%, 25%, 0.3)", (0.0, 0.0, 0.5)),
        ("hsl(0, 0%, 100%)", (1.0, 1.0, 1.0)),
        ("orange", (1.0, 165 / 255, 0.0)),
        ("RebeccaPurple", (102 / 255, 51 / 255, 153 / 255)),
    ],
)
def test_valid_colors(text, expected):
    assert parse_color(text) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "notacolor",
        "#ff888",
        "#gg0000",
        "hsv(0, 100%, 100%)",
        "rgb(300, 0, 0)",
        "rgb(1, 2)",
        "rgb(a, b, c)",
        "hsl(0, 150%, 50%)",
    ],
)
def test_invalid_colors_name_the_value(text):
    with pytest.raises(ValueError, match="color"):
        parse_color(text)


def test_error_quotes_the_bad_value():
    with pytest.raises(ValueError, match="'notacolor'"):
        parse_color("notacolor")


def test_non_string_is_an_error():
    with pytest.raises(ValueError):
        parse_color(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["hsl(1e400, 50%, 50%)", "rgb(1e400, 0, 0)", "hsl(nan, 50%, 50%)"])
def test_non_finite_components_are_refused(text):
    with pytest.raises(ValueError, match="color"):
        parse_color(text)


def test_a_long_bad_color_is_not_echoed_whole():
    with pytest.raises(ValueError) as caught:
        parse_color("x" * 100_000)
    assert len(str(caught.value)) < 200


def test_masked_color_loss_sees_only_the_region():
    import torch

    from guidance.color import ColorLoss

    image = torch.zeros(2, 3, 8, 8, requires_grad=True)
    region = torch.zeros(2, 1, 4, 4)
    region[:, :, :2] = 1  # the top half, at half the resolution (resized to the image by area)
    loss = ColorLoss((1.0, 0.0, 0.0), region)(image)
    (gradient,) = torch.autograd.grad(loss.sum(), image)
    assert gradient[:, :, 4:].abs().sum() == 0 and gradient[:, :, :4].abs().sum() > 0
    # Over the region it is the plain loss of the region alone.
    plain = ColorLoss((1.0, 0.0, 0.0))(image[:, :, :4].detach())
    torch.testing.assert_close(loss.detach(), plain)
