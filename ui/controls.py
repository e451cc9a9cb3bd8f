"""Controls and wiring shared by the tabs: seed, batch, outputs and gallery tools, prompts, guidance, examples."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field

import gradio as gr
import PIL.Image
from gradio.utils import get_upload_folder

from pipelines import unconditional as uncond
from pipelines.bundled import BUNDLED_LABEL
from pipelines.images import MAX_UPLOAD_PIXELS
from pipelines.outputs import image_parameters, zip_max_megabytes, zip_outputs
from pipelines.params import PIXEL, SD, keywords, param
from pipelines.tabs import family
from ui.handlers import HANDLERS
from ui.jobs import GPU_QUEUE
from ui_components import Dropdown, Image, Number, Radio, Slider, Textbox, name_inputs

GRADIENT_LABELS = [
    ("x0 (fast: no backprop through the UNet)", "x0"),
    ("through the UNet (slower, more memory)", "unet"),
]


@dataclass
class Tab:
    """What the page needs of a built tab: the controls that fill its endpoint's keywords, in the handler's order
    (each carries its `api_keyword`), its Stop button, and where "Send to" puts a picture (img2img, inpainting)."""

    inputs: list
    stop_button: gr.Button
    picture: gr.components.Component | None = None


@dataclass
class PageParts:
    """Components that later wiring needs, by tab prefix: each tab's seed box with its reuse button, and its gallery
    with the selected image's index and the Send-to buttons."""

    seeds: dict = field(default_factory=dict)  # prefix -> (seed Number, reuse Button)
    galleries: dict = field(default_factory=dict)  # prefix -> (Gallery, selected index State, to img2img, to inpaint)


def slider(tab: str, name: str, **options) -> Slider:
    """The slider of keyword `name` in tab `tab`: range, step, starting value and label from the parameter table."""
    entry = param(tab, name)
    return Slider(
        entry.low, entry.high, **(dict(value=entry.default, step=entry.step, label=entry.page_label()) | options)
    )


def dropdown(tab: str, name: str, **options) -> Dropdown:
    """The menu of keyword `name` in tab `tab`: its choices, the tab's default (else the first choice) and label."""
    entry = param(tab, name)
    choices = list(entry.options())
    value = choices[0] if entry.default is None else entry.default
    return Dropdown(choices, **(dict(value=value, label=entry.page_label()) | options))


def seed_box(tab: str, prefix: str, page: PageParts) -> Number:
    """The seed box every tab shares, with a button that puts the selected (or last) image's seed back in it."""
    entry = param(tab, "seed")
    seed = Number(entry.default, precision=0, label=entry.page_label(), elem_id=f"{prefix}-seed")
    reuse = gr.Button("Reuse seed", size="sm", scale=0, min_width=90, elem_id=f"{prefix}-reuse-seed")
    page.seeds[prefix] = (seed, reuse)
    return seed


def sampling_controls(tab: str, prefix: str, page: PageParts) -> dict[str, gr.components.Component]:
    """Model, scheduler, steps, eta, batch size, batch count and seed controls shared by the three pixel tabs."""
    controls = {
        "model": dropdown(tab, "model", elem_id=f"{prefix}-model"),
        "scheduler": dropdown(tab, "scheduler"),
    }
    with gr.Row():
        controls["steps"] = slider(tab, "steps", elem_id=f"{prefix}-steps")
        controls["eta"] = slider(tab, "eta")
    with gr.Row():
        controls["batch_size"] = slider(tab, "batch_size")
        controls["batch_count"] = slider(tab, "batch_count", elem_id=f"{prefix}-batch-count")
        controls["seed"] = seed_box(tab, prefix, page)
    return controls


def outputs(prefix: str, page: PageParts):
    """Gallery, info panel, Generate and Stop buttons and the live-previews toggle of one tab; Send-to buttons for
    the selected (or last) image."""
    with gr.Row():
        generate_button = gr.Button("Generate", variant="primary", elem_id=f"{prefix}-generate")
        stop_button = gr.Button("Stop", variant="stop", elem_id=f"{prefix}-stop")
    gallery = gr.Gallery(
        label="Images (PNG with parameters)",
        format="png",
        columns=4,
        height=520,
        object_fit="contain",  # a sweep's grid is wide: shown whole
        interactive=False,  # an output: the Send-to and zip buttons read it, which would make it an upload box
        elem_id=f"{prefix}-gallery",
    )
    with gr.Row():
        to_img2img = gr.Button("Send to img2img", size="sm", elem_id=f"{prefix}-send-img2img")
        to_inpaint = gr.Button("Send to inpainting", size="sm", elem_id=f"{prefix}-send-inpaint")
        zip_button = gr.Button("Download all (zip)", size="sm", elem_id=f"{prefix}-zip")
    zip_file = gr.File(label="All images of the gallery", visible=False, elem_id=f"{prefix}-zip-file")
    # Writes up to STUDIO_ZIP_MAX_MB: one zip at a time for the whole server, whoever calls it.
    zip_button.click(
        zip_gallery, gallery, zip_file, api_visibility="private", concurrency_id="zip", concurrency_limit=1
    )
    selected = gr.State(None)
    gallery.select(selected_index, None, selected, api_visibility="private", concurrency_limit=None)
    generate_button.click(lambda: None, None, selected, api_visibility="private", concurrency_limit=None)
    page.galleries[prefix] = (gallery, selected, to_img2img, to_inpaint)
    entry = PIXEL["previews"]
    previews = gr.Checkbox(entry.default, label=entry.page_label(), elem_id=f"{prefix}-previews")
    info = gr.JSON(label="Info")
    return generate_button, stop_button, gallery, info, previews


