"""The parameter table is the one source: the endpoints, the page's controls, validation, the PNG parameters, sweeps
and the batch command all read it, so that each agrees with it."""

from __future__ import annotations

import inspect

import pytest

from pipelines.params import KEYWORDS, PICTURE, PIXEL, SD, TAB_DEFAULTS, defaults, keywords, param, sweepable
from pipelines.tabs import SD_TABS, TABS, family


def test_every_keyword_of_every_tab_has_an_entry_and_every_entry_is_used():
    assert tuple(KEYWORDS) == TABS
    for tab in TABS:
        assert len(set(keywords(tab))) == len(keywords(tab)), tab
        for name in keywords(tab):
            entry = param(tab, name)
            assert entry.label and entry.description and entry.kind in (bool, int, float, str, PICTURE), (tab, name)
            if entry.kind in (int, float) and name != "seed":
                assert entry.low <= (entry.default if entry.default is not None else entry.low) <= entry.high
    used = {name for tab in TABS for name in keywords(tab)}
    assert used == set(PIXEL) | set(SD)
    assert all(name in keywords(tab) for tab, overrides in TAB_DEFAULTS.items() for name in overrides)


def test_the_endpoints_take_exactly_the_tables_keywords_with_its_defaults_and_descriptions():
    from ui.handlers import HANDLERS

    for tab, handler in HANDLERS.items():
        parameters = inspect.signature(handler).parameters
        assert list(parameters) == [*keywords(tab), "request", "progress"]
        for name in keywords(tab):
            default = parameters[name].default
            assert default is inspect.Parameter.empty if name == "image" else default == param(tab, name).default
            assert f"    {name}: {param(tab, name).describe()}" in handler.__doc__
        # the request type takes every keyword but the two that only the handler reads
        fields = {name for name in keywords(tab) if name not in ("batch_count", "previews")}
        family(tab).request(tab, dict.fromkeys(fields))  # no TypeError: every field exists


def test_the_requests_defaults_are_the_families_defaults():
    for tab in ("unconditional", "txt2img"):
        request = family(tab).request(tab, {})
        table = PIXEL if tab == "unconditional" else SD
        for name, entry in table.items():
            if hasattr(request, name) and entry.kind is not PICTURE:
                assert getattr(request, name) == entry.default, (tab, name)


@pytest.fixture(scope="module")
def page_inputs():
    """Each tab's endpoint inputs in the built page: {tab: {keyword: component}}."""
    import app

    inputs = {}
    for function in app.demo.fns.values():
        if function.api_name in TABS:
            inputs[function.api_name] = {component.api_keyword: component for component in function.inputs}
    return inputs


def test_the_pages_controls_have_the_tables_ranges_values_and_labels(page_inputs):
    import gradio as gr

    assert set(page_inputs) == set(TABS)
    for tab, components in page_inputs.items():
        assert list(components) == list(keywords(tab))
        for name, component in components.items():
            entry = param(tab, name)
            if isinstance(component, gr.Slider):
                assert (component.minimum, component.maximum, component.step) == (entry.low, entry.high, entry.step)
                if name not in ("width", "height"):  # those start at the model's native size
                    assert component.value == entry.default, (tab, name)
            if name != "image" or tab != "inpaint":  # the inpainting editor's plain image is labelled as the input
                assert component.label.startswith(entry.label), (tab, name, component.label)


@pytest.mark.parametrize("tab", TABS)
def test_a_refusal_names_the_keyword_and_the_label_the_page_shows(tab, page_inputs):
    from PIL import Image

    runs = family(tab)
    pictures = {"image": Image.new("RGB", (64, 64)), "mask": Image.new("L", (64, 64), 255)}
    pictures = {key: value for key, value in pictures.items() if key in keywords(tab)}
    for name in keywords(tab):
        entry = param(tab, name)
        if entry.kind not in (int, float) or name in ("batch_count", "seed"):
            continue
        with pytest.raises(ValueError) as refused:
            runs.validate(runs.request(tab, {**pictures, name: entry.high + 8}))
        message = str(refused.value)
        assert message.startswith(name) and f'("{entry.label}" in the page)' in message, message
        assert page_inputs[tab][name].label.startswith(entry.label)


def test_what_a_png_records_reads_back_as_the_same_keyword_values():
    from pipelines.infotext import infotext, parse_infotext, request_values

    for tab in ("clip_guided", "inpaint"):
        values = {}
        for name in keywords(tab):
            entry = param(tab, name)
            if entry.png_key and entry.kind in (int, float) and name != "seed":
                values[name] = entry.kind(entry.high)
            elif entry.png_key and entry.kind is str and entry.choices is None:
                values[name] = f"{name} text"
        values["seed"] = 123
        parameters = {"task": tab, **values, "clip_scale": 2.0, "color_decoder": "vae: the VAE decoder"}
        read_tab, read, skipped = request_values(parse_infotext(infotext(parameters, (64, 64))))
        expected = {key: value for key, value in parameters.items() if key in read and key != "color_decoder"}
        assert read_tab == tab and not skipped
        assert {key: read[key] for key in expected} == expected
        assert set(expected) >= {key for key in values if key != "model"} - {"model"}


def test_sweeps_vary_numbers_of_the_tab_and_the_batch_command_types_every_keyword():
    from batch import typed_values

    for tab in TABS:
        assert sweepable(tab) and all(param(tab, name).kind in (int, float, str) for name in sweepable(tab))
        assert all(param(tab, name).options() for name in sweepable(tab) if param(tab, name).kind is str)
        assert set(sweepable(tab)) <= set(keywords(tab))
        options, expected = {}, {}
        for name, default in defaults(tab).items():
            entry = param(tab, name)
            if entry.kind in (int, float, bool) and default is not None and name != "previews":
                options[name], expected[name] = str(default).lower() if entry.kind is bool else str(default), default
        typed = typed_values(tab, options)
        assert typed == expected and all(type(typed[name]) is param(tab, name).kind for name in typed)


def test_the_sd_family_differs_from_the_pixel_family_only_where_the_table_says():
    assert SD["steps"].high < PIXEL["steps"].high and SD["batch_size"].label == "Number of images"
    assert param("inpaint", "strength").default == 1.0 and param("img2img", "strength").default == 0.75
    assert param("clip_guided", "clip_scale").default == PIXEL["clip_scale"].clear > PIXEL["clip_scale"].default
    assert param("clip_guided", "recurrence").default == 1 == param("color_guided", "recurrence").default
    for tab in SD_TABS:
        assert param(tab, "color").default == SD["color"].default
