"""Guided-diffusion studio: the Gradio UI. Handlers parse inputs, call `pipelines`, return images and info."""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import time
from dataclasses import dataclass, field, replace

import gradio as gr
import PIL.Image

from guidance.sampler import GRADIENT_METHODS
from pipelines import stable_diffusion as sd
from pipelines import unconditional as uncond
from pipelines.bundled import BUNDLED_LABEL, bundled_path, hub_unreachable, status_text
from pipelines.cache import ModelUnavailableError
from pipelines.clip import get_clip
from pipelines.config import setting, uncond_models
from pipelines.device import default_device
from pipelines.gpu import on_zero_gpu, simulating
from pipelines.images import MAX_OUTPAINT, mask_from_editor
from pipelines.infotext import decoder_choice, pixel_task, request_values
from pipelines.jobs import STOP_FLAGS, JobFailed, Preview, StepDone
from pipelines.outputs import image_parameters, save_png, zip_outputs
from pipelines.sweep import MAX_CELLS, SWEEPABLE, plan_sweep, sweep_grid, value_label
from pipelines.validation import number, resolve_seed
from ui_components import Dropdown, Image, Number, Radio, Slider, Textbox, name_inputs

logger = logging.getLogger("studio")
TITLE = "Guided-diffusion studio"
INTRO = (
    "Sample diffusion models and steer them with color and CLIP guidance, in every tab. Guidance strength is the "
    "total distance (RMS, in [-1, 1] pixel units; latent units for Stable Diffusion) that guidance may move the "
    "predicted clean image over a run; the same seed gives the same image."
)
PROGRESS_PER_SECOND = 10
GPU_QUEUE = "gpu"  # every generating event shares one queue slot: one job on the accelerator at a time
GRADIENT_LABELS = [
    ("x0 (fast: no backprop through the UNet)", "x0"),
    ("through the UNet (slower, more memory)", "unet"),
]
assert [value for _, value in GRADIENT_LABELS] == list(GRADIENT_METHODS)


def _session(request: gr.Request | None) -> str:
    """The caller's session id (the browser tab or gradio_client instance), used for the Stop button."""
    return getattr(request, "session_hash", None) or "anonymous"


def _refused(message: str) -> gr.Error:
    """The error for a request refused as asked (bad value, over a limit, model unavailable): one log line, no
    traceback, since nothing in the server went wrong."""
    logger.info("refused: %s", message[:300])
    return gr.Error(message, print_exception=False)


@contextlib.contextmanager
def _job_token(request: gr.Request | None):
    """The caller's stop token for the block, taken before validation (which may be slow: a Stop then still finds
    the job); an unexpected error inside becomes a gr.Error, and the server keeps serving."""
    session = _session(request)
    token = STOP_FLAGS.start(session)
    try:
        yield token
    except gr.Error:
        raise
    except Exception as error:  # a config that cannot be read, the worker died, a ZeroGPU quota...: keep serving
        logger.exception("generation failed")
        raise gr.Error(f"generation failed: {type(error).__name__}: {error}") from None
    finally:
        STOP_FLAGS.finish(session, token)


def _validated(validate, job):
    """`validate(job)`, a refusal naming the bad value (or the model that cannot load) as a gr.Error."""
    try:
        return validate(job)
    except (ValueError, ModelUnavailableError) as error:  # unavailable: one sentence saying what to pick instead
        raise _refused(str(error)) from None


def _stream(generate_steps, job, token, previews: bool, progress: gr.Progress, desc: str = "Sampling"):
    """Run one validated job: yield (gallery, info) previews while it samples, report its progress, and return its
    result; a failure raises gr.Error."""
    progress(0, desc="Loading models")
    reported, result = 0.0, None
    for event in generate_steps(job, token, bool(previews)):
        if isinstance(event, Preview):
            caption = f"preview · step {event.done} of {event.total}"
            yield [(image, caption) for image in event.images], _preview_info(event)
        elif isinstance(event, StepDone):
            # At most PROGRESS_PER_SECOND updates: a small model's hundreds of steps a second would flood the page.
            if time.monotonic() - reported >= 1 / PROGRESS_PER_SECOND or event.done == event.total:
                progress((event.done, event.total), desc=desc, unit="steps")
                reported = time.monotonic()
        elif isinstance(event, JobFailed):
            if event.kind == "failed":
                raise gr.Error(event.message)  # a real failure: its traceback goes to the log
            raise _refused(event.message)
        else:
            result = event
    if result is None:
        raise gr.Error("generation failed: the GPU worker ended without a result")
    return result


def _stopped_note(info: dict) -> str:
    """ "stopped at step k of n" for an interrupted result (also shown as a notice), else ""."""
    if not info.get("interrupted"):
        return ""
    stopped = f"stopped at step {info['stopped_after_step']} of {info['total_steps']}"
    gr.Info(stopped[0].upper() + stopped[1:])
    return stopped


def _warn(warnings: list[str]) -> None:
    """Show what changes what the user gets (a truncated or empty prompt...) as visible warnings, each once."""
    for warning in dict.fromkeys(warnings):
        gr.Warning(warning)


def _batches(validate, job, batch_count) -> list:
    """The checked jobs of `batch_count` batches in a row, seeds continuing (batch k starts at seed + k x batch
    size), all validated before the first runs."""
    count = number("batch_count", batch_count, int, 1, MAX_BATCH_COUNT, label="Batch count")
    first = validate(job)
    return [first] + [validate(replace(first, seed=first.seed + index * first.batch_size)) for index in range(1, count)]


def _gallery(result) -> list:
    """A result's final gallery items: each PNG (with its parameters) and its caption."""
    stopped = _stopped_note(result.info)
    return [
        (
            save_png(image, parameters),
            f"{parameters['kind']} · seed {parameters['seed']}" + (f" · {stopped}" * bool(stopped)),
        )
        for image, parameters in zip(result.images, result.image_parameters)
    ]


def _run(
    generate_steps,
    validate,
    job,
    previews: bool,
    request: gr.Request | None,
    progress: gr.Progress,
    batch_count: int = 1,
):
    """Run a generation job (`batch_count` batches of it, seeds continuing) and stream it to the gallery and the info
    panel: previews of the predicted images while it samples (with `previews`), then the final PNGs with their
    parameters, the finished batches' images staying in view as the next one samples.

    Jobs are validated here, before any GPU is asked for; `generate_steps` (a `@gpu` generator: on ZeroGPU it runs
    in a forked worker) gets only picklable arguments and yields progress and previews, then the result or a
    failure."""
    if _stopped_while_queued():
        gr.Info("Stopped before it started")
        yield [], {"interrupted": True, "stopped_after_step": 0, "stopped_while_queued": True}
        return
    with _job_token(request) as token:
        jobs = _validated(lambda first: _batches(validate, first, batch_count), job)
        gallery, infos = [], []
        for index, job in enumerate(jobs):
            desc = "Sampling" if len(jobs) == 1 else f"Batch {index + 1} of {len(jobs)}"
            stream = _stream(generate_steps, job, token, previews, progress, desc)
            result = yield from _shown_after(gallery, stream)
            _warn(result.info.get("warnings", []))
            gallery += _gallery(result)
            infos.append(result.info)
            if len(jobs) > 1 and index + 1 < len(jobs) and not result.info.get("interrupted"):
                yield gallery, result.info
            if result.info.get("interrupted"):
                break
    yield gallery, _batches_info(infos)