def tab_inputs(tab: str, controls: dict) -> list:
    """A tab's controls in its endpoint's argument order, each named by the keyword it fills."""
    inputs = [controls[name] for name in keywords(tab)]
    name_inputs(HANDLERS[tab], inputs)
    return inputs


def wire(tab: str, controls: dict, tab_outputs) -> list:
    """Connect Generate for one tab to its endpoint (all tabs share one GPU queue slot); returns its inputs."""
    generate_button, _, gallery, info, previews = tab_outputs
    inputs = tab_inputs(tab, controls | {"previews": previews})
    generate_button.click(
        HANDLERS[tab], inputs, [gallery, info], api_name=tab, concurrency_id=GPU_QUEUE, concurrency_limit=1
    )
    return inputs


def prompts(tab: str, prefix: str) -> dict[str, gr.components.Component]:
    """Prompt and negative prompt boxes, and the LoRA picker where the server offers LoRAs."""
    boxes = {
        "prompt": Textbox(
            param(tab, "prompt").default,
            label=param(tab, "prompt").label,
            lines=2,
            placeholder="a watercolor fox in the snow",
            elem_id=f"{prefix}-prompt",
        ),
        "negative_prompt": Textbox(
            param(tab, "negative_prompt").default,
            label=param(tab, "negative_prompt").label,
            placeholder="blurry, low quality",
        ),
    }
    lora_picker(boxes["prompt"], prefix)
    return boxes


def lora_picker(prompt: gr.Textbox, prefix: str) -> None:
    """A LoRA menu and a weight that put `<lora:name:weight>` into the prompt (stable-diffusion-webui's way: the prompt
    stays the one place a request's LoRAs are named); nothing where the server offers none (no LORA_DIR or LORAS)."""
    from pipelines.loras import WEIGHT_RANGE, lora_catalog, with_lora_tag

    names = list(lora_catalog())
    if not names:
        return
    with gr.Accordion("LoRAs", open=False):
        with gr.Row():
            name = gr.Dropdown(names, value=names[0], label="LoRA", elem_id=f"{prefix}-lora")
            weight = gr.Slider(*WEIGHT_RANGE, value=1.0, step=0.05, label="Weight", elem_id=f"{prefix}-lora-weight")
        add = gr.Button("Add to the prompt", size="sm", elem_id=f"{prefix}-lora-add")
    add.click(with_lora_tag, [prompt, name, weight], prompt, api_visibility="private")


def sd_sampling_controls(tab: str) -> dict[str, gr.components.Component]:
    """Scheduler, steps and classifier-free guidance scale for the Stable Diffusion tabs."""
    controls = {"scheduler": dropdown(tab, "scheduler")}
    with gr.Row():
        controls["steps"] = slider(tab, "steps", elem_id=f"{tab}-steps")
        controls["guidance_scale"] = slider(tab, "guidance_scale")
    return controls


FAMILY_CONTROLS = ("scheduler", "steps", "guidance_scale")  # what a picked model's family sets (`family_update`)


def family_update(tab: str, model: str):
    """Scheduler, steps and CFG scale set to what a picked Stable Diffusion model's family starts at, with a toast
    where a few-step model changes them; nothing changes where the model's config cannot be read."""
    from pipelines import stable_diffusion as sd

    try:
        values, message = sd.family_defaults(tab, model)
    except Exception:  # noqa: BLE001 - unreachable or broken config: the run that follows says why
        return tuple(gr.update() for _ in FAMILY_CONTROLS)
    if message:
        gr.Info(message)
    return tuple(gr.update(value=values[name]) for name in FAMILY_CONTROLS)


