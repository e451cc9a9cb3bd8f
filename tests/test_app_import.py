"""Importing the app builds the UI but starts nothing, loads nothing and never initialises CUDA."""

import subprocess
import sys

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
SCRIPT = """
import torch
def forbidden(*args, **kwargs):
    raise AssertionError("CUDA touched at import time")
# Asking whether CUDA exists is fine (diffusers does it on import); initialising it is not.
torch.cuda._lazy_init = forbidden
torch.cuda.init = forbidden
import app
from pipelines.cache import MODELS
assert MODELS.load_count == 0, MODELS.load_count
names = sorted(d.api_name for d in app.demo.fns.values() if d.api_name and d.api_visibility == "public")
print(names)
"""


def test_import_is_side_effect_free(configured):
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == str(ENDPOINTS)
