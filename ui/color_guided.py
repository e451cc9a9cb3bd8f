"""The Color-guided tab."""

from __future__ import annotations

import gradio as gr

from ui.controls import (
    PageParts,
    Tab,
    color_picker,
    examples,
    guidance_options,
    outputs,
    sampling_controls,
    slider,
    wire,
)
from ui.sweep import sweep_controls, wire_sweep

TAB = "color_guided"


def build(page: PageParts) -> Tab:
    """The unconditional controls plus a target color and its strength."""
    with gr.Row():
        with gr.Column():
            controls = sampling_controls(TAB, "color", page)
            with gr.Row():
                controls["color"] = color_picker(TAB, "color")
                controls["color_scale"] = slider(TAB, "color_scale")
            controls |= guidance_options(TAB, "color")
            sweep_parts = sweep_controls(TAB)
            examples(TAB, [controls["color"], controls["color_scale"], controls["seed"]])
        with gr.Column():
            tab_outputs = outputs("color", page)
    inputs = wire(TAB, controls, tab_outputs)
    wire_sweep(TAB, sweep_parts, inputs, *tab_outputs[2:4])
    return Tab(inputs, tab_outputs[1])
