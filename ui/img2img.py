"""The img2img tab."""

from __future__ import annotations

import gradio as gr

from ui.controls import (
    PageParts,
    Tab,
    examples,
    outputs,
    prompts,
    sd_batch_and_seed,
    sd_guidance_controls,
    sd_model_choice,
    sd_sampling_controls,
    wire,
)
from ui.handlers import img2img
from ui.sweep import sweep_controls, wire_sweep
from ui_components import Image, Slider


def build(page: PageParts) -> Tab:
    """An input image, prompts and a strength (how much of the input is re-noised); its input comes first."""
    with gr.Row():
        with gr.Column():
            sd_model = sd_model_choice()
            image = Image(type="pil", image_mode=None, format="png", label="Input image", elem_id="img2img-image")
            prompt, negative = prompts("img2img")
            strength = Slider(0, 1, value=0.75, step=0.01, label="Strength (0 keeps the input, 1 replaces it)")
            scheduler, steps, guidance = sd_sampling_controls("img2img")
            batch_size, batch_count, seed = sd_batch_and_seed("img2img", page)
            color_controls = sd_guidance_controls("img2img")
            sweep_parts = sweep_controls("img2img")
            examples("img2img", [image, prompt, strength, seed])
        with gr.Column():
            tab_outputs = outputs("img2img", page)
    inputs = [image, prompt, negative, scheduler, steps, guidance, strength, batch_size, seed, sd_model]
    inputs += [*color_controls, batch_count]
    wire(img2img, inputs, tab_outputs, "img2img")
    wire_sweep("img2img", sweep_parts, inputs, *tab_outputs[2:4])
    return Tab(inputs, tab_outputs[1], picture=image)
