"""Shared fixtures: tiny random models saved like real checkpoints, configured through the environment."""

import os

# Before anything imports huggingface_hub: an accidental download must fail fast, not hang.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("STUDIO_DEVICE", "cpu")

import pytest  # noqa: E402

from tests.tiny_models import save_tiny_clip, save_tiny_sd, save_tiny_unconditional  # noqa: E402


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Paths of a tiny unconditional pipeline and a tiny open_clip model (`local-dir:` reference)."""
    root = tmp_path_factory.mktemp("models")
    unet_dir = save_tiny_unconditional(str(root / "tiny-ddpm"))
    second_dir = save_tiny_unconditional(str(root / "tiny-ddpm-v"), seed=1, prediction_type="v_prediction")
    clip_ref = save_tiny_clip(str(root / "tiny-clip"))
    sd_dir = save_tiny_sd(str(root / "tiny-sd"))
    sd_inpaint_dir = save_tiny_sd(str(root / "tiny-sd-inpainting"), seed=1, inpainting=True)
    return {"unet": unet_dir, "unet_v": second_dir, "clip": clip_ref, "sd": sd_dir, "sd_inpaint": sd_inpaint_dir}


@pytest.fixture()
def configured(tiny_models, monkeypatch):
    """Point the app's environment variables at the tiny models, with an empty model cache."""
    from pipelines.cache import MODELS

    monkeypatch.setenv("UNCOND_MODELS", f"{tiny_models['unet']},{tiny_models['unet_v']}")
    monkeypatch.setenv("CLIP_MODEL", tiny_models["clip"])
    monkeypatch.setenv("SD_MODEL", tiny_models["sd"])
    monkeypatch.setenv("SD_INPAINT_MODEL", tiny_models["sd_inpaint"])
    MODELS.clear()
    yield tiny_models
    MODELS.clear()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def server(tiny_models, tmp_path_factory):
    """`python app.py` on a free port with the tiny models configured through the environment; yields its URL."""
    import subprocess
    import sys
    import time
    import urllib.request

    port = _free_port()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(
        os.environ,
        UNCOND_MODELS=f"{tiny_models['unet']},{tiny_models['unet_v']}",
        CLIP_MODEL=tiny_models["clip"],
        SD_MODEL=tiny_models["sd"],
        SD_INPAINT_MODEL=tiny_models["sd_inpaint"],
        GRADIO_SERVER_NAME="127.0.0.1",
        GRADIO_SERVER_PORT=str(port),
        GRADIO_ANALYTICS_ENABLED="False",
        STUDIO_OUTPUT_DIR=str(tmp_path_factory.mktemp("outputs")),
    )
    log = open(tmp_path_factory.mktemp("logs") / "server.log", "w+")
    process = subprocess.Popen([sys.executable, "app.py"], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                process.kill()
                raise RuntimeError(f"app.py did not start:\n{log.read()}")
            time.sleep(0.5)
    yield url
    process.terminate()
    process.wait(timeout=30)
    log.close()
