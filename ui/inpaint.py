"""The inpainting tab (with outpainting)."""

from __future__ import annotations

import gradio as gr
import numpy as np
import PIL.Image

from pipelines.params import OUTPAINT, param
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
    tab_inputs,
    wire_family_defaults,
)
from ui.handlers import HANDLERS
from ui.jobs import GPU_QUEUE
from ui.sweep import sweep_controls, wire_sweep
from ui_components import Image, ImageMask

TAB = "inpaint"


def mask_from_editor(editor_value: dict | None) -> tuple[PIL.Image.Image, PIL.Image.Image]:
    """(image, mask) from a gr.ImageEditor/gr.ImageMask value: painted layer pixels (alpha above 0, however
    transparent the brush) are the mask, 255; the rest 0."""
    if not editor_value or editor_value.get("background") is None:
        raise ValueError("image is empty: upload an image, then paint the part to repaint")
    background = editor_value["background"]
    mask = np.zeros((background.height, background.width), dtype=np.uint8)
    for layer in editor_value.get("layers") or []:
        if layer is None:
            continue
        alpha = layer.convert("RGBA").getchannel("A")
        if alpha.size != background.size:
            alpha = alpha.resize(background.size, PIL.Image.Resampling.NEAREST)
        mask = np.maximum(mask, np.asarray(alpha))
    # Any paint counts: the page's brush is semi-transparent (the picture stays visible under the mask).
    return background, PIL.Image.fromarray(np.where(mask > 0, 255, 0).astype(np.uint8))


def split_editor(editor_value):
    """The painted editor's (image, mask): the UI's painting then goes through the same /inpaint code as the API."""
    try:
        return mask_from_editor(editor_value)
    except ValueError as error:
        raise gr.Error(str(error)) from None


def outpaint_controls() -> dict[str, gr.components.Component]:
    """Outpainting: px to add on each side of the image (0 = none), two sides a row."""
    sliders = {}
    with gr.Accordion("Outpainting: extend the canvas (the new area is repainted, the image kept)", open=False):
        for pair in (OUTPAINT[:2], OUTPAINT[2:]):
            with gr.Row():
                sliders |= {name: slider(TAB, name, elem_id=f"inpaint-{name.replace('_', '-')}") for name in pair}
    return sliders


def build(page: PageParts) -> Tab:
    """An image editor to paint the mask on, prompts, strength and mask blur, outpainting margins; Generate splits
    the editor into image and mask first, so the page runs the same /inpaint code as the API."""
    with gr.Row():
        with gr.Column():
            controls = {"model": dropdown(TAB, "model")}
            editor = ImageMask(
                type="pil",
                format="png",
                label="Upload an image, then paint over what to repaint",
                elem_id="inpaint-editor",
                layers=False,
                height=420,
                # Semi-transparent: the picture stays visible under the mask; the size follows the image.
                brush=gr.Brush(colors=[("#ff3b30", 0.55)], default_size="auto", color_mode="fixed"),
            )
            controls |= prompts(TAB, TAB)
            with gr.Row():
                controls["strength"] = slider(TAB, "strength")
                controls["mask_blur"] = slider(TAB, "mask_blur")
            controls |= sd_sampling_controls(TAB)
            controls |= sd_batch_and_seed(TAB, page)
            controls |= sd_guidance_controls(TAB)
            controls |= outpaint_controls()
            sweep_parts = sweep_controls(TAB)
            examples(TAB, [editor, controls["prompt"], controls["seed"]])
            with gr.Accordion("Image and mask sent to the model", open=False), gr.Row():
                for name in ("image", "mask"):
                    entry = param(TAB, name)
                    controls[name] = Image(
                        type="pil", image_mode=None, format="png", label=entry.page_label(), interactive=False
                    )
        with gr.Column():
            generate_button, stop_button, gallery, info, controls["previews"] = outputs(TAB, page)

    editor.api_keyword = "image"  # what its refusals name: the picture it holds

    def split_first(button: gr.Button):
        return button.click(
            split_editor, editor, [controls["image"], controls["mask"]], api_visibility="private", concurrency_limit=2
        )

    inputs = tab_inputs(TAB, controls)
    wire_family_defaults(TAB, controls)
    split_first(generate_button).then(
        HANDLERS[TAB], inputs, [gallery, info], api_name=TAB, concurrency_id=GPU_QUEUE, concurrency_limit=1
    )
    wire_sweep(TAB, sweep_parts, inputs, gallery, info, first=split_first)
    return Tab(inputs, stop_button, picture=editor)
