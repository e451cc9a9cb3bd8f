"""The Color-guided tab."""

from __future__ import annotations

import gradio as gr

from pipelines import unconditional as uncond
from ui.controls import PageParts, Tab, examples, guidance_options, outputs, sampling_controls, wire
from ui.handlers import color_guided
from ui.sweep import sweep_controls, wire_sweep
from ui_components import Slider


def build(page: PageParts) -> Tab:
    """The unconditional controls plus a target color and its strength."""
    with gr.Row():
        with gr.Column():
            controls = sampling_controls("color", page)
            with gr.Row():
                color = gr.ColorPicker("#ff8800", label="Target color", elem_id="color-color")
                color_scale = Slider(
                    0,
                    uncond.MAX_COLOR_SCALE,
                    value=uncond.DEFAULT_COLOR_SCALE,
                    step=0.05,
                    label="Color guidance strength (0 = off)",
                )
            compare, method, recurrence = guidance_options("color")
            sweep_parts = sweep_controls("color_guided")
            examples("color_guided", [color, color_scale, controls["seed"]])
        with gr.Column():
            tab_outputs = outputs("color", page)
    inputs = [controls[key] for key in ("model", "scheduler", "steps", "batch_size", "seed")]
    inputs += [color, color_scale, compare, controls["eta"], method, controls["batch_count"], recurrence]
    wire(color_guided, inputs, tab_outputs, "color_guided")
    wire_sweep("color_guided", sweep_parts, inputs, *tab_outputs[2:4])
    return Tab(inputs, tab_outputs[1])