def _shown_after(gallery: list, stream):
    """`stream`'s (gallery, info) previews, shown after the images of the batches already finished; returns what
    `stream` returns (closing this generator closes `stream`, which stops its job)."""
    try:
        while True:
            try:
                items, info = next(stream)
            except StopIteration as stop:
                return stop.value
            yield gallery + items, info
    finally:
        stream.close()


def _batches_info(infos: list[dict]) -> dict:
    """The info panel of a run: its one batch's info, or for several batches the first's with every seed, the
    batch count and the summed time."""
    if len(infos) == 1:
        return infos[0]
    merged = dict(infos[0])
    merged.update(
        seeds=[seed for info in infos for seed in info["seeds"]],
        batch_count=len(infos),
        interrupted=any(info.get("interrupted") for info in infos),
        elapsed_seconds=round(sum(info.get("elapsed_seconds", 0) for info in infos), 3),
    )
    return merged


def _preview_info(event: Preview) -> dict:
    """What the info panel (and a streaming API caller) sees while a preview is shown."""
    return {"preview": True, "step": event.done, "total_steps": event.total}


# Handler arguments that are not one generation's parameters.
HANDLER_ONLY = ("batch_count", "previews", "request", "progress")
MAX_BATCH_COUNT = 8


def _sampling_request(arguments: dict) -> uncond.SamplingRequest:
    """A SamplingRequest from a handler's arguments, which are named like its fields (and the API's keywords)."""
    fields = {key: value for key, value in arguments.items() if key not in HANDLER_ONLY}
    return uncond.SamplingRequest(**fields)


def unconditional(
    model: str,
    scheduler: str,
    steps: int,
    batch_size: int,
    seed: int,
    eta: float = uncond.DEFAULT_ETA,
    batch_count: int = 1,
    previews: bool = True,
    request: gr.Request = None,
    progress: gr.Progress = gr.Progress(),
):
    """Sample images from an unconditional diffusion model."""
    job = _sampling_request(locals())
    yield from _run(uncond.generate_steps, uncond.validate, job, previews, request, progress, batch_count)


def color_guided(
    model: str,
    scheduler: str,
    steps: int,
    batch_size: int,
    seed: int,
    color: str,
    color_scale: float,
    compare: bool = False,
    eta: float = uncond.DEFAULT_ETA,
    gradient_method: str = "x0",
    batch_count: int = 1,
    previews: bool = True,
    request: gr.Request = None,
    progress: gr.Progress = gr.Progress(),
):
    """Sample images pulled toward a color by a loss on the predicted clean image."""
    job = _sampling_request(locals())
    yield from _run(uncond.generate_steps, uncond.validate, job, previews, request, progress, batch_count)


def clip_guided(
    model: str,
    scheduler: str,
    steps: int,
    batch_size: int,
    seed: int,
    prompt: str,
    clip_scale: float,
    cuts: int,
    color: str = "#ff8800",
    color_scale: float = 0.0,
    compare: bool = False,
    eta: float = uncond.DEFAULT_ETA,
    gradient_method: str = "x0",
    clip_image=None,
    clip_image_scale: float = 0.0,
    batch_count: int = 1,
    previews: bool = True,
    request: gr.Request = None,
    progress: gr.Progress = gr.Progress(),
):
    """Sample images pulled by CLIP toward a text prompt and/or a reference picture (clip_image, clip_image_scale),
    optionally toward a color at the same time."""
    job = _sampling_request(locals())
    yield from _run(uncond.generate_steps, uncond.validate, job, previews, request, progress, batch_count)


def _sd_request(task: str, arguments: dict) -> sd.SDRequest:
    """An SDRequest from a handler's arguments, which are named like its fields (and the API's keywords)."""
    fields = {key: value for key, value in arguments.items() if key not in HANDLER_ONLY}
    return sd.SDRequest(task=task, **fields)


def txt2img(
    prompt: str,
    negative_prompt: str,
    scheduler: str,
    steps: int,
    guidance_scale: float,
    width: int,
    height: int,
    batch_size: int,
    seed: int,
    model: str | None = None,
    color: str = "#1e90ff",
    color_scale: float = 0.0,
    color_decoder: str = "auto",
    clip_prompt: str = "",
    clip_scale: float = 0.0,
    cuts: int = 4,
    clip_image=None,
    clip_image_scale: float = 0.0,
    batch_count: int = 1,
    previews: bool = True,
    request: gr.Request = None,
    progress: gr.Progress = gr.Progress(),
):
    """Stable Diffusion text to image; optional color and CLIP guidance toward a text and/or a reference picture
    (color_scale, clip_scale, clip_image_scale above 0)."""
    job = _sd_request("txt2img", locals())
    yield from _run(sd.generate_sd_steps, sd.validate_sd, job, previews, request, progress, batch_count)


def img2img(
    image,
    prompt: str,
    negative_prompt: str,
    scheduler: str,
    steps: int,
    guidance_scale: float,
    strength: float,
    batch_size: int,
    seed: int,
    model: str | None = None,
    color: str = "#1e90ff",
    color_scale: float = 0.0,
    color_decoder: str = "auto",
    clip_prompt: str = "",
    clip_scale: float = 0.0,
    cuts: int = 4,
    clip_image=None,
    clip_image_scale: float = 0.0,
    batch_count: int = 1,
    previews: bool = True,
    request: gr.Request = None,
    progress: gr.Progress = gr.Progress(),
):
    """Stable Diffusion image to image; optional color and CLIP guidance toward a text and/or a reference picture
    (color_scale, clip_scale, clip_image_scale above 0)."""
    job = _sd_request("img2img", locals())
    yield from _run(sd.generate_sd_steps, sd.validate_sd, job, previews, request, progress, batch_count)


def inpaint(
    image,
    mask,
    prompt: str,
    negative_prompt: str,
    scheduler: str,
    steps: int,
    guidance_scale: float,
    strength: float,
    batch_size: int,
    seed: int,
    mask_blur: int = 4,
    model: str | None = None,
    color: str = "#1e90ff",
    color_scale: float = 0.0,
    color_decoder: str = "auto",
    clip_prompt: str = "",
    clip_scale: float = 0.0,
    cuts: int = 4,
    clip_image=None,
    clip_image_scale: float = 0.0,
    outpaint_left: int = 0,
    outpaint_right: int = 0,
    outpaint_top: int = 0,
    outpaint_bottom: int = 0,
    batch_count: int = 1,
    previews: bool = True,
    request: gr.Request = None,
    progress: gr.Progress = gr.Progress(),
):
    """Stable Diffusion inpainting: white mask pixels are repainted, every other pixel is kept exactly; optional
    color and CLIP guidance (color_scale, clip_scale, clip_image_scale above 0) act on the repainted region only.
    Outpainting: outpaint_left/right/top/bottom (px, multiples of 8, up to 512) grow the canvas on that side; the new
    area is pre-filled from the edge colors plus noise and repainted (the mask is then optional), and every pixel
    of the original comes back unchanged."""
    job = _sd_request("inpaint", locals())
    yield from _run(sd.generate_sd_steps, sd.validate_sd, job, previews, request, progress, batch_count)