def wire_family_defaults(tab: str, controls: dict[str, gr.components.Component]) -> None:
    """A model change sets the sampling controls to the model family's defaults (`family_update`)."""
    targets = [controls[name] for name in FAMILY_CONTROLS]
    handler = functools.partial(family_update, tab)
    # .select, not .change: a model set by "send to" or a PNG's parameters keeps the steps and scale they carry.
    controls["model"].select(handler, controls["model"], targets, api_visibility="private")


def sd_batch_and_seed(tab: str, page: PageParts) -> dict[str, gr.components.Component]:
    """Number of images, batch count and seed for the Stable Diffusion tabs."""
    with gr.Row():
        return {
            "batch_size": slider(tab, "batch_size"),
            "batch_count": slider(tab, "batch_count", elem_id=f"{tab}-batch-count"),
            "seed": seed_box(tab, tab, page),
        }


def color_picker(tab: str, prefix: str) -> gr.ColorPicker:
    """The target color of color guidance."""
    entry = param(tab, "color")
    return gr.ColorPicker(entry.default, label=entry.page_label(), elem_id=f"{prefix}-color")


def radio(tab: str, name: str, **options) -> Radio:
    """The radio buttons of keyword `name` in tab `tab`: its choices, the tab's default and label."""
    entry = param(tab, name)
    return Radio(list(entry.options()), **(dict(value=entry.default, label=entry.page_label()) | options))


def sd_guidance_controls(tab: str) -> dict[str, gr.components.Component]:
    """Optional guidance for a Stable Diffusion tab: a color (target, strength, what the loss sees) and a CLIP
    prompt (text, strength, cutouts) or reference picture; strength 0 turns each off."""
    controls = {}
    with gr.Accordion("Color guidance", open=False):
        with gr.Row():
            controls["color"] = color_picker(tab, tab)
            controls["color_scale"] = slider(tab, "color_scale")
        controls["color_decoder"] = radio(tab, "color_decoder")
    with gr.Accordion("CLIP guidance", open=False):
        controls["clip_prompt"] = Textbox(
            param(tab, "clip_prompt").default,
            label=param(tab, "clip_prompt").label,
            placeholder="a red heart",
            elem_id=f"{tab}-clip-prompt",
        )
        with gr.Row():
            controls["clip_scale"] = slider(tab, "clip_scale")
            controls["cuts"] = slider(tab, "cuts")
        controls.update(reference_controls(tab, tab))
    with gr.Accordion("Particles", open=False):
        controls["particles"] = slider(tab, "particles", elem_id=f"{tab}-particles")
    return controls


def reference_controls(tab: str, prefix: str) -> dict[str, gr.components.Component]:
    """A reference picture for CLIP guidance and its strength; uploading one sets a strength of 0 to a clear one."""
    entry = param(tab, "clip_image_scale")
    with gr.Row():
        clip_image = Image(
            type="pil",
            image_mode=None,
            format="png",
            label=param(tab, "clip_image").page_label(),
            height=160,
            elem_id=f"{prefix}-clip-image",
        )
        clip_image_scale = slider(tab, "clip_image_scale")
    clip_image.upload(
        lambda scale: gr.update(value=entry.clear) if not scale else gr.update(),
        clip_image_scale,
        clip_image_scale,
        api_visibility="private",
        concurrency_limit=None,
    )
    return {"clip_image": clip_image, "clip_image_scale": clip_image_scale}


def guidance_options(tab: str, prefix: str) -> dict[str, gr.components.Component]:
    """Compare toggle, gradient method, recurrence and (where the tab takes them) particles, shared by the guided
    pixel tabs."""
    with gr.Accordion("Options", open=False):
        compare = param(tab, "compare")
        method = param(tab, "gradient_method")
        options = {
            "compare": gr.Checkbox(compare.default, label=compare.page_label(), elem_id=f"{prefix}-compare"),
            "gradient_method": Radio(GRADIENT_LABELS, value=method.default, label=method.page_label()),
            "recurrence": slider(tab, "recurrence", elem_id=f"{prefix}-recurrence"),
        }
        if "particles" in keywords(tab):
            options["particles"] = slider(tab, "particles", elem_id=f"{prefix}-particles")
        return options


EXAMPLES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


APPLE = os.path.join(EXAMPLES_DIR, "apple.png")


APPLE_MASK = {"background": APPLE, "layers": [os.path.join(EXAMPLES_DIR, "apple-mask-layer.png")], "composite": APPLE}


