"""The CLIP-guided tab."""

from __future__ import annotations

import gradio as gr

from pipelines import unconditional as uncond
from pipelines.clip import DEFAULT_CUTS, MAX_CUTS
from ui.controls import PageParts, Tab, examples, guidance_options, outputs, reference_controls, sampling_controls, wire
from ui.handlers import clip_guided
from ui.sweep import sweep_controls, wire_sweep
from ui_components import Slider, Textbox


def build(page: PageParts) -> Tab:
    """The prompt first, then the sampling controls, CLIP strength and cutouts, an optional color and reference."""
    with gr.Row():
        with gr.Column():
            prompt = Textbox("", label="Prompt", placeholder="a smiling face with red hair", elem_id="clip-prompt")
            controls = sampling_controls("clip", page)
            with gr.Row():
                clip_scale = Slider(
                    0,
                    uncond.MAX_CLIP_SCALE,
                    value=uncond.DEFAULT_CLIP_SCALE,
                    step=0.1,
                    label="CLIP guidance strength (0 = off)",
                )
                cuts = Slider(1, MAX_CUTS, value=DEFAULT_CUTS, step=1, label="Cutouts per image")
            with gr.Row():
                color = gr.ColorPicker("#ff8800", label="Also pull toward a color")
                color_scale = Slider(
                    0, uncond.MAX_COLOR_SCALE, value=0, step=0.05, label="Color strength (0 = no color)"
                )
            reference = reference_controls("clip", uncond.DEFAULT_CLIP_SCALE, uncond.MAX_CLIP_SCALE)
            compare, method, recurrence = guidance_options("clip", uncond.DEFAULT_CLIP_RECURRENCE)
            sweep_parts = sweep_controls("clip_guided")
            examples("clip_guided", [prompt, clip_scale, controls["seed"]])
        with gr.Column():
            tab_outputs = outputs("clip", page)
    inputs = [controls[key] for key in ("model", "scheduler", "steps", "batch_size", "seed")]
    inputs += [prompt, clip_scale, cuts, color, color_scale, compare, controls["eta"], method, *reference]
    inputs += [controls["batch_count"], recurrence]
    wire(clip_guided, inputs, tab_outputs, "clip_guided")
    wire_sweep("clip_guided", sweep_parts, inputs, *tab_outputs[2:4])
    return Tab(inputs, tab_outputs[1])
