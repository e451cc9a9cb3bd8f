"""The PNG info tab and /read_parameters: how a PNG was made, and Send to <tab> with the values that reproduce it."""

from __future__ import annotations

import inspect
import logging

import gradio as gr

from guidance.colors import shown
from pipelines import stable_diffusion as sd
from pipelines.infotext import decoder_choice, pixel_task, request_values, unrecorded_defaults
from pipelines.outputs import image_parameters
from pipelines.params import PIXEL, SD
from pipelines.tabs import LABELS, is_sd
from pipelines.validation import number, text, typed
from ui_components import Image

logger = logging.getLogger("studio")
# What the tabs' controls take: numbers (kind, lowest, highest over every tab that has the control), texts (and the
# recorded texts that choose the tab), flags. A value read from a PNG outside them is no setting of the studio: it is
# left out, and named in "not_used".
NUMBERS: dict[str, tuple[type, float, float]] = {
    name: (entries[0].kind, min(entry.low for entry in entries), max(entry.high for entry in entries))
    for name in {**PIXEL, **SD}
    if (entries := [table[name] for table in (PIXEL, SD) if name in table])[0].kind in (int, float)
}
TEXTS = (*(name for name, entry in (PIXEL | SD).items() if entry.kind is str), "task", "kind")
FLAGS = tuple(name for name, entry in (PIXEL | SD).items() if entry.kind is bool)
# Texts whose choices are fixed in the table (not read from the pipelines): a value from elsewhere (another tool's
# hires upscaler) is refused by name instead of reaching a menu that does not offer it.
FIXED_CHOICES = {
    name: tuple(dict.fromkeys(choice for table in (PIXEL, SD) if name in table for choice in table[name].options()))
    for name, entry in (PIXEL | SD).items()
    if entry.kind is str and entry.choices is not None and not callable(entry.choices)
}
MAX_NOT_USED = 20  # messages listed at most: a hostile file can hold thousands of unusable values


def read_parameters(image) -> dict:
    """How a PNG was made: {"source": "studio", "parameters": the studio's JSON}, {"source":
    "stable-diffusion-webui", "parameters": the fields of its `parameters` text, "text": the text}, or {"source":
    "none"}; with "tab" and "values", the tab and API keyword values that reproduce it, where it has parameters
    (for a studio image, its batch, in which it is image "image_index": `values` holds exactly the endpoint's
    keywords, "recorded" the other recorded facts), and "not_used": what could not be read or used, each naming its
    key (metadata is never a reason to fail).

    Args:
        image: a PNG made by this studio or by stable-diffusion-webui (or any image: then "source" is "none")
    """
    if image is None:
        raise gr.Error("image is empty: upload a PNG", print_exception=False)
    try:
        return parameters_answer(image)
    except Exception as error:  # anyone may send a PNG: a bug in reading one must still answer in words
        logger.exception("reading an image's parameters failed")
        raise gr.Error(
            f"could not read this image's parameters ({type(error).__name__}); its pixels are unaffected",
            print_exception=False,
        ) from None


def parameters_answer(image) -> dict:
    """read_parameters' answer: the image's parameters (`image_parameters`, JSON-safe), the tab and values that
    reproduce it, less what no control takes, and every message of what was not used."""
    read = image_parameters(image)
    not_used = read.pop("not_used", [])
    if read["source"] == "studio":
        read["tab"], values, read["image_index"], skipped = studio_values(read["parameters"])
    elif read["source"] == "stable-diffusion-webui":
        read["tab"], values, skipped = request_values(read["parameters"])
    else:
        return read | ({"not_used": listed(not_used)} if not_used else {})
    read["values"], read["recorded"] = split_keywords(read["tab"], usable_values(values, skipped))
    read["not_used"] = listed(not_used + skipped)
    return read


def endpoint_keywords(tab: str) -> set[str]:
    """The keywords `tab`'s endpoint takes (its handler's parameters)."""
    from ui.handlers import HANDLERS

    return set(inspect.signature(HANDLERS[tab]).parameters) - {"request", "progress"}


def split_keywords(tab: str, values: dict) -> tuple[dict, dict]:
    """(`values` the endpoint takes, the others: recorded facts such as the device or the time), so that
    `client.predict(**read["values"], api_name="/" + read["tab"])` reproduces the image."""
    keywords = endpoint_keywords(tab)
    return (
        {key: value for key, value in values.items() if key in keywords},
        {key: value for key, value in values.items() if key not in keywords},
    )


def listed(messages: list[str]) -> list[str]:
    """`messages`, at most MAX_NOT_USED of them (the last says how many more there were)."""
    if len(messages) <= MAX_NOT_USED:
        return messages
    return [*messages[: MAX_NOT_USED - 1], f"... and {len(messages) - MAX_NOT_USED + 1} more"]


