"""Importing the app builds the UI but starts nothing, loads nothing and never initialises CUDA."""

ENDPOINTS = [
    "clip_guided",
    "color_guided",
    "img2img",
    "inpaint",
    "read_parameters",
    "stop",
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
    assert names == ENDPOINTS