TAB_HANDLERS = {
    "unconditional": unconditional,
    "color_guided": color_guided,
    "clip_guided": clip_guided,
    "txt2img": txt2img,
    "img2img": img2img,
    "inpaint": inpaint,
}


def _tab_job(tab: str, fields: dict):
    """(generate_steps, validate, job) of one request to `tab`'s endpoint with keyword `fields`."""
    if tab in sd.TASKS:
        return sd.generate_sd_steps, sd.validate_sd, sd.SDRequest(task=tab, **fields)
    return uncond.generate_steps, uncond.validate, uncond.SamplingRequest(**fields)


def _tab_settings(tab: str, settings: dict | None, pictures: dict) -> dict:
    """A tab's keyword values for a sweep: the endpoint's defaults, then `settings`, then the pictures given; an
    unknown keyword is refused by name."""
    parameters = inspect.signature(TAB_HANDLERS[tab]).parameters
    keywords = [name for name in parameters if name not in HANDLER_ONLY]
    if settings is not None and not isinstance(settings, dict):
        raise ValueError(f"settings must be a dict of {tab} keyword values, got {type(settings).__name__}")
    unknown = sorted(set(settings or {}) - set(keywords) - set(HANDLER_ONLY))
    if unknown:
        raise ValueError(
            f"settings: {', '.join(map(repr, unknown))} is not a keyword of /{tab} ({', '.join(keywords)})"
        )
    fields = {name: parameters[name].default for name in keywords if parameters[name].default is not inspect._empty}
    fields.update({key: value for key, value in (settings or {}).items() if key in keywords})
    fields.update({key: value for key, value in pictures.items() if key in keywords and value is not None})
    fields["compare"] = False  # one image per cell
    return {key: value for key, value in fields.items() if key in keywords}


def sweep(
    tab: str,
    parameter: str,
    values: str,
    seeds: str = "",
    settings: dict | None = None,
    image=None,
    mask=None,
    clip_image=None,
    request: gr.Request = None,
    progress: gr.Progress = gr.Progress(),
):
    """Compare settings side by side: `parameter` of `tab` ("txt2img", "color_guided", ...) over `values` ("3, 7.5,
    12"), optionally over `seeds` ("1, 2") as rows; `settings` holds the tab's other keyword values (the endpoint's
    defaults otherwise), `image`, `mask`, `clip_image` its pictures. At most 16 cells, each one image made exactly
    as a single request with its settings and seed would make it; returns the labelled grid, then the cells."""
    if _stopped_while_queued():
        gr.Info("Stopped before it started")
        yield [], {"interrupted": True, "stopped_after_step": 0, "stopped_while_queued": True}
        return
    with _job_token(request) as token:
        try:
            if tab not in TAB_HANDLERS:
                raise ValueError(f"tab {tab!r} is not one of {', '.join(TAB_HANDLERS)}")
            fields = _tab_settings(tab, settings, {"image": image, "mask": mask, "clip_image": clip_image})
            seed = resolve_seed(fields.get("seed", -1), 1)
            plan = plan_sweep(tab, parameter, values, seeds, seed)
        except ValueError as error:
            raise _refused(str(error)) from None
        jobs = []
        for cell in plan.cells():
            generate_steps, validate, job = _tab_job(tab, {**fields, **cell})
            jobs.append(_validated(validate, job))  # every cell checked before any runs
        results = []
        for index, job in enumerate(jobs):
            desc = f"Sweep cell {index + 1} of {len(jobs)}"
            result = yield from _stream(generate_steps, job, token, False, progress, desc)
            results.append(result)
            if result.info.get("interrupted"):
                break
    _warn([warning for result in results for warning in result.info.get("warnings", [])])
    stopped = _stopped_note(results[-1].info)
    record = {"tab": tab, "parameter": parameter, "values": list(plan.values), "seeds": list(plan.seeds)}
    cells = [(result.images[0], result.image_parameters[0]) for result in results]
    title = f"{TAB_LABELS[tab]}: {parameter} sweep" + (f" · {fields['prompt']}" if fields.get("prompt") else "")
    grid = sweep_grid([image for image, _ in cells], plan, title)
    gallery = [(save_png(grid, {**cells[0][1], "kind": "sweep grid", "sweep": record}), "sweep grid")]
    for (image, parameters), cell in zip(cells, plan.cells()):
        caption = f"{parameter} {value_label(cell[parameter])} · seed {cell['seed']}"
        gallery.append((save_png(image, parameters), caption + (f" · {stopped}" * bool(stopped))))
    info = {"sweep": record, "interrupted": bool(stopped), "cells": [result.info for result in results]}
    yield gallery, info


def read_parameters(image) -> dict:
    """How a PNG was made: {"source": "studio", "parameters": the studio's JSON}, {"source":
    "stable-diffusion-webui", "parameters": the fields of its `parameters` text, "text": the text}, or {"source":
    "none"}; with "tab" and "values", the tab and API keyword values that reproduce it, where it has parameters
    (for a studio image, its batch, in which it is image "image_index")."""
    if image is None:
        raise gr.Error("image is empty: upload a PNG", print_exception=False)
    read = image_parameters(image)
    if read["source"] == "studio":
        read["tab"], read["values"], read["image_index"] = studio_values(read["parameters"])
    elif read["source"] == "stable-diffusion-webui":
        read["tab"], read["values"], read["not_used"] = request_values(read["parameters"])
    return read


def studio_values(parameters: dict) -> tuple[str, dict, int]:
    """(tab, API keyword values, the image's index in its batch) that reproduce one image of the studio from its
    stored parameters: its whole batch
    (first seed, batch size: a batch of one at the image's own seed can differ in the last bit, since convolutions
    take other code paths at another batch size), the model choice its checkpoint belongs to, the color decoder it
    resolved to."""
    # Lists, dicts and the reference picture's fingerprint are records, not controls (upload the picture again).
    values = {key: value for key, value in parameters.items() if not isinstance(value, (list, dict))}
    values.pop("clip_image", None)
    seeds = parameters.get("seeds") or [parameters.get("seed")]
    values["seed"], values["batch_size"] = seeds[0], len(seeds)
    index = seeds.index(parameters["seed"]) if parameters.get("seed") in seeds else 0
    task = parameters.get("task")
    if task in sd.TASKS:
        # A choice's checkpoints: the base model, and the inpainting model that the inpaint tab loads for it.
        locations = {choice: sd.model_locations(choice) for choice in sd.sd_models()}
        choices = {locations[choice][task == "inpaint"]: choice for choice in locations}
        values["model"] = choices.get(parameters.get("model"), parameters.get("model"))
        if parameters.get("color_decoder"):
            values["color_decoder"] = decoder_choice(parameters["color_decoder"])
        return task, values, index
    return pixel_task(parameters), values, index


