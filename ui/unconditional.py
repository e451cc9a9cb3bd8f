"""The Unconditional tab."""

from __future__ import annotations

import gradio as gr

from ui.controls import PageParts, Tab, examples, outputs, sampling_controls, wire
from ui.handlers import unconditional
from ui.sweep import sweep_controls, wire_sweep


def build(page: PageParts) -> Tab:
    """Model, scheduler, steps, batch and seed; Generate samples the model with no guidance."""
    with gr.Row():
        with gr.Column():
            controls = sampling_controls("uncond", page)
            sweep_parts = sweep_controls("unconditional")
            examples("unconditional", [controls["steps"], controls["seed"]])
        with gr.Column():
            tab_outputs = outputs("uncond", page)
    keys = ("model", "scheduler", "steps", "batch_size", "seed", "eta", "batch_count")
    inputs = [controls[key] for key in keys]
    wire(unconditional, inputs, tab_outputs, "unconditional")
    wire_sweep("unconditional", sweep_parts, inputs, *tab_outputs[2:4])
    return Tab(inputs, tab_outputs[1])
