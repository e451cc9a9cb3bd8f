"""Weighted and long prompts: stable-diffusion-webui's attention syntax read into compel's, embedded by compel for SD
and SDXL exactly as the library itself embeds them; plain prompts keep diffusers' own embeddings."""

import numpy as np
import pytest
import torch

from pipelines import stable_diffusion as sd
from pipelines.prompts import compel_syntax, emphasis, weighted

CASES = {
    "a (red:1.5) fox": [("a ", 1.0), ("red", 1.5), (" fox", 1.0)],
    "((red)) fox": [("red", 1.21), (" fox", 1.0)],
    "a [blurry] fox": [("a ", 1.0), ("blurry", 1 / 1.1), (" fox", 1.0)],
    r"a \(cat\) here": [("a (cat) here", 1.0)],
    "a (red fox": [("a ", 1.0), ("red fox", 1.1)],  # unclosed: weighs the rest
    "(a [b] c:1.3)": [("a ", 1.3), ("b", 1.3 / 1.1), (" c", 1.3)],
    "a red) fox]": [("a red) fox]", 1.0)],  # stray closers are text
    "time: 3:30": [("time: 3:30", 1.0)],
}


@pytest.mark.parametrize("prompt", list(CASES))
def test_the_attention_syntax_is_read_as_stable_diffusion_webui_reads_it(prompt):
    pieces = emphasis(prompt)
    assert [text for text, _ in pieces] == [text for text, _ in CASES[prompt]]
    assert [weight for _, weight in pieces] == pytest.approx([weight for _, weight in CASES[prompt]])


def test_compel_syntax_carries_the_weights_and_escapes_literal_parentheses():
    from compel.prompt_parser import PromptParser

    assert compel_syntax("a (red:1.5) fox") == "a  (red)1.5  fox"
    read = PromptParser().parse_conjunction(compel_syntax("x (a [b] c) y")).prompts[0].children
    assert [(piece.text, round(piece.weight, 4)) for piece in read] == [
        ("x", 1.0), ("a", 1.1), ("b", 1.0), ("c", 1.1), ("y", 1.0)
    ]  # fmt: skip
    assert compel_syntax(r"a \(cat\)") == r"a \(cat\)"
    assert not weighted("a red fox (red:1.0)") and weighted("[x]")


def _conditioning(request):
    pipeline = sd.build_pipeline(request.task, request.scheduler, request.model)[0]
    return pipeline, sd._conditioning(pipeline, request, cfg=True)


@pytest.mark.parametrize("family", ["configured", "sdxl"])
def test_weighted_and_long_prompts_get_compels_own_embeddings(family, request):
    """The tabs' conditioning of a weighted prompt (and of a long one) is compel's for that pipeline, repeated for the
    batch; SDXL's pooled embeddings too; a long prompt is read whole, in two chunks of 77 tokens."""
    from compel import CompelForSD, CompelForSDXL

    request.getfixturevalue(family)
    for prompt, negative in (("a (red:1.4) [small] heart", "blurry"), ("a very red heart " * 30, "(ugly:1.3)")):
        checked = sd.validate(sd.Request(task="txt2img", prompt=prompt, negative_prompt=negative, batch_size=2))
        pipeline, (text, uncond, added) = _conditioning(checked)
        wrapper = CompelForSDXL if family == "sdxl" else CompelForSD
        with torch.no_grad():
            own = wrapper(pipeline)(compel_syntax(prompt), negative_prompt=compel_syntax(negative))
        torch.testing.assert_close(text, own.embeds.repeat(2, 1, 1))
        torch.testing.assert_close(uncond, own.negative_embeds.repeat(2, 1, 1))
        if family == "sdxl":
            pooled = torch.cat([own.negative_pooled_embeds, own.pooled_embeds]).repeat_interleave(2, 0)
            torch.testing.assert_close(added["text_embeds"], pooled)
        assert text.shape[1] == (154 if len(prompt) > 100 else 77)


def test_a_plain_prompt_keeps_diffusers_embeddings_and_weights_change_the_image(configured):
    checked = sd.validate(sd.Request(task="txt2img", prompt="a red heart (red:1.0)", negative_prompt="blurry"))
    pipeline, (text, uncond, _) = _conditioning(checked)
    own, own_uncond = pipeline.encode_prompt("a red heart (red:1.0)", pipeline.device, 1, True, "blurry")
    torch.testing.assert_close(text, own)
    torch.testing.assert_close(uncond, own_uncond)
    base = dict(task="txt2img", steps=3, seed=4, negative_prompt="blurry")
    plain = sd.generate(sd.Request(prompt="a red heart", **base))
    strong = sd.generate(sd.Request(prompt="a (red:1.8) heart", **base))
    assert strong.info["prompt_reading"].startswith("weighted") and plain.info["prompt_reading"] == "plain"
    assert not np.array_equal(np.asarray(plain.images[0]), np.asarray(strong.images[0]))
    again = sd.generate(sd.Request(prompt="a (red:1.8) heart", **base))
    np.testing.assert_array_equal(np.asarray(strong.images[0]), np.asarray(again.images[0]))