def _send_to(tab: str, components: list):
    """The "Send to" handler of a tab: the tab selected and each of its controls set from the read values (the
    controls a value does not fit, or that the image does not name, are left as they are)."""

    def send(read: dict | None):
        values = (read or {}).get("values") or {}
        updates = []
        for component in components:
            value = values.get(getattr(component, "api_keyword", None))
            choices = [
                option[1] if isinstance(option, tuple) else option
                for option in getattr(component, "choices", None) or []
            ]
            fits = value is not None and not isinstance(component, gr.Image) and (not choices or value in choices)
            updates.append(gr.update(value=value) if fits else gr.update())
        return [gr.Tabs(selected=tab), *updates]

    return send


def _png_info_tab(tabs, tab_inputs: dict[str, list]) -> None:
    """Drop a PNG: its parameters, and "Send to" buttons that fill a tab's controls to reproduce it."""
    with gr.Row():
        with gr.Column():
            png = Image(
                type="pil",
                image_mode=None,
                format="png",
                label="PNG (from this studio or stable-diffusion-webui)",
                elem_id="png-image",
            )
        with gr.Column():
            read = gr.JSON(label="Parameters", elem_id="png-parameters")
            with gr.Row():
                buttons = {tab: gr.Button(f"Send to {TAB_LABELS[tab]}", elem_id=f"send-{tab}") for tab in tab_inputs}
    png.change(read_parameters_or_none, png, read, api_visibility="private")
    gr.Button("Read parameters", visible=False).click(read_parameters, png, read, api_name="read_parameters")
    for tab, button in buttons.items():
        button.click(_send_to(tab, tab_inputs[tab]), read, [tabs, *tab_inputs[tab]], api_visibility="private")


def read_parameters_or_none(image) -> dict | None:
    """read_parameters for the page: an emptied image box empties the panel."""
    return None if image is None else read_parameters(image)


TAB_LABELS = {
    "unconditional": "Unconditional",
    "color_guided": "Color-guided",
    "clip_guided": "CLIP-guided",
    "txt2img": "txt2img",
    "img2img": "img2img",
    "inpaint": "Inpainting",
}


def split_editor(editor_value):
    """The painted editor's (image, mask): the UI's painting then goes through the same /inpaint code as the API."""
    try:
        return mask_from_editor(editor_value)
    except ValueError as error:
        raise gr.Error(str(error)) from None


def selected_index(event: gr.SelectData) -> int:
    """The index of the gallery image the user clicked."""
    return event.index


def picked_image(gallery: list | None, index: int | None) -> str | None:
    """The file of the selected gallery image, or of the last one when none is selected; None for an empty gallery."""
    if not gallery:
        return None
    item = gallery[index] if index is not None and 0 <= index < len(gallery) else gallery[-1]
    return item[0] if isinstance(item, (tuple, list)) else item


def reuse_seed(gallery: list | None, index: int | None):
    """The seed the selected (or last) image was made with, for the seed box; a notice where it has none."""
    path = picked_image(gallery, index)
    parameters = image_parameters(PIL.Image.open(path)) if path else {"source": "none"}
    seed = parameters.get("parameters", {}).get("seed") if parameters["source"] == "studio" else None
    if seed is None:
        gr.Warning("No seed to reuse: generate an image first (a live preview has none)")
        return gr.update()
    return seed


def zip_gallery(gallery: list | None):
    """Every image of a gallery in one zip, named after the first (`<tab>-<seed>-<words>-<n>-images.zip`)."""
    paths = [picked_image(gallery, index) for index in range(len(gallery or []))]
    if not paths:
        raise gr.Error("Nothing to download: generate an image first", print_exception=False)
    name = os.path.splitext(os.path.basename(paths[0]))[0] + f"-{len(paths)}-images.zip"
    return gr.File(value=zip_outputs(paths, name), visible=True)


def send_to_img2img(gallery: list | None, index: int | None):
    """The img2img tab selected, the selected (or last) image in its input."""
    path = picked_image(gallery, index)
    if path is None:
        raise gr.Error("Nothing to send: generate an image first", print_exception=False)
    return gr.Tabs(selected="img2img"), path


def send_to_inpaint(gallery: list | None, index: int | None):
    """The inpainting tab selected, the selected (or last) image in its editor, nothing painted yet."""
    path = picked_image(gallery, index)
    if path is None:
        raise gr.Error("Nothing to send: generate an image first", print_exception=False)
    return gr.Tabs(selected="inpaint"), {"background": path, "layers": [], "composite": path}


def _wire_gallery_tools(page: PageParts, tabs: gr.Tabs, img2img_image, inpaint_editor) -> None:
    """Reuse-seed buttons and Send-to buttons of every tab (UI only, not API endpoints)."""
    private = dict(api_visibility="private", concurrency_limit=None)
    for prefix, (gallery, selected, to_img2img, to_inpaint) in page.galleries.items():
        seed, reuse = page.seeds[prefix]
        reuse.click(reuse_seed, [gallery, selected], seed, **private)
        to_img2img.click(send_to_img2img, [gallery, selected], [tabs, img2img_image], **private)
        to_inpaint.click(send_to_inpaint, [gallery, selected], [tabs, inpaint_editor], **private)


def _native_size_or_none(model: str) -> int | None:
    """A Stable Diffusion model's native size, None where its config cannot be read."""
    try:  # with the Hub unreachable, only the local cache (no retries against a network that is not there)
        return sd.native_size(model, local_files_only=hub_unreachable())
    except Exception:
        return None


def native_size_update(model: str):
    """Width and height sliders set to a Stable Diffusion model's native size when the model changes."""
    size = _native_size_or_none(model)
    if size is None:  # config not reachable: leave the sliders as they are
        return gr.update(), gr.update()
    value = sd.slider_size(size)
    width = gr.update(value=value, label=f"Width (native {size})")
    return width, gr.update(value=value, label=f"Height (native {size})")


def size_preset_update(model: str, preset: str):
    """Width and height of a size preset (square, portrait 2:3, landscape 3:2) at the model's native size."""
    width, height = sd.preset_size(_native_size_or_none(model) or 512, preset)
    return width, height


# Stop must also reach the caller's jobs still waiting in the queue. Gradio's `cancels=` would do that only for the
# browser (its frontend calls /cancel, never an API caller's /stop) and would throw a running job's images away, so
# the handler marks the waiting jobs by event id and each ends as soon as it starts. Event id -> when marked
# (entries of jobs that never start expire).
_STOPPED_WHILE_QUEUED: dict[str, float] = {}
_QUEUED_STOP_MAX_AGE = 3600.0


def _queued_event_ids(session: str) -> list[str]:
    """Ids of `session`'s jobs waiting in Gradio's queue (read from its internals: none if they ever change)."""
    try:
        queues = list(demo._queue.event_queue_per_concurrency_id.values())
        return [event._id for queue in queues for event in list(queue.queue) if event.session_hash == session]
    except AttributeError:
        return []


def _stopped_while_queued() -> bool:
    """Whether the job now starting was stopped while it waited (forgets the mark)."""
    from gradio.context import LocalContext

    event_id = LocalContext.event_id.get(None)
    return event_id is not None and _STOPPED_WHILE_QUEUED.pop(event_id, None) is not None


