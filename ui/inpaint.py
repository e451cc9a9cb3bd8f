"""The inpainting tab (with outpainting)."""

from __future__ import annotations

import gradio as gr
import numpy as np
import PIL.Image

from pipelines import stable_diffusion as sd
from pipelines.images import MAX_OUTPAINT
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
)
from ui.handlers import inpaint
from ui.jobs import GPU_QUEUE
from ui.sweep import sweep_controls, wire_sweep
from ui_components import Image, ImageMask, Slider, name_inputs


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


def outpaint_controls():
    """Outpainting: px to add on each side of the image (0 = none)."""
    with gr.Accordion("Outpainting: extend the canvas (the new area is repainted, the image kept)", open=False):
        with gr.Row():
            sides = [
                Slider(
                    0, MAX_OUTPAINT, value=0, step=8, label=f"{side.title()} (px)", elem_id=f"inpaint-outpaint-{side}"
                )
                for side in ("left", "right", "top", "bottom")
            ]
    return sides


def build(page: PageParts) -> Tab:
    """An image editor to paint the mask on, prompts, strength and mask blur, outpainting margins; Generate splits
    the editor into image and mask first, so the page runs the same /inpaint code as the API."""
    with gr.Row():
        with gr.Column():
            sd_model = sd_model_choice()
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
            prompt, negative = prompts("inpaint")
            with gr.Row():
                strength = Slider(0, 1, value=1.0, step=0.01, label="Strength")
                mask_blur = Slider(0, sd.MAX_MASK_BLUR, value=4, step=1, label="Mask blur (px, inward)")
            scheduler, steps, guidance = sd_sampling_controls("inpaint")
            batch_size, batch_count, seed = sd_batch_and_seed("inpaint", page)
            color_controls = sd_guidance_controls("inpaint")
            outpaint = outpaint_controls()
            sweep_parts = sweep_controls("inpaint")
            examples("inpaint", [editor, prompt, seed])
            with gr.Accordion("Image and mask sent to the model", open=False), gr.Row():
                plain_image = Image(type="pil", image_mode=None, format="png", label="Image", interactive=False)
                plain_mask = Image(
                    type="pil", image_mode=None, format="png", label="Mask (white = repaint)", interactive=False
                )
        with gr.Column():
            generate_button, stop_button, gallery, info, previews = outputs("inpaint", page)

    editor.api_keyword = "image"  # what its refusals name: the picture it holds

    def split_first(button: gr.Button):
        return button.click(
            split_editor, editor, [plain_image, plain_mask], api_visibility="private", concurrency_limit=2
        )

    inputs = [plain_image, plain_mask, prompt, negative, scheduler, steps, guidance, strength, batch_size, seed]
    inputs += [mask_blur, sd_model, *color_controls, *outpaint, batch_count, previews]
    name_inputs(inpaint, inputs)
    split_first(generate_button).then(
        inpaint, inputs, [gallery, info], api_name="inpaint", concurrency_id=GPU_QUEUE, concurrency_limit=1
    )
    wire_sweep("inpaint", sweep_parts, inputs, gallery, info, first=split_first)
    return Tab(inputs, stop_button, picture=editor)
