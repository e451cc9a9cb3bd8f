"""Shared fixtures: tiny random models saved like real checkpoints, configured through the environment."""

import contextlib
import os

# Before anything imports huggingface_hub: an accidental download must fail fast, not hang.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("STUDIO_DEVICE", "cpu")
# One torch thread per process (inherited by the app servers the tests start): the tiny models gain nothing from
# more, and on a machine whose cores are busy (a training run, Chromium, the test process itself) threads that wait
# for each other at every op made a tiny UNet forward 27x slower (17.7 s instead of 0.65 s) on 2 shared cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")

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


def tiny_model_settings(tiny_models, tmp_path_factory) -> dict[str, str]:
    """The environment that makes the tiny models the app's models (and hides whatever models/emoji holds)."""
    return {
        "UNCOND_MODELS": f"{tiny_models['unet']},{tiny_models['unet_v']}",
        "CLIP_MODEL": tiny_models["clip"],
        "SD_MODEL": tiny_models["sd"],
        "SD_INPAINT_MODEL": tiny_models["sd_inpaint"],
        "BUNDLED_MODELS_DIR": str(tmp_path_factory.mktemp("no-bundled-models")),
    }


@pytest.fixture()
def configured(tiny_models, monkeypatch, tmp_path_factory):
    """Point the app's environment variables at the tiny models, with an empty model cache and no bundled models
    (whatever models/emoji holds), so the tiny models are the defaults."""
    from pipelines.cache import MODELS

    for key, value in tiny_model_settings(tiny_models, tmp_path_factory).items():
        monkeypatch.setenv(key, value)
    MODELS.clear()
    yield tiny_models
    MODELS.clear()


@pytest.fixture(scope="session")
def sdxl_folder(tmp_path_factory) -> str:
    from tests.tiny_models import save_tiny_sdxl

    return save_tiny_sdxl(str(tmp_path_factory.mktemp("tiny-sdxl")))


@pytest.fixture()
def sdxl(configured, sdxl_folder, monkeypatch) -> str:
    """The tiny SDXL as the Stable Diffusion tabs' model."""
    from pipelines.cache import MODELS

    monkeypatch.setenv("SD_MODEL", sdxl_folder)
    MODELS.clear()
    return sdxl_folder


MODEL_SETTINGS = ("UNCOND_MODELS", "CLIP_MODEL", "CLIP_PRETRAINED", "SD_MODEL", "SD_INPAINT_MODEL")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def gallery_pixels(gallery) -> list:
    """The uint8 arrays of a gallery answer's images, read from their files (clients that skip downloads give the
    server's paths; the tests run on the same machine)."""
    import numpy as np
    from PIL import Image

    paths = [item["image"]["path"] if isinstance(item["image"], dict) else item["image"] for item in gallery]
    return [np.asarray(Image.open(path)) for path in paths]


SERVERS: dict[str, dict] = {}  # url of each running app -> {"log": its stdout+stderr file, "pid", "outputs": folder}


@contextlib.contextmanager
def running_app(settings: dict[str, str], tmp_path_factory, drop: tuple[str, ...] = ()):
    """`python app.py` on a free port with `settings` added to the environment and `drop` removed; yields its URL."""
    import subprocess
    import sys
    import time
    import urllib.request

    port = _free_port()
    outputs = str(tmp_path_factory.mktemp("outputs"))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {key: value for key, value in os.environ.items() if key not in drop}
    env.update(
        GRADIO_SERVER_NAME="127.0.0.1",
        GRADIO_SERVER_PORT=str(port),
        GRADIO_ANALYTICS_ENABLED="False",
        STUDIO_OUTPUT_DIR=outputs,
        **settings,
    )
    log_path = tmp_path_factory.mktemp("logs") / "server.log"
    log = open(log_path, "w+")
    process = subprocess.Popen([sys.executable, "app.py"], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 300
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                process.kill()
                raise RuntimeError(f"app.py did not start:\n{log.read()}") from None
            time.sleep(0.5)
    SERVERS[url] = {"log": str(log_path), "pid": process.pid, "outputs": outputs}
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.fixture(scope="session")
def server(tiny_models, tmp_path_factory):
    """`python app.py` with the tiny models configured through the environment (and no bundled models, whatever
    models/emoji holds, so the tiny models are the defaults); yields its URL."""
    settings = {
        **tiny_model_settings(tiny_models, tmp_path_factory),
        "STUDIO_OUTPUT_MAX_FILES": str(OUTPUT_MAX_FILES),
        # Previews after any step, at most 5 a second: the tiny models run hundreds of steps a second.
        "STUDIO_PREVIEW_STEPS": "1",
        "STUDIO_PREVIEW_SECONDS": "0.2",
    }
    with running_app(settings, tmp_path_factory) as url:
        yield url


OUTPUT_MAX_FILES = 40  # the test server's output folder limit, low enough for the leak test to reach it


@pytest.fixture(scope="session")
def emoji_bundle(tiny_models, tmp_path_factory):
    """A folder laid out like the bundled emoji models: the shipped models/emoji when its weights exist, else the
    tiny random models (the training scripts' own export is tested in test_training.py)."""
    from pipelines import bundled

    shipped = os.path.join(bundled.REPO_ROOT, "models", "emoji")
    if all(bundled.weights_at(os.path.join(shipped, bundled.WEIGHT_FILES[name])) for name in ("ddpm", "clip", "sd")):
        return shipped
    root = tmp_path_factory.mktemp("emoji-bundle")
    for name, folder in (("ddpm", tiny_models["unet"]), ("clip", tiny_models["clip"]), ("sd", tiny_models["sd"])):
        os.symlink(folder.removeprefix("local-dir:"), root / name)
    return str(root)


# The slowest test files, slowest first (2 cores, 2026-11-26: 66 s down to 15 s). With `--dist loadfile` a file runs
# whole on one worker, and with `--no-loadscope-reorder` (pyproject.toml; xdist otherwise orders files by their number
# of tests) files are handed out in collection order: the long ones start first and the short ones fill the gaps.
SLOWEST_FILES = (
    "test_stable_diffusion",
    "test_bundled_models",
    "test_browser",
    "test_offline_e2e",
    "test_app_e2e",
    "test_zerogpu",
    "test_sampler",
    "test_load",
    "test_training",
    "test_fuzz",
    "test_sessions",
)


def pytest_collection_modifyitems(items):
    rank = {name: position for position, name in enumerate(SLOWEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # a stable sort: each file keeps its order