def stop(request: gr.Request = None) -> None:
    """Ask this session's running job to stop after its current step, and its queued jobs not to start."""
    session = _session(request)
    STOP_FLAGS.stop(session)
    now = time.monotonic()
    for event_id, marked in list(_STOPPED_WHILE_QUEUED.items()):
        if now - marked > _QUEUED_STOP_MAX_AGE:
            _STOPPED_WHILE_QUEUED.pop(event_id, None)
    for event_id in _queued_event_ids(session):
        _STOPPED_WHILE_QUEUED[event_id] = now


def device_note() -> str:
    """The status line for this process (device, Space or not, bundled models present, Hub reachable); read when the
    page loads."""
    bundled = tuple(name for name in ("ddpm", "sd") if bundled_path(name) is not None)
    return status_text(default_device().type, bool(os.environ.get("SPACE_ID")), bundled, hub_unreachable())


@dataclass
class PageParts:
    """Components that later wiring needs, by tab prefix: each tab's seed box with its reuse button, and its gallery
    with the selected image's index and the Send-to buttons."""

    seeds: dict = field(default_factory=dict)  # prefix -> (seed Number, reuse Button)
    galleries: dict = field(default_factory=dict)  # prefix -> (Gallery, selected index State, to img2img, to inpaint)


def _seed(prefix: str, page: PageParts) -> Number:
    """The seed box every tab shares, with a button that puts the selected (or last) image's seed back in it."""
    seed = Number(-1, precision=0, label="Seed (-1 = random; image i uses seed + i)", elem_id=f"{prefix}-seed")
    reuse = gr.Button("Reuse seed", size="sm", scale=0, min_width=90, elem_id=f"{prefix}-reuse-seed")
    page.seeds[prefix] = (seed, reuse)
    return seed


def _sampling_controls(prefix: str, page: PageParts) -> dict[str, gr.components.Component]:
    """Model, scheduler, steps, eta, batch size and seed controls shared by the three tabs."""
    models = uncond_models()
    controls = {
        "model": Dropdown(models, value=models[0], label="Model", elem_id=f"{prefix}-model"),
        "scheduler": Dropdown(list(uncond.SCHEDULERS), value="DDIM", label="Scheduler"),
    }
    with gr.Row():
        controls["steps"] = Slider(1, uncond.MAX_STEPS, value=50, step=1, label="Steps", elem_id=f"{prefix}-steps")
        controls["eta"] = Slider(
            0, 1, value=uncond.DEFAULT_ETA, step=0.05, label="Eta (DDIM only; 0 = deterministic, 1 = ancestral)"
        )
    with gr.Row():
        controls["batch_size"] = Slider(1, uncond.MAX_BATCH, value=1, step=1, label="Batch size")
        controls["batch_count"] = _batch_count(prefix)
        controls["seed"] = _seed(prefix, page)
    return controls


def _outputs(prefix: str, page: PageParts):
    """Gallery, info panel, Generate and Stop buttons and the live-previews toggle of one tab; Send-to buttons for
    the selected (or last) image."""
    with gr.Row():
        generate_button = gr.Button("Generate", variant="primary", elem_id=f"{prefix}-generate")
        stop_button = gr.Button("Stop", variant="stop", elem_id=f"{prefix}-stop")
    gallery = gr.Gallery(
        label="Images (PNG with parameters)", format="png", columns=4, height=520, elem_id=f"{prefix}-gallery"
    )
    with gr.Row():
        to_img2img = gr.Button("Send to img2img", size="sm", elem_id=f"{prefix}-send-img2img")
        to_inpaint = gr.Button("Send to inpainting", size="sm", elem_id=f"{prefix}-send-inpaint")
        zip_button = gr.Button("Download all (zip)", size="sm", elem_id=f"{prefix}-zip")
    zip_file = gr.File(label="All images of the gallery", visible=False, elem_id=f"{prefix}-zip-file")
    zip_button.click(zip_gallery, gallery, zip_file, api_visibility="private", concurrency_limit=None)
    selected = gr.State(None)
    gallery.select(selected_index, None, selected, api_visibility="private", concurrency_limit=None)
    generate_button.click(lambda: None, None, selected, api_visibility="private", concurrency_limit=None)
    page.galleries[prefix] = (gallery, selected, to_img2img, to_inpaint)
    previews = gr.Checkbox(
        True,
        label="Live previews (the predicted image every few steps or about once a second, while it samples)",
        elem_id=f"{prefix}-previews",
    )
    info = gr.JSON(label="Info")
    return generate_button, stop_button, gallery, info, previews


def _wire(fn, inputs, tab_outputs, api_name: str):
    """Connect Generate for one tab (all tabs share one GPU queue slot); returns (event, stop button)."""
    generate_button, stop_button, gallery, info, previews = tab_outputs
    inputs = [*inputs, previews]
    name_inputs(fn, inputs)
    event = generate_button.click(
        fn, inputs, [gallery, info], api_name=api_name, concurrency_id=GPU_QUEUE, concurrency_limit=1
    )
    return event, stop_button


def _prompts(prefix: str):
    """Prompt and negative prompt boxes."""
    prompt = Textbox(label="Prompt", lines=2, placeholder="a watercolor fox in the snow", elem_id=f"{prefix}-prompt")
    negative = Textbox("", label="Negative prompt", placeholder="blurry, low quality")
    return prompt, negative


def _sd_model_choice():
    """The Stable Diffusion model dropdown (SD_MODEL, and the bundled emoji preset when present)."""
    models = sd.sd_models()
    return Dropdown(models, value=models[0], label="Model")


def _sd_sampling_controls(prefix: str):
    """Scheduler, steps and classifier-free guidance scale for the Stable Diffusion tabs."""
    scheduler = Dropdown(list(sd.SD_SCHEDULERS), value="DPM++ 2M Karras", label="Scheduler")
    with gr.Row():
        steps = Slider(1, sd.MAX_SD_STEPS, value=25, step=1, label="Steps", elem_id=f"{prefix}-steps")
        guidance = Slider(0, sd.MAX_GUIDANCE, value=7.5, step=0.5, label="Guidance scale (CFG)")
    return scheduler, steps, guidance


def _batch_count(prefix: str) -> Slider:
    """Batches run one after another in one click, seeds continuing."""
    return Slider(
        1, MAX_BATCH_COUNT, value=1, step=1, label="Batch count (seeds continue)", elem_id=f"{prefix}-batch-count"
    )


def _sd_batch_and_seed(prefix: str, page: PageParts):
    """Number of images, batch count and seed for the Stable Diffusion tabs."""
    with gr.Row():
        batch_size = Slider(1, sd.MAX_SD_BATCH, value=1, step=1, label="Number of images")
        batch_count = _batch_count(prefix)
        seed = _seed(prefix, page)
    return batch_size, batch_count, seed


