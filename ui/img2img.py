"""The img2img tab."""

from __future__ import annotations

import gradio as gr

from pipelines.params import param
from ui.controls import (
    PageParts,
    Tab,
    dropdown,
    examples,
    outputs,
    prompts,
    sd_batch_and_seed,
    sd_guidance_controls,
    sd_sampling_controls,
    slider,
    wire,
    wire_family_defaults,
)
from ui.sweep import sweep_controls, wire_sweep
from ui_components import Image

TAB = "img2img"


def build(page: PageParts) -> Tab:
    """An input image, prompts and a strength (how much of the input is re-noised); its input comes first."""
    with gr.Row():
        with gr.Column():
            controls = {"model": dropdown(TAB, "model")}
            controls["image"] = Image(
                type="pil", image_mode=None, format="png", label=param(TAB, "image").label, elem_id="img2img-image"
            )
            controls |= prompts(TAB, TAB)
            controls["strength"] = slider(TAB, "strength")
            controls |= sd_sampling_controls(TAB)
            controls |= sd_batch_and_seed(TAB, page)
            controls |= sd_guidance_controls(TAB)
            sweep_parts = sweep_controls(TAB)
            examples(TAB, [controls["image"], controls["prompt"], controls["strength"], controls["seed"]])
        with gr.Column():
            tab_outputs = outputs(TAB, page)
    inputs = wire(TAB, controls, tab_outputs)
    wire_family_defaults(TAB, controls)
    wire_sweep(TAB, sweep_parts, inputs, *tab_outputs[2:4])
    return Tab(inputs, tab_outputs[1], picture=controls["image"])
