"""Importing the app builds the UI but starts nothing, loads nothing and never initialises CUDA."""

ENDPOINTS = [
    "clip_guided",
    "color_guided",
    "img2img",
    "inpaint",
    "read_parameters",
    "sweep",
    "txt2img",
    "unconditional",
]


def test_import_is_side_effect_free(configured, monkeypatch):
    """Building the app (importing it: here reloading it, in-process, which runs the same module code without a
    second interpreter's 15 s of imports) loads no model and never initialises CUDA."""
    import importlib

    import torch

    def forbidden(*args, **kwargs):
        raise AssertionError("CUDA touched at import time")

    # Asking whether CUDA exists is fine (diffusers does it on import); initialising it is not.
    monkeypatch.setattr(torch.cuda, "_lazy_init", forbidden)
    monkeypatch.setattr(torch.cuda, "init", forbidden)
    from pipelines.cache import MODELS

    loads = MODELS.load_count
    import app

    app = importlib.reload(app)
    assert MODELS.load_count == loads
    names = sorted(d.api_name for d in app.demo.fns.values() if d.api_name and d.api_visibility == "public")
    assert names == ENDPOINTS  # the documented endpoints, each one an MCP tool
    hidden = sorted(d.api_name for d in app.demo.fns.values() if d.api_visibility == "undocumented")
    # /stop is callable by gradio_client (a script stops its own job) but no use to an agent; so are Gradio's own
    # example loaders
    assert [name for name in hidden if not name.startswith("load_example")] == ["stop"]


def test_the_mcp_server_is_on_unless_gradios_variable_turns_it_off(monkeypatch):
    import app

    monkeypatch.delenv("GRADIO_MCP_SERVER", raising=False)
    assert app.mcp_server_on()
    for value, on in (("false", False), ("False", False), ("0", False), ("true", True), ("True", True)):
        monkeypatch.setenv("GRADIO_MCP_SERVER", value)
        assert app.mcp_server_on() is on, value


def test_every_argument_of_every_generation_endpoint_is_described():
    """What view_api and an MCP client read of each endpoint: a summary, and one line per argument saying what it
    does and its range or choices (Gradio's own docstring parser, the one its MCP server uses)."""
    from gradio.utils import get_function_description

    import app

    for name in ("unconditional", "color_guided", "clip_guided", "txt2img", "img2img", "inpaint", "sweep"):
        handler = app.HANDLERS.get(name) or getattr(app, name)
        summary, arguments, _ = get_function_description(handler)
        arguments = {key: text for key, text in arguments.items() if key not in ("request", "progress")}
        assert summary and all(len(text) > 20 for text in arguments.values()), (name, arguments)
    _, arguments, _ = get_function_description(app.HANDLERS["txt2img"])
    assert "DPM++ 2M Karras" in arguments["scheduler"] and "1 to 150" in arguments["steps"]
    assert "(default 'auto')" in arguments["color_decoder"]


def test_the_handlers_own_defaults_are_the_api_defaults():
    """A keyword default written in a handler (inpaint's, so that its mask is optional for outpainting) is the page's
    value, the default an API or MCP caller gets; and inpaint's mask is optional while its image is not."""
    import inspect

    import app

    endpoints = app.demo.get_api_info()["named_endpoints"]
    for name in ("unconditional", "color_guided", "clip_guided", "txt2img", "img2img", "inpaint"):
        signature = inspect.signature(app.HANDLERS[name]).parameters
        for parameter in endpoints[f"/{name}"]["parameters"]:
            default = signature[parameter["parameter_name"]].default
            if default not in (inspect.Parameter.empty, None) and parameter["parameter_has_default"]:
                assert default == parameter["parameter_default"], (name, parameter["parameter_name"])
    inpaint = {parameter["parameter_name"]: parameter for parameter in endpoints["/inpaint"]["parameters"]}
    assert inpaint["mask"]["parameter_has_default"] and not inpaint["image"]["parameter_has_default"]
