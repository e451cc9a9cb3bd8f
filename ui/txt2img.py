"""The txt2img tab."""

from __future__ import annotations

import functools

import gradio as gr

from pipelines import stable_diffusion as sd
from pipelines.bundled import hub_unreachable
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
from ui.handlers import txt2img
from ui.sweep import sweep_controls, wire_sweep
from ui_components import Slider


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
    width = gr.update(value=value, label=f"Width (native {size})")
    return width, gr.update(value=value, label=f"Height (native {size})")


def size_preset_update(model: str, preset: str):
    """Width and height of a size preset (square, portrait 2:3, landscape 3:2) at the model's native size."""
    width, height = sd.preset_size(native_size_or_none(model) or 512, preset)
    return width, height


def build(page: PageParts) -> Tab:
    """Prompts, sampling, size (with presets at the model's native size), batch, seed and optional guidance."""
    size = sd.default_size(sd.sd_models()[0])
    with gr.Row():
        with gr.Column():
            sd_model = sd_model_choice()
            prompt, negative = prompts("txt2img")
            scheduler, steps, guidance = sd_sampling_controls("txt2img")
            with gr.Row():
                width, height = (
                    Slider(sd.MIN_SIZE, sd.MAX_SIZE, value=sd.slider_size(size), step=8, label=label)
                    for label in (f"Width (native {size})", f"Height (native {size})")
                )
            with gr.Row():
                presets = {
                    preset: gr.Button(
                        f"{preset.title()} ({across}:{down})", size="sm", elem_id=f"txt2img-size-{preset}"
                    )
                    for preset, (across, down) in sd.SIZE_PRESETS.items()
                }
            batch_size, batch_count, seed = sd_batch_and_seed("txt2img", page)
            color_controls = sd_guidance_controls("txt2img")
            sweep_parts = sweep_controls("txt2img")
            examples("txt2img", [prompt, steps, seed])
        with gr.Column():
            tab_outputs = outputs("txt2img", page)
    inputs = [prompt, negative, scheduler, steps, guidance, width, height, batch_size, seed, sd_model]
    inputs += [*color_controls, batch_count]
    wire(txt2img, inputs, tab_outputs, "txt2img")
    wire_sweep("txt2img", sweep_parts, inputs, *tab_outputs[2:4])
    sd_model.change(native_size_update, sd_model, [width, height], api_visibility="private")
    for preset, button in presets.items():
        button.click(
            functools.partial(size_preset_update, preset=preset),
            sd_model,
            [width, height],
            api_visibility="private",
            concurrency_limit=None,
        )
    return Tab(inputs, tab_outputs[1])