def control_value(name: str, value):
    """`value` as the tabs' control `name` takes it (an int for an integer slider); ValueError naming `name` and the
    value when no tab's control takes it. A name with no control, or a text or flag that is null, passes as it is."""
    if name in NUMBERS:
        kind, low, high = NUMBERS[name]
        return number(name, typed(name, value, kind), kind, low, high)
    if value is not None and name in TEXTS:
        text(name, value)
    if value is not None and name in FIXED_CHOICES and value not in FIXED_CHOICES[name]:
        raise ValueError(f"{name}: {shown(value)} is not offered (one of {', '.join(FIXED_CHOICES[name])})")
    if value is not None and name in FLAGS:
        typed(name, value, bool)
    return value


def usable_values(values: dict, not_used: list[str]) -> dict:
    """`values` less those no tab's control takes (each refusal added to `not_used`), numbers of the controls' kind."""
    usable = {}
    for name, value in values.items():
        try:
            usable[name] = control_value(name, value)
        except ValueError as error:
            not_used.append(str(error))
    return usable


def batch_seeds(parameters: dict, not_used: list[str]) -> list[int] | None:
    """The recorded seeds of an image's batch; None (said in `not_used` when they are there) unless a non-empty list
    of seeds."""
    seeds = parameters.get("seeds")
    if seeds is None:
        return None
    try:
        if isinstance(seeds, list) and seeds:
            return [control_value("seed", seed) for seed in seeds]
    except ValueError:
        pass
    not_used.append(f"seeds: {shown(seeds)} is not a list of seeds")
    return None


def studio_values(parameters: dict) -> tuple[str, dict, int, list[str]]:
    """(tab, API keyword values, the image's index in its batch, what could not be used) that reproduce one image of
    the studio from its stored parameters: its whole batch
    (first seed, batch size: a batch of one at the image's own seed can differ in the last bit, since convolutions
    take other code paths at another batch size), the model choice its checkpoint belongs to, the color decoder it
    resolved to. A value of the wrong kind is left out, named in the list."""
    not_used: list[str] = []
    parameters = usable_values(parameters, not_used)
    # Lists, dicts and the reference picture's fingerprint are records, not controls (upload the picture again).
    values = {key: value for key, value in parameters.items() if not isinstance(value, (list, dict))}
    for record in ("clip_image", "seeds"):
        values.pop(record, None)
    seeds = batch_seeds(parameters, not_used) or ([parameters["seed"]] if "seed" in parameters else [])
    if seeds:
        values["seed"], values["batch_size"] = seeds[0], len(seeds)
    index = seeds.index(parameters["seed"]) if parameters.get("seed") in seeds else 0
    task = parameters.get("task")
    if is_sd(task):
        # A choice's checkpoints: the base model, and the inpainting model that the inpaint tab loads for it.
        locations = {choice: sd.model_locations(choice) for choice in sd.sd_models()}
        choices = {locations[choice][task == "inpaint"]: choice for choice in locations}
        if "model" in parameters:
            values["model"] = choices.get(parameters["model"], parameters["model"])
        if parameters.get("color_decoder"):
            values["color_decoder"] = decoder_choice(parameters["color_decoder"])
        return task, values, index, not_used
    task = pixel_task(parameters)
    return task, unrecorded_defaults(task, values), index, not_used


def send_to(tab: str, components: list):
    """The "Send to" handler of a tab: the tab selected and each of its controls set from the read values (the
    controls a value does not fit, or that the image does not name, are left as they are)."""

    def send(read: dict | None):
        values = read.get("values") if isinstance(read, dict) else None  # the panel's JSON: anyone can send any
        values = values if isinstance(values, dict) else {}
        updates = []
        for component in components:
            value = values.get(getattr(component, "api_keyword", None))
            if isinstance(value, (dict, list)):
                value = None
            choices = [
                option[1] if isinstance(option, tuple) else option
                for option in getattr(component, "choices", None) or []
            ]
            fits = value is not None and not isinstance(component, gr.Image) and (not choices or value in choices)
            updates.append(gr.update(value=value) if fits else gr.update())
        return [gr.Tabs(selected=tab), *updates]

    return send


def png_info_tab(tabs, tab_inputs: dict[str, list]) -> None:
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
                buttons = {tab: gr.Button(f"Send to {LABELS[tab]}", elem_id=f"send-{tab}") for tab in tab_inputs}
    png.change(read_parameters_or_none, png, read, api_visibility="private")
    gr.Button("Read parameters", visible=False).click(read_parameters, png, read, api_name="read_parameters")
    for tab, button in buttons.items():
        button.click(send_to(tab, tab_inputs[tab]), read, [tabs, *tab_inputs[tab]], api_visibility="private")


def read_parameters_or_none(image) -> dict | None:
    """read_parameters for the page: an emptied image box empties the panel."""
    return None if image is None else read_parameters(image)
