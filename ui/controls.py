"""Controls and wiring shared by the tabs: seed, batch, outputs and gallery tools, prompts, guidance, examples."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import gradio as gr
import PIL.Image
from gradio.utils import get_upload_folder

from pipelines import stable_diffusion as sd
from pipelines import unconditional as uncond
from pipelines.batches import MAX_BATCH_COUNT
from pipelines.bundled import BUNDLED_LABEL
from pipelines.clip import DEFAULT_CUTS, MAX_CUTS
from pipelines.config import uncond_models
from pipelines.images import MAX_UPLOAD_PIXELS
from pipelines.outputs import image_parameters, zip_max_megabytes, zip_outputs
from pipelines.tabs import family
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


def seed_box(prefix: str, page: PageParts) -> Number:
    """The seed box every tab shares, with a button that puts the selected (or last) image's seed back in it."""
    seed = Number(-1, precision=0, label="Seed (-1 = random; image i uses seed + i)", elem_id=f"{prefix}-seed")
    reuse = gr.Button("Reuse seed", size="sm", scale=0, min_width=90, elem_id=f"{prefix}-reuse-seed")
    page.seeds[prefix] = (seed, reuse)
    return seed


def batch_count_slider(prefix: str) -> Slider:
    """Batches run one after another in one click, seeds continuing."""
    return Slider(
        1, MAX_BATCH_COUNT, value=1, step=1, label="Batch count (seeds continue)", elem_id=f"{prefix}-batch-count"
    )


def sampling_controls(prefix: str, page: PageParts) -> dict[str, gr.components.Component]:
    """Model, scheduler, steps, eta, batch size and seed controls shared by the three tabs."""
    models = uncond_models()
    controls = {
        "model": Dropdown(models, value=models[0], label="Model", elem_id=f"{prefix}-model"),
        "scheduler": Dropdown(list(uncond.SCHEDULERS), value="DDIM", label="Scheduler"),
    }
    with gr.Row():
        controls["steps"] = Slider(
            1, uncond.MAX_STEPS, value=uncond.DEFAULT_STEPS, step=1, label="Steps", elem_id=f"{prefix}-steps"
        )
        controls["eta"] = Slider(
            0, 1, value=uncond.DEFAULT_ETA, step=0.05, label="Eta (DDIM only; 0 = deterministic, 1 = ancestral)"
        )
    with gr.Row():
        controls["batch_size"] = Slider(1, uncond.MAX_BATCH, value=1, step=1, label="Batch size")
        controls["batch_count"] = batch_count_slider(prefix)
        controls["seed"] = seed_box(prefix, page)
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
    previews = gr.Checkbox(
        True,
        label="Live previews (the predicted image every few steps or about once a second, while it samples)",
        elem_id=f"{prefix}-previews",
    )
    info = gr.JSON(label="Info")
    return generate_button, stop_button, gallery, info, previews


def wire(fn, inputs, tab_outputs, api_name: str):
    """Connect Generate for one tab (all tabs share one GPU queue slot); returns (event, stop button)."""
    generate_button, stop_button, gallery, info, previews = tab_outputs
    inputs = [*inputs, previews]
    name_inputs(fn, inputs)
    event = generate_button.click(
        fn, inputs, [gallery, info], api_name=api_name, concurrency_id=GPU_QUEUE, concurrency_limit=1
    )
    return event, stop_button


def prompts(prefix: str):
    """Prompt and negative prompt boxes."""
    prompt = Textbox(
        "", label="Prompt", lines=2, placeholder="a watercolor fox in the snow", elem_id=f"{prefix}-prompt"
    )
    negative = Textbox("", label="Negative prompt", placeholder="blurry, low quality")
    return prompt, negative


def sd_model_choice():
    """The Stable Diffusion model dropdown (SD_MODEL, and the bundled emoji preset when present)."""
    models = sd.sd_models()
    return Dropdown(models, value=models[0], label="Model")


def sd_sampling_controls(prefix: str):
    """Scheduler, steps and classifier-free guidance scale for the Stable Diffusion tabs."""
    scheduler = Dropdown(list(sd.SD_SCHEDULERS), value=sd.DEFAULT_SD_SCHEDULER, label="Scheduler")
    with gr.Row():
        steps = Slider(1, sd.MAX_SD_STEPS, value=sd.DEFAULT_SD_STEPS, step=1, label="Steps", elem_id=f"{prefix}-steps")
        guidance = Slider(0, sd.MAX_GUIDANCE, value=sd.DEFAULT_GUIDANCE, step=0.5, label="Guidance scale (CFG)")
    return scheduler, steps, guidance


def sd_batch_and_seed(prefix: str, page: PageParts):
    """Number of images, batch count and seed for the Stable Diffusion tabs."""
    with gr.Row():
        batch_size = Slider(1, sd.MAX_SD_BATCH, value=1, step=1, label="Number of images")
        batch_count = batch_count_slider(prefix)
        seed = seed_box(prefix, page)
    return batch_size, batch_count, seed


def sd_guidance_controls(prefix: str):
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
            cuts = Slider(1, MAX_CUTS, value=DEFAULT_CUTS, step=1, label="Cutouts per image")
        clip_image, clip_image_scale = reference_controls(prefix, sd.DEFAULT_SD_CLIP_SCALE, sd.MAX_SD_CLIP_SCALE)
    return color, color_scale, decoder, clip_prompt, clip_scale, cuts, clip_image, clip_image_scale


def reference_controls(prefix: str, default: float, maximum: float):
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


def guidance_options(prefix: str, recurrence: int = 1):
    """Compare toggle, gradient method and recurrence (starting at `recurrence`), shared by the guided tabs."""
    with gr.Accordion("Options", open=False):
        compare = gr.Checkbox(False, label="Also show the unguided image of the same seed", elem_id=f"{prefix}-compare")
        method = Radio(GRADIENT_LABELS, value="x0", label="Guidance gradient")
        retakes = Slider(
            1,
            uncond.MAX_RECURRENCE,
            value=recurrence,
            step=1,
            label="Recurrence (each guided step taken this many times: slower, keeps images on the model's data; "
            "DDIM and DDPM)",
            elem_id=f"{prefix}-recurrence",
        )
    return compare, method, retakes


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
ZIP_MAX_IMAGES = MAX_BATCH_COUNT * max(uncond.MAX_BATCH, sd.MAX_SD_BATCH) * 2


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