# Rows of each tab's examples, for the bundled emoji models (names they know) and for Hub checkpoints.
EXAMPLES = {
    "unconditional": {"bundled": [[25, 1], [25, 7], [50, 12]], "hub": [[50, 1], [50, 7]]},
    # colors suit any model
    "color_guided": dict.fromkeys(
        ("bundled", "hub"), [["#e02020", uncond.DEFAULT_COLOR_SCALE, 3], ["#2060ff", uncond.DEFAULT_COLOR_SCALE, 5]]
    ),
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


def examples(tab: str, inputs: list) -> None:
    """Clickable examples that fill a tab's controls, for the models the page runs with (the bundled emoji models'
    names when they are the default). Not cached: caching would run every example at start-up."""
    default = family(tab).models()[0]
    rows = EXAMPLES[tab]["bundled" if default == BUNDLED_LABEL else "hub"]
    gr.Examples(rows, inputs, label="Examples (click to fill the controls)", cache_examples=False)


def selected_index(event: gr.SelectData) -> int:
    """The index of the gallery image the user clicked."""
    return event.index


def picked_image(gallery: list | None, index: int | None) -> str | None:
    """The file of the selected gallery image, or of the last one when none is selected; None for an empty gallery."""
    if not gallery:
        return None
    item = gallery[index] if index is not None and 0 <= index < len(gallery) else gallery[-1]
    return item[0] if isinstance(item, (tuple, list)) else item


def recorded_seed(path: str | None) -> int | None:
    """The seed a studio PNG records, None for any other file (one too large is not read: its text chunks may come
    after pixels that would all be decoded)."""
    if not path:
        return None
    try:
        with PIL.Image.open(path) as image:
            if image.width * image.height > MAX_UPLOAD_PIXELS:
                return None
            parameters = image_parameters(image)
    except (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError):
        return None
    seed = parameters.get("parameters", {}).get("seed") if parameters["source"] == "studio" else None
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def reuse_seed(gallery: list | None, index: int | None):
    """The seed the selected (or last) image was made with, for the seed box; a notice where it has none."""
    if gallery is not None and not isinstance(gallery, list):
        gallery = None
    seed = recorded_seed(picked_image(gallery, index))
    if seed is None:
        gr.Warning("No seed to reuse: generate an image first (a live preview has none)")
        return gr.update()
    return seed


# The largest gallery a tab makes: batch_count batches of the largest batch, each image with its unguided twin.
ZIP_MAX_IMAGES = int(PIXEL["batch_count"].high * max(PIXEL["batch_size"].high, SD["batch_size"].high) * 2)


def zip_folder() -> str:
    """Where zips are written: a folder of Gradio's cache, which Gradio serves without copying the file again."""
    return os.path.join(get_upload_folder(), "studio-zips")


def zip_gallery(gallery: list | None):
    """Every image of a gallery in one zip, named after the first (`<tab>-<seed>-<words>-<n>-images.zip`); at most
    ZIP_MAX_IMAGES images and `STUDIO_ZIP_MAX_MB` in all, each file once."""
    if gallery is not None and not isinstance(gallery, list):
        raise gr.Error("Nothing to download: the gallery is not a list of images", print_exception=False)
    if len(gallery or []) > ZIP_MAX_IMAGES:
        raise gr.Error(f"A zip holds at most {ZIP_MAX_IMAGES} images, got {len(gallery)}", print_exception=False)
    paths = [picked_image(gallery, index) for index in range(len(gallery or []))]
    if not paths:
        raise gr.Error("Nothing to download: generate an image first", print_exception=False)
    name = os.path.splitext(os.path.basename(paths[0]))[0] + f"-{len(paths)}-images.zip"
    try:
        kept = 2 * zip_max_megabytes() * 2**20  # the newest zip and the one before, still being downloaded
        archive = zip_outputs(paths, name, zip_folder(), max_files=ZIP_MAX_IMAGES, folder_max_bytes=kept)
        return gr.File(value=archive, visible=True)
    except (ValueError, OSError) as error:
        message = str(error) if isinstance(error, ValueError) else "an image of the gallery is no longer on the server"
        raise gr.Error(message[:1].upper() + message[1:], print_exception=False) from None


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


def wire_gallery_tools(page: PageParts, tabs: gr.Tabs, img2img_image, inpaint_editor) -> None:
    """Reuse-seed buttons and Send-to buttons of every tab (UI only, not API endpoints)."""
    private = dict(api_visibility="private", concurrency_limit=None)
    for prefix, (gallery, selected, to_img2img, to_inpaint) in page.galleries.items():
        seed, reuse = page.seeds[prefix]
        reuse.click(reuse_seed, [gallery, selected], seed, api_visibility="private", concurrency_limit=2)
        to_img2img.click(send_to_img2img, [gallery, selected], [tabs, img2img_image], **private)
        to_inpaint.click(send_to_inpaint, [gallery, selected], [tabs, inpaint_editor], **private)