def _sd_guidance_controls(prefix: str):
    """Optional guidance for a Stable Diffusion tab: a color (target, strength, what the loss sees) and a CLIP
    prompt (text, strength, cutouts); strength 0 turns each off."""
    with gr.Accordion("Color guidance", open=False):
        with gr.Row():
            color = gr.ColorPicker("#1e90ff", label="Target color", elem_id=f"{prefix}-color")
            color_scale = Slider(
                0,
                sd.MAX_SD_COLOR_SCALE,
                value=0,
                step=0.1,
                label=f"Color strength (0 = off, {sd.DEFAULT_SD_COLOR_SCALE:g} = clear)",
            )
        decoder = Radio(
            list(sd.COLOR_DECODERS),
            value="auto",
            label="Color decoder (auto: the model's choice; cheap: linear latent-to-RGB map, nearly free; vae: exact)",
        )
    with gr.Accordion("CLIP guidance", open=False):
        clip_prompt = Textbox("", label="CLIP prompt", placeholder="a red heart", elem_id=f"{prefix}-clip-prompt")
        with gr.Row():
            clip_scale = Slider(
                0,
                sd.MAX_SD_CLIP_SCALE,
                value=0,
                step=0.1,
                label=f"CLIP guidance strength (0 = off, {sd.DEFAULT_SD_CLIP_SCALE:g} = clear)",
            )
            cuts = Slider(1, uncond.MAX_CUTS, value=4, step=1, label="Cutouts per image")
        clip_image, clip_image_scale = _reference_controls(prefix, sd.DEFAULT_SD_CLIP_SCALE, sd.MAX_SD_CLIP_SCALE)
    return color, color_scale, decoder, clip_prompt, clip_scale, cuts, clip_image, clip_image_scale


def _reference_controls(prefix: str, default: float, maximum: float):
    """A reference picture for CLIP guidance and its strength; uploading one sets a strength of 0 to `default`."""
    with gr.Row():
        clip_image = Image(
            type="pil",
            image_mode=None,
            format="png",
            label="Reference image (CLIP guidance toward a picture)",
            height=160,
            elem_id=f"{prefix}-clip-image",
        )
        clip_image_scale = Slider(
            0, maximum, value=0, step=0.1, label=f"Reference strength (0 = off, {default:g} = clear)"
        )
    clip_image.upload(
        lambda scale: gr.update(value=default) if not scale else gr.update(),
        clip_image_scale,
        clip_image_scale,
        api_visibility="private",
        concurrency_limit=None,
    )
    return clip_image, clip_image_scale


EXAMPLES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "examples")
APPLE = os.path.join(EXAMPLES_DIR, "apple.png")
APPLE_MASK = {"background": APPLE, "layers": [os.path.join(EXAMPLES_DIR, "apple-mask-layer.png")], "composite": APPLE}
# Rows of each tab's examples, for the bundled emoji models (names they know) and for Hub checkpoints.
EXAMPLES = {
    "unconditional": {"bundled": [[25, 1], [25, 7], [50, 12]], "hub": [[50, 1], [50, 7]]},
    "color_guided": {
        "bundled": [["#e02020", uncond.DEFAULT_COLOR_SCALE, 3], ["#2060ff", uncond.DEFAULT_COLOR_SCALE, 5]],
        "hub": [["#e02020", uncond.DEFAULT_COLOR_SCALE, 3], ["#2060ff", uncond.DEFAULT_COLOR_SCALE, 5]],
    },
    "clip_guided": {
        "bundled": [["red heart", uncond.DEFAULT_CLIP_SCALE, 1], ["grinning face", uncond.DEFAULT_CLIP_SCALE, 2]],
        "hub": [["a smiling face with red hair", uncond.DEFAULT_CLIP_SCALE, 1]],
    },
    "txt2img": {
        "bundled": [["red heart", 25, 1], ["grinning face", 25, 2], ["red apple", 25, 3]],
        "hub": [["a watercolor painting of a fox in the snow", 25, 1], ["a lighthouse at dusk, oil painting", 25, 2]],
    },
    "img2img": {
        "bundled": [[APPLE, "green apple", 0.6, 1]],
        "hub": [[APPLE, "a glossy red apple, studio photograph", 0.75, 1]],
    },
    "inpaint": {"bundled": [[APPLE_MASK, "red apple", 1]], "hub": [[APPLE_MASK, "a green leaf", 1]]},
}


def _examples(tab: str, inputs: list) -> None:
    """Clickable examples that fill a tab's controls, for the models the page runs with (the bundled emoji models'
    names when they are the default). Not cached: caching would run every example at start-up."""
    default = sd.sd_models()[0] if tab in sd.TASKS else uncond_models()[0]
    rows = EXAMPLES[tab]["bundled" if default == BUNDLED_LABEL else "hub"]
    gr.Examples(rows, inputs, label="Examples (click to fill the controls)", cache_examples=False)


def _sweep_controls(tab: str):
    """A tab's "Sweep" section: the parameter to vary, its values, optional seeds, and the button."""
    with gr.Accordion("Sweep: compare values side by side", open=False):
        parameter = Dropdown(
            list(SWEEPABLE[tab]), value=SWEEPABLE[tab][0], label="Parameter", elem_id=f"{tab}-sweep-parameter"
        )
        with gr.Row():
            values = Textbox("", label="Values (columns)", placeholder="0, 0.5, 1, 2", elem_id=f"{tab}-sweep-values")
            seeds = Textbox("", label="Seeds (rows; empty: the seed above)", placeholder="1, 2, 3")
        button = gr.Button(f"Run sweep (at most {MAX_CELLS} images)", elem_id=f"{tab}-sweep")
    return parameter, values, seeds, button


def _wire_sweep(tab: str, controls, inputs: list, gallery, info, first=None) -> None:
    """Run a tab's sweep with its current controls: their values gathered by API keyword (`first`, if given, is
    the event that must run before, as inpainting's editor split), then the same /sweep code as the API."""
    parameter, values, seeds, button = controls
    settings_inputs = [component for component in inputs if not isinstance(component, gr.Image)]
    keywords = [component.api_keyword for component in settings_inputs]
    pictures = {component.api_keyword: component for component in inputs if isinstance(component, gr.Image)}
    settings, none = gr.State(), gr.State(None)
    listen = first(button).then if first else button.click
    gathered = listen(
        lambda *values: dict(zip(keywords, values)),
        settings_inputs,
        settings,
        api_visibility="private",
        concurrency_limit=None,
    )
    sweep_inputs = [gr.State(tab), parameter, values, seeds, settings]
    sweep_inputs += [pictures.get(name, none) for name in ("image", "mask", "clip_image")]
    gathered.then(
        sweep,
        sweep_inputs,
        [gallery, info],
        api_name=f"{tab}_sweep",  # private; without a name of its own it would take "sweep" from the public one
        api_visibility="private",
        concurrency_id=GPU_QUEUE,
        concurrency_limit=1,
    )


def _sweep_endpoint() -> gr.Button:
    """The /sweep API endpoint, on hidden components (the tabs' own Sweep sections call the same function)."""
    with gr.Column(visible=False):
        inputs = [
            Textbox("txt2img"),
            Textbox(""),
            Textbox(""),
            Textbox(""),
            gr.JSON(None),
            *(Image(type="pil", image_mode=None, format="png") for _ in range(3)),
        ]
        gallery, info, button = gr.Gallery(format="png"), gr.JSON(), gr.Button()
    name_inputs(sweep, inputs)
    button.click(sweep, inputs, [gallery, info], api_name="sweep", concurrency_id=GPU_QUEUE, concurrency_limit=1)
    return button


