"""The Unconditional tab."""

from __future__ import annotations

import gradio as gr

from ui.controls import PageParts, Tab, examples, outputs, sampling_controls, wire
from ui.sweep import sweep_controls, wire_sweep

TAB = "unconditional"


def build(page: PageParts) -> Tab:
    """Model, scheduler, steps, batch and seed; Generate samples the model with no guidance."""
    with gr.Row():
        with gr.Column():
            controls = sampling_controls(TAB, "uncond", page)
            sweep_parts = sweep_controls(TAB)
            examples(TAB, [controls["steps"], controls["seed"]])
        with gr.Column():
            tab_outputs = outputs("uncond", page)
    inputs = wire(TAB, controls, tab_outputs)
    wire_sweep(TAB, sweep_parts, inputs, *tab_outputs[2:4])
    return Tab(inputs, tab_outputs[1])
