"""The CLIP-guided tab."""

from __future__ import annotations

import gradio as gr

from pipelines.params import param
from ui.controls import (
    PageParts,
    Tab,
    color_picker,
    examples,
    guidance_options,
    outputs,
    radio,
    reference_controls,
    sampling_controls,
    slider,
    wire,
)
from ui.sweep import sweep_controls, wire_sweep
from ui_components import Textbox

TAB = "clip_guided"


def build(page: PageParts) -> Tab:
    """The prompt first, then the sampling controls, CLIP strength, cutouts and method, an optional color and
    reference."""
    with gr.Row():
        with gr.Column():
            entry = param(TAB, "prompt")
            prompt = Textbox(
                entry.default, label=entry.label, placeholder="a smiling face with red hair", elem_id="clip-prompt"
            )
            controls = {"prompt": prompt, **sampling_controls(TAB, "clip", page)}
            with gr.Row():
                controls["clip_scale"] = slider(TAB, "clip_scale")
                controls["cuts"] = slider(TAB, "cuts")
            controls["clip_method"] = radio(TAB, "clip_method", elem_id="clip-method")
            with gr.Row():
                controls["color"] = color_picker(TAB, "clip")
                controls["color_scale"] = slider(TAB, "color_scale")
            controls |= reference_controls(TAB, "clip")
            controls |= guidance_options(TAB, "clip")
            sweep_parts = sweep_controls(TAB)
            examples(TAB, [prompt, controls["clip_scale"], controls["seed"]])
        with gr.Column():
            tab_outputs = outputs("clip", page)
    inputs = wire(TAB, controls, tab_outputs)
    wire_sweep(TAB, sweep_parts, inputs, *tab_outputs[2:4])
    return Tab(inputs, tab_outputs[1])
