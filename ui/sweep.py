"""Sweeps: the /sweep endpoint (one parameter over values and seeds, each cell a single request) and each tab's
Sweep section."""

from __future__ import annotations

import gradio as gr

from guidance.colors import shown
from pipelines.limits import check_total, server_limits
from pipelines.outputs import save_png
from pipelines.params import PICTURE, PICTURES, defaults, keywords, param, sweepable
from pipelines.sweep import MAX_CELLS, plan_sweep, sweep_grid, value_label
from pipelines.tabs import LABELS, family
from pipelines.validation import resolve_seed, typed
from ui.handlers import HANDLERS
from ui.jobs import (
    GPU_QUEUE,
    HANDLER_ONLY,
    job_token,
    refused,
    stopped_before_starting,
    stopped_note,
    stream_events,
    validated,
    warn,
)
from ui_components import Dropdown, Image, KeywordValues, Textbox, name_inputs


def tab_job(tab: str, fields: dict):
    """(generate_steps, validate, job) of one request to `tab`'s endpoint with keyword `fields`."""
    runs = family(tab)
    return runs.generate_steps, runs.validate, runs.request(tab, fields)


def typed_settings(tab: str, settings: dict) -> dict:
    """`settings` checked as the endpoint checks its own arguments: each value of its keyword's type (2, not "2" or
    True, for steps; none where the keyword's default is none), pictures refused (they are the sweep's image, mask
    and clip_image arguments)."""
    checked = {}
    for key, value in settings.items():
        entry = param(tab, key)
        if entry.kind is PICTURE:
            raise ValueError(f"settings: {key} is a picture; pass it as the sweep's {key} argument, not in settings")
        if value is None and entry.default is None:
            checked[key] = value
            continue
        try:
            checked[key] = typed(key, value, entry.kind)
        except ValueError as error:
            raise ValueError(f"settings: {error}") from None
    return checked


def tab_settings(tab: str, settings: dict | None, pictures: dict) -> dict:
    """A tab's keyword values for a sweep: the endpoint's defaults, then `settings` (typed as the endpoint's own
    arguments), then the pictures given; an unknown keyword is refused by name."""
    names = [name for name in keywords(tab) if name not in HANDLER_ONLY]
    if settings is not None and not isinstance(settings, dict):
        raise ValueError(f"settings must be a dict of {tab} keyword values, got {type(settings).__name__}")
    unknown = sorted(set(settings or {}) - set(names) - set(HANDLER_ONLY))
    if unknown:
        listed = ", ".join(shown(key) for key in unknown[:5]) + (f" and {len(unknown) - 5} more" * (len(unknown) > 5))
        raise ValueError(f"settings: {listed} is not a keyword of /{tab} ({', '.join(names)})")
    fields = {name: value for name, value in defaults(tab).items() if name in names}
    fields.update({key: value for key, value in typed_settings(tab, settings or {}).items() if key in names})
    fields.update({key: value for key, value in pictures.items() if key in names and value is not None})
    fields["compare"] = False  # one image per cell
    return {key: value for key, value in fields.items() if key in names}


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
    """Compare settings side by side: one parameter of a tab over a list of values (columns), optionally over seeds
    (rows); each cell is one image made exactly as a single request with those settings makes it. Returns a
    labelled grid PNG, then each cell's PNG, and an info dict (the sweep, each cell's parameters).

    Args:
        tab: the endpoint whose settings are swept: unconditional, color_guided, clip_guided, txt2img, img2img, inpaint
        parameter: the keyword to vary, one of the tab's strengths (color_scale, clip_scale, guidance_scale, ...)
        values: the values to compare, comma- or space-separated, e.g. "1, 4, 8" (a choice: comma-separated, e.g.
            "cutouts, data set"); at most 16 cells in all
        seeds: seeds as a second axis, e.g. "1, 2"; empty: the settings' seed (random for -1)
        settings: the tab's other keyword values as a dict (the endpoint's defaults for those left out)
        image: the input picture of img2img and inpaint
        mask: the inpainting mask (white is repainted)
        clip_image: a reference picture for CLIP guidance
    """
    if (answer := stopped_before_starting()) is not None:
        yield answer
        return
    with job_token(request) as token:
        try:
            if tab not in HANDLERS:
                raise ValueError(f"tab {shown(tab)} is not one of {', '.join(HANDLERS)}")
            fields = tab_settings(tab, settings, {"image": image, "mask": mask, "clip_image": clip_image})
            seed = resolve_seed(fields.get("seed", -1), 1)
            plan = plan_sweep(tab, parameter, values, seeds, seed)
        except ValueError as error:
            raise refused(str(error)) from None
        jobs = []
        for cell in plan.cells():
            generate_steps, validate, job = tab_job(tab, {**fields, **cell})
            jobs.append(validated(validate, job))  # every cell checked before any runs
        lower = "the number of values or seeds, steps or the size"
        works = [job.work() for job in jobs]
        validated(lambda cells: check_total(cells, server_limits(), "sweep cells", lower), works)
        results = []
        for index, job in enumerate(jobs):
            desc = f"Sweep cell {index + 1} of {len(jobs)}"
            result = yield from stream_events(generate_steps, job, token, False, progress, desc)
            results.append(result)
            if result.info.get("interrupted"):
                break
    warn([warning for result in results for warning in result.info.get("warnings", [])])
    stopped = stopped_note(results[-1].info)
    record = {"tab": tab, "parameter": parameter, "values": list(plan.values), "seeds": list(plan.seeds)}
    cells = [(result.images[0], result.image_parameters[0]) for result in results]
    title = f"{LABELS[tab]}: {parameter} sweep" + (f" · {fields['prompt']}" if fields.get("prompt") else "")
    grid = sweep_grid([image for image, _ in cells], plan, title)
    gallery = [(save_png(grid, {**cells[0][1], "kind": "sweep grid", "sweep": record}), "sweep grid")]
    for (image, parameters), cell in zip(cells, plan.cells()):
        caption = f"{parameter} {value_label(cell[parameter])} · seed {cell['seed']}"
        gallery.append((save_png(image, parameters), caption + (f" · {stopped}" * bool(stopped))))
    info = {"sweep": record, "interrupted": bool(stopped), "cells": [result.info for result in results]}
    yield gallery, info


