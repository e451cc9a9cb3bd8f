"""The PNG info tab and /read_parameters: how a PNG was made, and Send to <tab> with the values that reproduce it."""

from __future__ import annotations

import gradio as gr

from pipelines import stable_diffusion as sd
from pipelines.infotext import decoder_choice, pixel_task, request_values, unrecorded_defaults
from pipelines.outputs import image_parameters
from ui.controls import TAB_LABELS
from ui_components import Image


def read_parameters(image) -> dict:
    """How a PNG was made: {"source": "studio", "parameters": the studio's JSON}, {"source":
    "stable-diffusion-webui", "parameters": the fields of its `parameters` text, "text": the text}, or {"source":
    "none"}; with "tab" and "values", the tab and API keyword values that reproduce it, where it has parameters
    (for a studio image, its batch, in which it is image "image_index").

    Args:
        image: a PNG made by this studio or by stable-diffusion-webui (or any image: then "source" is "none")
    """
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
    task = pixel_task(parameters)
    return task, unrecorded_defaults(task, values), index


def send_to(tab: str, components: list):
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
                buttons = {tab: gr.Button(f"Send to {TAB_LABELS[tab]}", elem_id=f"send-{tab}") for tab in tab_inputs}
    png.change(read_parameters_or_none, png, read, api_visibility="private")
    gr.Button("Read parameters", visible=False).click(read_parameters, png, read, api_name="read_parameters")
    for tab, button in buttons.items():
        button.click(send_to(tab, tab_inputs[tab]), read, [tabs, *tab_inputs[tab]], api_visibility="private")


def read_parameters_or_none(image) -> dict | None:
    """read_parameters for the page: an emptied image box empties the panel."""
    return None if image is None else read_parameters(image)
