"""No Hub: a model that cannot be loaded is reported in one sentence, and the status line names only what the page
offers."""

import itertools
import socket

import pytest
from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

from pipelines import bundled
from pipelines.bundled import (
    BUNDLED_LABEL,
    bundled_replaces,
    caused_by_unreachable_hub,
    status_text,
    unavailable_message,
)
from pipelines.cache import ModelCache, ModelUnavailableError

NOT_CACHED = "studio-tests/never-downloaded"  # a Hub id no cache holds; the tests run with HF_HUB_OFFLINE=1


def raised(*errors: BaseException) -> BaseException:
    """The first of `errors`, each raised from the next one (as `raise ... from` chains them)."""
    for outer, inner in itertools.pairwise(errors):
        outer.__cause__ = inner
    return errors[0]


@pytest.mark.parametrize(
    "error",
    [
        raised(OSError("Cannot load model x: the model is not fully cached locally"), OfflineModeIsEnabled("offline")),
        raised(RuntimeError("Failed to download"), FileNotFoundError("no file"), LocalEntryNotFoundError("no entry")),
        raised(OSError("not cached"), ConnectionRefusedError(111, "refused")),
        raised(OSError("not cached"), socket.gaierror(-2, "Name or service not known")),
    ],
    ids=["offline-mode", "open_clip-chain", "refused", "dns"],
)
def test_unreachable_hub_is_recognised_anywhere_in_the_chain(error):
    assert caused_by_unreachable_hub(error)


@pytest.mark.parametrize(
    "error",
    [
        ValueError('"/no/such/folder" is neither a valid local path nor a valid repo id'),
        OSError("model does not appear to have a file named config.json"),
        raised(RuntimeError("CUDA out of memory"), MemoryError()),
    ],
)
def test_other_load_errors_are_not_blamed_on_the_hub(error):
    assert not caused_by_unreachable_hub(error)


@pytest.mark.parametrize(
    ("kind", "model", "setting"),
    [
        ("unconditional", "google/ddpm-celebahq-256", "UNCOND_MODELS"),
        ("clip", "ViT-B-32/openai", "CLIP_MODEL"),
        ("sd", "stable-diffusion-v1-5/stable-diffusion-v1-5", "SD_MODEL"),
        ("sd-inpaint", "stable-diffusion-v1-5/stable-diffusion-inpainting", "SD_INPAINT_MODEL"),
    ],
)
def test_unavailable_message_is_one_sentence_that_says_what_to_pick(kind, model, setting):
    offered, not_offered = unavailable_message(model, kind, True), unavailable_message(model, kind, False)
    for message in (offered, not_offered):
        assert message.startswith("Cannot load ") and model in message and "Hub is unreachable" in message
        assert message.endswith(".") and message.count(". ") == 0 and "\n" not in message and len(message) < 200
        assert "stacktrace" not in message and "local_files_only" not in message
    assert f'pick "{BUNDLED_LABEL}" in the Model box' in offered and setting not in offered
    assert setting in not_offered and BUNDLED_LABEL not in not_offered


def test_bundled_is_suggested_only_where_its_weights_are(monkeypatch, tmp_path):
    monkeypatch.setenv("BUNDLED_MODELS_DIR", str(tmp_path))
    assert not any(bundled_replaces(kind) for kind in ("unconditional", "clip", "sd", "sd-inpaint"))
    (tmp_path / bundled.WEIGHT_FILES["ddpm"]).parent.mkdir(parents=True)
    (tmp_path / bundled.WEIGHT_FILES["ddpm"]).touch()
    assert bundled_replaces("unconditional") and not bundled_replaces("clip") and not bundled_replaces("sd")
    (tmp_path / bundled.WEIGHT_FILES["clip"]).parent.mkdir(parents=True)
    (tmp_path / bundled.WEIGHT_FILES["clip"]).touch()
    assert bundled_replaces("clip")  # the bundled preset guides with the bundled CLIP