def _outpaint_controls():
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


def _guidance_options(prefix: str):
    """Compare toggle and gradient method, shared by the guided tabs."""
    with gr.Accordion("Options", open=False):
        compare = gr.Checkbox(False, label="Also show the unguided image of the same seed", elem_id=f"{prefix}-compare")
        method = Radio(GRADIENT_LABELS, value="x0", label="Guidance gradient")
    return compare, method


# Ctrl+Enter (Cmd+Enter on a Mac), in a prompt or anywhere on the page, clicks the visible tab's Generate; a plain
# Enter in a prompt stays a newline.
SHORTCUTS_JS = """
() => {
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" || !(event.ctrlKey || event.metaKey) || event.repeat) return;
    const visible = [...document.querySelectorAll("button[id$='-generate']")].filter((b) => b.offsetParent !== null);
    if (visible.length === 0) return;
    event.preventDefault();
    visible[0].click();
  }, true);
}
"""


def build_demo() -> gr.Blocks:
    """The whole UI: six tabs, one endpoint each; controls on the left, results on the right."""
    # Gradio's copies of outputs and uploads: swept every 10 minutes, deleted after an hour.
    with gr.Blocks(title=TITLE, delete_cache=(600, 3600)) as demo:
        gr.Markdown(f"# {TITLE}\n{INTRO}")
        note = gr.Markdown()
        wired = []
        page = PageParts()
        tab_inputs: dict[str, list] = {}  # tab id -> its inputs, each with its API keyword (for "Send to")
        with gr.Tabs() as tabs:
            with gr.Tab(TAB_LABELS["unconditional"], id="unconditional"):
                with gr.Row():
                    with gr.Column():
                        controls = _sampling_controls("uncond", page)
                        sweep_controls = _sweep_controls("unconditional")
                        _examples("unconditional", [controls["steps"], controls["seed"]])
                    with gr.Column():
                        tab_outputs = _outputs("uncond", page)
                keys = ("model", "scheduler", "steps", "batch_size", "seed", "eta", "batch_count")
                inputs = [controls[key] for key in keys]
                wired.append(_wire(unconditional, inputs, tab_outputs, "unconditional"))
                _wire_sweep("unconditional", sweep_controls, inputs, *tab_outputs[2:4])
                tab_inputs["unconditional"] = inputs

            with gr.Tab(TAB_LABELS["color_guided"], id="color_guided"):
                with gr.Row():
                    with gr.Column():
                        controls = _sampling_controls("color", page)
                        with gr.Row():
                            color = gr.ColorPicker("#ff8800", label="Target color", elem_id="color-color")
                            color_scale = Slider(
                                0,
                                uncond.MAX_COLOR_SCALE,
                                value=uncond.DEFAULT_COLOR_SCALE,
                                step=0.05,
                                label="Color guidance strength (0 = off)",
                            )
                        compare, method = _guidance_options("color")
                        sweep_controls = _sweep_controls("color_guided")
                        _examples("color_guided", [color, color_scale, controls["seed"]])
                    with gr.Column():
                        tab_outputs = _outputs("color", page)
                inputs = [controls[key] for key in ("model", "scheduler", "steps", "batch_size", "seed")]
                inputs += [color, color_scale, compare, controls["eta"], method, controls["batch_count"]]
                wired.append(_wire(color_guided, inputs, tab_outputs, "color_guided"))
                _wire_sweep("color_guided", sweep_controls, inputs, *tab_outputs[2:4])
                tab_inputs["color_guided"] = inputs

            with gr.Tab(TAB_LABELS["clip_guided"], id="clip_guided"):
                with gr.Row():
                    with gr.Column():
                        prompt = Textbox(
                            label="Prompt", placeholder="a smiling face with red hair", elem_id="clip-prompt"
                        )
                        controls = _sampling_controls("clip", page)
                        with gr.Row():
                            clip_scale = Slider(
                                0,
                                uncond.MAX_CLIP_SCALE,
                                value=uncond.DEFAULT_CLIP_SCALE,
                                step=0.1,
                                label="CLIP guidance strength (0 = off)",
                            )
                            cuts = Slider(1, uncond.MAX_CUTS, value=4, step=1, label="Cutouts per image")
                        with gr.Row():
                            color = gr.ColorPicker("#ff8800", label="Also pull toward a color")
                            color_scale = Slider(
                                0, uncond.MAX_COLOR_SCALE, value=0, step=0.05, label="Color strength (0 = no color)"
                            )
                        reference = _reference_controls("clip", uncond.DEFAULT_CLIP_SCALE, uncond.MAX_CLIP_SCALE)
                        compare, method = _guidance_options("clip")
                        sweep_controls = _sweep_controls("clip_guided")
                        _examples("clip_guided", [prompt, clip_scale, controls["seed"]])
                    with gr.Column():
                        tab_outputs = _outputs("clip", page)
                inputs = [controls[key] for key in ("model", "scheduler", "steps", "batch_size", "seed")]
                inputs += [prompt, clip_scale, cuts, color, color_scale, compare, controls["eta"], method, *reference]
                inputs.append(controls["batch_count"])
                wired.append(_wire(clip_guided, inputs, tab_outputs, "clip_guided"))
                _wire_sweep("clip_guided", sweep_controls, inputs, *tab_outputs[2:4])
                tab_inputs["clip_guided"] = inputs

            size = sd.default_size(sd.sd_models()[0])
            with gr.Tab(TAB_LABELS["txt2img"], id="txt2img"):
                with gr.Row():
                    with gr.Column():
                        sd_model = _sd_model_choice()
                        prompt, negative = _prompts("txt2img")
                        scheduler, steps, guidance = _sd_sampling_controls("txt2img")
                        with gr.Row():
                            width, height = (
                                Slider(sd.MIN_SIZE, sd.MAX_SIZE, value=sd.slider_size(size), step=8, label=label)
                                for label in (f"Width (native {size})", f"Height (native {size})")
                            )
                        with gr.Row():
                            presets = {
                                preset: gr.Button(
                                    f"{preset.title()} ({across}:{down})",
                                    size="sm",
                                    elem_id=f"txt2img-size-{preset}",
                                )
                                for preset, (across, down) in sd.SIZE_PRESETS.items()
                            }
                        batch_size, batch_count, seed = _sd_batch_and_seed("txt2img", page)
                        color_controls = _sd_guidance_controls("txt2img")
                        sweep_controls = _sweep_controls("txt2img")
                        _examples("txt2img", [prompt, steps, seed])
                    with gr.Column():
                        tab_outputs = _outputs("txt2img", page)
                inputs = [prompt, negative, scheduler, steps, guidance, width, height, batch_size, seed, sd_model]
                inputs += [*color_controls, batch_count]
                wired.append(_wire(txt2img, inputs, tab_outputs, "txt2img"))
                _wire_sweep("txt2img", sweep_controls, inputs, *tab_outputs[2:4])
                tab_inputs["txt2img"] = inputs
                sd_model.change(native_size_update, sd_model, [width, height], api_visibility="private")
                for preset, button in presets.items():
                    button.click(
                        functools.partial(size_preset_update, preset=preset),
                        sd_model,
                        [width, height],
                        api_visibility="private",
                        concurrency_limit=None,
                    )

            with gr.Tab(TAB_LABELS["img2img"], id="img2img"):
                with gr.Row():
                    with gr.Column():
                        sd_model = _sd_model_choice()
                        image = Image(
                            type="pil", image_mode=None, format="png", label="Input image", elem_id="img2img-image"
                        )
                        prompt, negative = _prompts("img2img")
                        strength = Slider(
                            0, 1, value=0.75, step=0.01, label="Strength (0 keeps the input, 1 replaces it)"
                        )
                        scheduler, steps, guidance = _sd_sampling_controls("img2img")
                        batch_size, batch_count, seed = _sd_batch_and_seed("img2img", page)
                        color_controls = _sd_guidance_controls("img2img")
                        sweep_controls = _sweep_controls("img2img")
                        _examples("img2img", [image, prompt, strength, seed])
                    with gr.Column():
                        tab_outputs = _outputs("img2img", page)
                inputs = [image, prompt, negative, scheduler, steps, guidance, strength, batch_size, seed, sd_model]
                inputs += [*color_controls, batch_count]
                wired.append(_wire(img2img, inputs, tab_outputs, "img2img"))
                _wire_sweep("img2img", sweep_controls, inputs, *tab_outputs[2:4])
                tab_inputs["img2img"] = inputs

            with gr.Tab(TAB_LABELS["inpaint"], id="inpaint"):
                with gr.Row():
                    with gr.Column():
                        sd_model = _sd_model_choice()
                        editor = gr.ImageMask(
                            type="pil",
                            format="png",
                            label="Upload an image, then paint over what to repaint",
                            elem_id="inpaint-editor",
                            layers=False,
                            height=420,
                            # Semi-transparent: the picture stays visible under the mask; the size follows the image.
                            brush=gr.Brush(colors=[("#ff3b30", 0.55)], default_size="auto", color_mode="fixed"),
                        )
                        prompt, negative = _prompts("inpaint")
                        with gr.Row():
                            strength = Slider(0, 1, value=1.0, step=0.01, label="Strength")
                            mask_blur = Slider(0, sd.MAX_MASK_BLUR, value=4, step=1, label="Mask blur (px, inward)")
                        scheduler, steps, guidance = _sd_sampling_controls("inpaint")
                        batch_size, batch_count, seed = _sd_batch_and_seed("inpaint", page)
                        color_controls = _sd_guidance_controls("inpaint")
                        outpaint = _outpaint_controls()
                        sweep_controls = _sweep_controls("inpaint")
                        _examples("inpaint", [editor, prompt, seed])
                        with gr.Accordion("Image and mask sent to the model", open=False), gr.Row():
                            plain_image = Image(
                                type="pil", image_mode=None, format="png", label="Image", interactive=False
                            )
                            plain_mask = Image(
                                type="pil",
                                image_mode=None,
                                format="png",
                                label="Mask (white = repaint)",
                                interactive=False,
                            )
                    with gr.Column():
                        generate_button, stop_button, gallery, info, previews = _outputs("inpaint", page)
                split = generate_button.click(
                    split_editor, editor, [plain_image, plain_mask], api_visibility="private", concurrency_limit=None
                )
                inpaint_inputs = [
                    plain_image,
                    plain_mask,
                    prompt,
                    negative,
                    scheduler,
                    steps,
                    guidance,
                    strength,
                    batch_size,
                    seed,
                    mask_blur,
                    sd_model,
                    *color_controls,
                    *outpaint,
                    batch_count,
                    previews,
                ]
                name_inputs(inpaint, inpaint_inputs)
                tab_inputs["inpaint"] = inpaint_inputs
                event = split.then(
                    inpaint,
                    inpaint_inputs,
                    [gallery, info],
                    api_name="inpaint",
                    concurrency_id=GPU_QUEUE,
                    concurrency_limit=1,
                )
                wired.append((split, stop_button))
                wired.append((event, stop_button))
                _wire_sweep(
                    "inpaint",
                    sweep_controls,
                    inpaint_inputs,
                    gallery,
                    info,
                    first=lambda button: button.click(
                        split_editor,
                        editor,
                        [plain_image, plain_mask],
                        api_visibility="private",
                        concurrency_limit=None,
                    ),
                )

            # Stop sets the session's flag (the running job ends within one step and shows its current images) and
            # marks its queued jobs; it is never queued behind a job. No `cancels=`: Gradio's cancel would throw the
            # running job's images away and leave the previous run on the page.
            gr.on(
                list({id(button): button.click for _, button in wired}.values()),
                stop,
                None,
                None,
                api_name="stop",
                concurrency_limit=None,
            )
            with gr.Tab("PNG info", id="png_info"):
                _png_info_tab(tabs, tab_inputs)
        _sweep_endpoint()
        _wire_gallery_tools(page, tabs, tab_inputs["img2img"][0], editor)
        demo.load(device_note, None, note, api_visibility="private")
        demo.load(None, None, None, js=SHORTCUTS_JS)
    return demo