def sweep_controls(tab: str):
    """A tab's "Sweep" section: the parameter to vary, its values, optional seeds, and the button."""
    with gr.Accordion("Sweep: compare values side by side", open=False):
        choices = sweepable(tab)
        parameter = Dropdown(list(choices), value=choices[0], label="Parameter", elem_id=f"{tab}-sweep-parameter")
        with gr.Row():
            values = Textbox("", label="Values (columns)", placeholder="0, 0.5, 1, 2", elem_id=f"{tab}-sweep-values")
            seeds = Textbox("", label="Seeds (rows; empty: the seed above)", placeholder="1, 2, 3")
        button = gr.Button(f"Run sweep (at most {MAX_CELLS} images)", elem_id=f"{tab}-sweep")
    return parameter, values, seeds, button


def wire_sweep(tab: str, controls, inputs: list, gallery, info, first=None) -> None:
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
    sweep_inputs += [pictures.get(name, none) for name in PICTURES]
    gathered.then(
        sweep,
        sweep_inputs,
        [gallery, info],
        api_name=f"{tab}_sweep",  # private; without a name of its own it would take "sweep" from the public one
        api_visibility="private",
        concurrency_id=GPU_QUEUE,
        concurrency_limit=1,
    )


def sweep_endpoint() -> gr.Button:
    """The /sweep API endpoint, on hidden components (the tabs' own Sweep sections call the same function)."""
    with gr.Column(visible=False):
        inputs = [
            Textbox("txt2img"),
            Textbox(""),
            Textbox(""),
            Textbox(""),
            KeywordValues(None),
            *(Image(type="pil", image_mode=None, format="png") for _ in range(3)),
        ]
        gallery, info, button = gr.Gallery(format="png"), gr.JSON(), gr.Button()
    name_inputs(sweep, inputs)
    button.click(sweep, inputs, [gallery, info], api_name="sweep", concurrency_id=GPU_QUEUE, concurrency_limit=1)
    return button