def test_cache_reports_an_unreachable_hub_and_passes_other_errors_through(monkeypatch, tmp_path):
    monkeypatch.setenv("BUNDLED_MODELS_DIR", str(tmp_path))  # no bundled models
    cache = ModelCache()

    def offline_loader():
        raise raised(OSError("Cannot load model: not fully cached locally"), OfflineModeIsEnabled("offline"))

    with pytest.raises(ModelUnavailableError) as caught:
        cache.get(("unconditional", NOT_CACHED, "cpu"), offline_loader)
    assert str(caught.value) == unavailable_message(NOT_CACHED, "unconditional", bundled_offered=False)
    with pytest.raises(ModelUnavailableError, match="Cannot load CLIP ViT-B-32/openai: "):
        cache.get(("clip", "ViT-B-32", "openai", "cpu"), offline_loader)

    def broken_loader():
        raise ValueError("bad config")

    with pytest.raises(ValueError, match="bad config"):
        cache.get(("unconditional", "/some/folder", "cpu"), broken_loader)
    assert cache.get(("unconditional", NOT_CACHED, "cpu"), lambda: "loaded") == "loaded"  # a failure is not cached
    assert cache.load_count == 1


def test_real_loaders_offline_say_which_model_and_what_to_set(configured, monkeypatch, tmp_path):
    from PIL import Image

    from pipelines import stable_diffusion as sd
    from pipelines import unconditional as uncond

    monkeypatch.setenv("BUNDLED_MODELS_DIR", str(tmp_path))  # no bundled models: the message names the setting
    monkeypatch.setenv("UNCOND_MODELS", f"{NOT_CACHED},{configured['unet']}")
    with pytest.raises(ModelUnavailableError) as caught:
        uncond.generate(uncond.Request(model=NOT_CACHED, steps=1, seed=1))
    assert str(caught.value) == unavailable_message(NOT_CACHED, "unconditional", bundled_offered=False)
    monkeypatch.setenv("CLIP_MODEL", f"hf-hub:{NOT_CACHED}")
    with pytest.raises(ModelUnavailableError, match=f"^Cannot load CLIP hf-hub:{NOT_CACHED}: .* set CLIP_MODEL"):
        uncond.generate(uncond.Request(model=configured["unet"], steps=1, prompt="a cat", clip_scale=1))
    monkeypatch.setenv("SD_MODEL", NOT_CACHED)
    for width in (64, None):  # None: the native size is read from the (uncached) config first
        with pytest.raises(ModelUnavailableError, match=f"^Cannot load {NOT_CACHED}: .* set SD_MODEL"):
            sd.generate(sd.Request(task="txt2img", prompt="x", width=width, height=width, steps=1))
    monkeypatch.setenv("SD_MODEL", configured["sd"])
    monkeypatch.setenv("SD_INPAINT_MODEL", NOT_CACHED)
    image, mask = Image.new("RGB", (64, 64)), Image.new("L", (64, 64), 255)
    with pytest.raises(ModelUnavailableError, match=f"^Cannot load {NOT_CACHED}: .* set SD_INPAINT_MODEL"):
        sd.generate(sd.Request(task="inpaint", image=image, mask=mask, steps=1))


STATUS_CASES = {  # (device, on a Space, bundled models present, Hub unreachable) -> what the line must say
    ("cuda", False, (), False): ["Running on **CUDA**."],
    ("cpu", False, (), False): ["**CPU**", "few steps"],
    ("cpu", True, (), False): ["few steps", "Settings > Hardware"],
    ("cpu", False, ("ddpm", "sd"), False): ["few steps", f"pick **{BUNDLED_LABEL}**"],
    ("cpu", True, ("ddpm", "sd"), False): [f"**{BUNDLED_LABEL}**", "Settings > Hardware"],
    ("cpu", False, ("ddpm", "sd"), True): ["unreachable", f"every tab defaults to **{BUNDLED_LABEL}**"],
    ("cuda", True, ("ddpm",), True): ["**CUDA**", "Unconditional, Color-guided and CLIP-guided tabs default to"],
    ("cpu", False, (), True): ["unreachable", "local cache"],
}


@pytest.mark.parametrize("case", list(STATUS_CASES), ids=lambda case: "-".join(map(str, case)))
def test_status_line_names_only_what_the_page_offers(case):
    device, on_space, present, offline = case
    text = status_text(device, on_space, present, offline)
    for expected in STATUS_CASES[case]:
        assert expected in text, text
    assert "\n" not in text and text.count(". ") == 0  # one line, one sentence
    assert ("Settings > Hardware" in text) == (on_space and device == "cpu" and not offline)
    assert (BUNDLED_LABEL in text) == bool(present)
    assert ("unreachable" in text) == offline
