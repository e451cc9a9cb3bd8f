"""The six generation endpoints, built from the parameter table (pipelines.params): each takes its tab's keywords
with their defaults and descriptions, builds the request and runs it."""

from __future__ import annotations

import inspect

import gradio as gr

from pipelines.params import MAX_OUTPAINT, PICTURE, keywords, param
from pipelines.tabs import TABS, family
from ui.jobs import HANDLER_ONLY, run_job

# What each endpoint does: the first line of its description (view_api, the MCP tool's description).
SUMMARIES = {
    "unconditional": "Sample images from an unconditional diffusion model.",
    "color_guided": "Sample images pulled toward a color by a loss on the predicted clean image.",
    "clip_guided": "Sample images pulled by CLIP toward a text prompt and/or a reference picture (clip_image, "
    "clip_image_scale), optionally toward a color at the same time.",
    "txt2img": "Stable Diffusion text to image; optional color and CLIP guidance toward a text and/or a reference "
    "picture (color_scale, clip_scale, clip_image_scale above 0).",
    "img2img": "Stable Diffusion image to image; optional color and CLIP guidance toward a text and/or a reference "
    "picture (color_scale, clip_scale, clip_image_scale above 0).",
    "inpaint": "Stable Diffusion inpainting: white mask pixels are repainted, every other pixel is kept exactly; "
    "optional color and CLIP guidance (color_scale, clip_scale, clip_image_scale above 0) act on the repainted region "
    f"only. Outpainting: outpaint_left/right/top/bottom (px, multiples of 8, up to {MAX_OUTPAINT}) grow the canvas on "
    "that side; "
    "the new area is pre-filled from the edge colors plus noise and repainted (the mask is then optional), and every "
    "pixel of the original comes back unchanged.",
}
RETURNS = "Returns the images (PNGs carrying their parameters) and an info dict: every parameter, the seeds."
# The input picture has no default: an img2img or inpainting call without one is incomplete.
REQUIRED = ("image",)


def keyword_parameter(tab: str, name: str) -> inspect.Parameter:
    """A handler argument: the keyword with its default and type (a picture's type is left to Gradio's component;
    a default of None, as for the mask, is what makes Gradio and its MCP schema call an input optional)."""
    entry = param(tab, name)
    default = inspect.Parameter.empty if name in REQUIRED else entry.default
    annotation = inspect.Parameter.empty if entry.kind is PICTURE else entry.kind
    if default is None and entry.kind is not PICTURE:
        annotation = entry.kind | None
    return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=annotation)


def docstring(tab: str, signature: inspect.Signature) -> str:
    """The summary, then an Args block: one line per keyword (what it does, its range or choices, its default; a
    default of none is decided per request, as the description says)."""
    lines = []
    for name, parameter in signature.parameters.items():
        if name in ("request", "progress"):
            continue
        default = "" if parameter.default in (inspect.Parameter.empty, None) else f" (default {parameter.default!r})"
        lines.append(f"    {name}: {param(tab, name).describe()}{default}")
    return f"{SUMMARIES[tab]} {RETURNS}\n\nArgs:\n" + "\n".join(lines)


def endpoint(tab: str):
    """The handler of a tab's endpoint: its signature, annotations and docstring (what Gradio, view_api and the MCP
    schema read) from the parameter table; a call builds the tab's request from its keywords and runs the job."""
    special = [
        inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=gr.Request),
        inspect.Parameter(
            "progress", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=gr.Progress(), annotation=gr.Progress
        ),
    ]
    signature = inspect.Signature([*(keyword_parameter(tab, name) for name in keywords(tab)), *special])
    runs = family(tab)

    def handler(*args, **kwargs):
        arguments = signature.bind(*args, **kwargs)
        arguments.apply_defaults()
        values = arguments.arguments
        job = runs.request(tab, {key: value for key, value in values.items() if key not in HANDLER_ONLY})
        yield from run_job(
            runs.generate_steps,
            runs.validate,
            job,
            values["previews"],
            values["request"],
            values["progress"],
            values["batch_count"],
        )

    handler.__signature__ = signature
    handler.__annotations__ = {
        name: parameter.annotation
        for name, parameter in signature.parameters.items()
        if parameter.annotation is not inspect.Parameter.empty
    }
    handler.__name__ = handler.__qualname__ = tab
    handler.__doc__ = docstring(tab, signature)
    return handler


# Each tab's endpoint (pipelines.tabs lists the tabs).
HANDLERS = {tab: endpoint(tab) for tab in TABS}