def queue_size() -> int:
    """Jobs that may wait in the queue (`STUDIO_QUEUE_SIZE`, default 20): beyond it a caller is told the queue is
    full at once. Set explicitly: on ZeroGPU, Gradio's default would be 1."""
    return setting("STUDIO_QUEUE_SIZE", 20, minimum=1)


def max_upload_megabytes() -> int:
    """Largest upload accepted (`STUDIO_MAX_UPLOAD_MB`, default 20): Gradio refuses bigger files before storing them."""
    return setting("STUDIO_MAX_UPLOAD_MB", 20, minimum=1)


def preload_for_zero_gpu() -> None:
    """On ZeroGPU, load every tab's default model in this main process at start-up (ZeroGPU's documented pattern):
    each forked GPU worker inherits them, while whatever a worker loads itself may die with it. Elsewhere models
    load lazily, on the first request that needs them."""
    if not on_zero_gpu():
        return
    if simulating() and default_device().type != "cpu":  # CUDA initialised here could not be used in a fork
        return
    model = uncond_models()[0]
    loaders = {
        "unconditional": lambda: uncond.get_unconditional(model),
        "CLIP": lambda: get_clip(model),
        "Stable Diffusion": lambda: sd.get_components("txt2img"),
        "inpainting": lambda: sd.get_components("inpaint"),
    }
    for name, load in loaders.items():
        try:
            load()
        except Exception as error:  # an unreachable Hub must not keep the page from starting
            first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
            logger.warning("preloading the %s model failed: %s", name, first_line)


def log_to_console() -> None:
    """The studio's own log lines (refusals, failures, preloading) on stderr at INFO; libraries keep their level."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s studio %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # a library that configures the root logger would print each line twice


demo = build_demo()

if __name__ == "__main__":
    log_to_console()
    preload_for_zero_gpu()
    demo.queue(max_size=queue_size(), default_concurrency_limit=1).launch(max_file_size=f"{max_upload_megabytes()}mb")
