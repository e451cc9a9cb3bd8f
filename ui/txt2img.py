"""The txt2img tab."""

from __future__ import annotations

import functools

import gradio as gr

from pipelines import stable_diffusion as sd
from pipelines.bundled import hub_unreachable
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

TAB = "txt2img"
SIDES = ("width", "height")


def native_size_or_none(model: str) -> int | None:
    """A Stable Diffusion model's native size, None where its config cannot be read."""
    try:  # with the Hub unreachable, only the local cache (no retries against a network that is not there)
        return sd.native_size(model, local_files_only=hub_unreachable())
    except Exception:
        return None


def native_size_update(model: str):
    """Width and height sliders set to a Stable Diffusion model's native size when the model changes."""
    size = native_size_or_none(model)
    if size is None:  # config not reachable: leave the sliders as they are
        return gr.update(), gr.update()
    value = sd.slider_size(size)
    width, height = (gr.update(value=value, label=f"{param(TAB, side).label} (native {size})") for side in SIDES)
    return width, height


def size_preset_update(model: str, preset: str):
    """Width and height of a size preset (square, portrait 2:3, landscape 3:2) at the model's native size."""
    width, height = sd.preset_size(native_size_or_none(model) or 512, preset)
    return width, height


def hires_controls() -> dict:
    """The hires fix: upscale factor (1 = off), upscaler, second-pass steps and its denoising strength."""
    with gr.Accordion("Hires fix", open=False):
        with gr.Row():
            controls = {
                "hires_scale": slider(TAB, "hires_scale", elem_id="txt2img-hires-scale"),
                "hires_upscaler": dropdown(TAB, "hires_upscaler"),
            }
        with gr.Row():
            controls["hires_steps"] = slider(TAB, "hires_steps")
            controls["strength"] = slider(TAB, "strength")  # the second pass's denoising strength
    return controls


def build(page: PageParts) -> Tab:
    """Prompts, sampling, size (with presets at the model's native size), batch, seed and optional guidance."""
    size = sd.default_size(sd.sd_models()[0])
    with gr.Row():
        with gr.Column():
            controls = {"model": dropdown(TAB, "model"), **prompts(TAB, TAB), **sd_sampling_controls(TAB)}
            with gr.Row():
                for side in SIDES:
                    controls[side] = slider(
                        TAB, side, value=sd.slider_size(size), label=f"{param(TAB, side).label} (native {size})"
                    )
            with gr.Row():
                presets = {
                    preset: gr.Button(
                        f"{preset.title()} ({across}:{down})", size="sm", elem_id=f"txt2img-size-{preset}"
                    )
                    for preset, (across, down) in sd.SIZE_PRESETS.items()
                }
            controls |= sd_batch_and_seed(TAB, page)
            controls |= hires_controls()
            controls |= sd_guidance_controls(TAB)
            sweep_parts = sweep_controls(TAB)
            examples(TAB, [controls["prompt"], controls["steps"], controls["seed"]])
        with gr.Column():
            tab_outputs = outputs(TAB, page)
    inputs = wire(TAB, controls, tab_outputs)
    wire_family_defaults(TAB, controls)
    wire_sweep(TAB, sweep_parts, inputs, *tab_outputs[2:4])
    sizes = [controls[side] for side in SIDES]
    controls["model"].change(native_size_update, controls["model"], sizes, api_visibility="private")
    for preset, button in presets.items():
        button.click(
            functools.partial(size_preset_update, preset=preset),
            controls["model"],
            sizes,
            api_visibility="private",
            concurrency_limit=None,
        )
    return Tab(inputs, tab_outputs[1])
