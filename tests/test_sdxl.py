"""SDXL and SD 2.x (v-prediction) in the Stable Diffusion tabs: with no guidance the one guided loop gives the pixels
of diffusers' own pipelines, and guidance moves the images; families come from the checkpoints' configs."""

import json
import shutil

import numpy as np
import pytest
import torch

from pipelines import stable_diffusion as sd
from pipelines.cache import MODELS


@pytest.fixture()
def v_prediction(configured, tmp_path, monkeypatch) -> str:
    """The tiny SD checkpoint re-saved with a v-prediction scheduler (as SD 2.1 768 ships), as the tabs' model."""
    folder = str(tmp_path / "tiny-sd-v")
    shutil.copytree(configured["sd"], folder)
    path = f"{folder}/scheduler/scheduler_config.json"
    with open(path) as handle:
        config = json.load(handle)
    with open(path, "w") as handle:
        json.dump({**config, "prediction_type": "v_prediction"}, handle)
    monkeypatch.setenv("SD_MODEL", folder)
    MODELS.clear()
    return folder


def _bare(task: str, scheduler: str, request, seeds: list[int]):
    pipeline = sd.build_pipeline(task, scheduler)[0]
    return pipeline(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt or None,
        num_inference_steps=request.steps,
        guidance_scale=request.guidance_scale,
        num_images_per_prompt=len(seeds),
        generator=[torch.Generator().manual_seed(seed) for seed in seeds],
        **sd._call_arguments(request),
    ).images


@pytest.mark.parametrize(
    "scheduler, fields",
    [
        ("Euler", {}),
        ("Euler a", {"negative_prompt": "blurry"}),
        ("DPM++ 2M Karras", {"guidance_scale": 1.0}),  # no CFG: one pass
        ("DDIM", {"negative_prompt": ""}),  # an empty negative prompt: SDXL's zeros
    ],
)
def test_sdxl_txt2img_gives_the_bare_pipelines_pixels(sdxl, scheduler, fields):
    request = sd.validate(
        sd.Request(task="txt2img", prompt="a red heart", steps=4, batch_size=2, seed=5, scheduler=scheduler, **fields)
    )
    ours = sd.generate(request)
    assert sd.model_family().kind == "SDXL" and ours.info["model"] == sdxl
    for mine, theirs in zip(ours.images, _bare("txt2img", scheduler, request, [5, 6]), strict=True):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))


@pytest.mark.parametrize("scheduler", ["DDIM", "Euler a", "DPM++ 2M Karras"])
def test_v_prediction_txt2img_gives_the_bare_pipelines_pixels(v_prediction, scheduler):
    request = sd.validate(
        sd.Request(task="txt2img", prompt="a red heart", negative_prompt="blurry", steps=4, seed=3, scheduler=scheduler)
    )
    assert sd.model_family().prediction_type == "v_prediction"
    ours = sd.generate(request)
    theirs = _bare("txt2img", scheduler, request, [3])
    np.testing.assert_array_equal(np.asarray(ours.images[0]), np.asarray(theirs[0]))


@pytest.mark.parametrize("family, scheduler", [("sdxl", "DDIM"), ("v_prediction", "DDIM"), ("lcm", "LCM")])
def test_color_and_clip_guidance_reach_each_family(family, scheduler, request):
    """Guidance reaches SDXL, v-prediction and latent consistency models through the one loop (random tiny VAEs
    cannot show a colour, so this asserts that the pixels move and the info records the guidance)."""
    request.getfixturevalue(family)
    base = dict(task="txt2img", prompt="a heart", steps=4, seed=2, scheduler=scheduler)
    plain = np.asarray(sd.generate(sd.Request(**base)).images[0]).astype(float)
    for guidance in (dict(color="#ff0000", color_scale=2.0), dict(clip_prompt="a blue square", clip_scale=4.0)):
        guided = sd.generate(sd.Request(**base, **guidance))
        assert np.abs(np.asarray(guided.images[0]).astype(float) - plain).mean() > 1, guidance
        assert all(guided.info[name] == value for name, value in guidance.items())


def test_each_vae_family_gets_its_published_latent_to_rgb_map():
    from guidance.latent_rgb import SD15, SDXL, latent_rgb_for

    assert latent_rgb_for(None, {"latent_channels": 4, "scaling_factor": 0.13025}) is SDXL
    assert latent_rgb_for(None, {"latent_channels": 4, "scaling_factor": 0.18215}) is SD15
    assert latent_rgb_for(None, {"latent_channels": 16, "scaling_factor": 1.5305}) is None


@pytest.mark.parametrize(
    "task, scheduler, strength",
    [
        ("img2img", "Euler", 0.6),
        ("img2img", "DPM++ 2M Karras", 0.8),
        ("inpaint", "DDIM", 0.7),
        ("inpaint", "Euler a", 1.0),
    ],
)
def test_sdxl_img2img_and_inpainting_give_the_bare_pipelines_pixels(sdxl, task, scheduler, strength):
    """SDXL's img2img and inpainting (its base UNet, the known region put back each step) on the one loop equal
    StableDiffusionXL(Img2Img|Inpaint)Pipeline pixel for pixel."""
    from tests.test_stable_diffusion import box_mask, noise_image

    fields = dict(image=noise_image((64, 64), seed=2), strength=strength)
    if task == "inpaint":
        fields.update(mask=box_mask((64, 64), (8, 16, 48, 56)), mask_blur=0)
    request = sd.validate(
        sd.Request(task=task, prompt="a red heart", negative_prompt="blurry", steps=5, batch_size=2, seed=5,
                   scheduler=scheduler, **fields)
    )  # fmt: skip
    ours = sd.generate(request)
    for mine, theirs in zip(ours.images, _bare(task, scheduler, request, [5, 6]), strict=True):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(sd._finisher(request)(theirs)))


@pytest.fixture()
def lcm(configured, tmp_path, monkeypatch) -> str:
    """A tiny latent consistency model (a UNet that reads the CFG scale as an embedding, an LCM scheduler)."""
    from diffusers import LCMScheduler, StableDiffusionPipeline

    from tests.tiny_models import tiny_sd_components

    components = tiny_sd_components(seed=4, time_cond_proj_dim=8)
    components["scheduler"] = LCMScheduler.from_config(components["scheduler"].config)
    folder = str(tmp_path / "tiny-lcm")
    StableDiffusionPipeline(**components).save_pretrained(folder)
    monkeypatch.setenv("SD_MODEL", folder)
    MODELS.clear()
    return folder


@pytest.mark.parametrize("task", ["txt2img", "img2img"])
def test_lcm_gives_the_bare_pipelines_pixels(lcm, task):
    """A latent consistency model (guidance embedding, LCM scheduler drawing noise every step) on the one loop
    equals diffusers' pipeline; its family says LCM and starts it at 4 steps."""
    from tests.test_stable_diffusion import noise_image

    family = sd.model_family()
    assert family.few_step == "LCM" and family.defaults()["steps"] == 4
    fields = {} if task == "txt2img" else dict(image=noise_image((64, 64), seed=2), strength=0.8)
    request = sd.validate(
        sd.Request(task=task, prompt="a red heart", steps=4, batch_size=2, seed=5, scheduler="LCM",
                   guidance_scale=8.5, **fields)
    )  # fmt: skip
    ours = sd.generate(request)
    for mine, theirs in zip(ours.images, _bare(task, "LCM", request, [5, 6]), strict=True):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(sd._finisher(request)(theirs)))


def test_a_dedicated_sdxl_inpainting_model_gives_its_bare_pipelines_pixels(sdxl, tmp_path, monkeypatch):
    """A 9-channel SDXL inpainting checkpoint, paired with an SDXL default model, inpaints as
    StableDiffusionXLInpaintPipeline does (mask and masked-image latents beside the sample, size ids)."""
    from tests.test_stable_diffusion import box_mask, noise_image
    from tests.tiny_models import save_tiny_sdxl

    monkeypatch.setenv("SD_INPAINT_MODEL", save_tiny_sdxl(str(tmp_path / "xl-inpaint"), seed=3, inpainting=True))
    fields = dict(image=noise_image((64, 64), seed=2), mask=box_mask((64, 64), (8, 16, 48, 56)), mask_blur=0)
    request = sd.validate(
        sd.Request(task="inpaint", prompt="a red heart", steps=4, batch_size=2, seed=5, strength=1.0, **fields)
    )
    ours = sd.generate(request)
    assert ours.info["model"] == str(tmp_path / "xl-inpaint")
    for mine, theirs in zip(ours.images, _bare("inpaint", request.scheduler, request, [5, 6]), strict=True):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(sd._finisher(request)(theirs)))


def test_sd_models_lists_the_choices_and_each_runs_its_own_family(configured, sdxl_folder, monkeypatch):
    """SD_MODELS offers several checkpoints, the first the default; each loads once, on its family's pipelines; the
    inpainting checkpoint serves only the default model; a model the server does not list is refused by name."""
    monkeypatch.setenv("SD_MODELS", f"{configured['sd']}, {sdxl_folder}")
    monkeypatch.setenv("STUDIO_SD_MODELS_KEPT", "2")  # both stay loaded: each loads once
    MODELS.clear()
    assert sd.sd_models() == [configured["sd"], sdxl_folder]
    assert sd.model_locations(None) == (configured["sd"], configured["sd_inpaint"])
    assert sd.model_locations(sdxl_folder) == (sdxl_folder, sdxl_folder)
    plain = sd.generate(sd.Request(task="txt2img", prompt="a heart", steps=2, seed=1))
    xl = sd.generate(sd.Request(task="txt2img", prompt="a heart", steps=2, seed=1, model=sdxl_folder))
    assert (plain.info["model"], xl.info["model"]) == (configured["sd"], sdxl_folder)
    assert sd.build_pipeline("txt2img", "DDIM", sdxl_folder)[0].__class__.__name__ == "StableDiffusionXLPipeline"
    assert sd.build_pipeline("txt2img", "DDIM")[0].__class__.__name__ == "StableDiffusionPipeline"
    assert MODELS.load_count == 2
    with pytest.raises(ValueError, match="model .*/elsewhere.* is not one of"):
        sd.validate(sd.Request(task="txt2img", prompt="x", model="/elsewhere"))


def test_a_few_step_model_sets_the_tabs_defaults_and_says_so(configured, tmp_path, monkeypatch):
    """Picking a few-step model (an SD-Turbo-like config: trailing schedule at 512 px) moves the tab's scheduler,
    steps and CFG scale to its family's; a plain model gets the tab's own defaults and its pipeline's CFG scale."""
    folder = str(tmp_path / "tiny-turbo")
    shutil.copytree(configured["sd"], folder)
    for part, change in (("scheduler/scheduler_config.json", {"timestep_spacing": "trailing"}),
                         ("unet/config.json", {"sample_size": 64})):  # fmt: skip
        with open(f"{folder}/{part}") as handle:
            config = json.load(handle)
        with open(f"{folder}/{part}", "w") as handle:
            json.dump({**config, **change}, handle)
    monkeypatch.setenv("SD_MODELS", f"{configured['sd']},{folder}")
    turbo, message = sd.family_defaults("txt2img", folder)
    assert turbo == {"scheduler": "Euler a", "steps": 1, "guidance_scale": 0.0}
    assert "few-step model (turbo)" in message and "1 step," in message
    plain, message = sd.family_defaults("img2img", configured["sd"])
    assert message is None and plain["guidance_scale"] == 7.5
    assert plain["steps"] == sd.SD["steps"].default and plain["scheduler"] == sd.SD["scheduler"].default
    quick = sd.generate(sd.Request(task="txt2img", prompt="a heart", model=folder, **turbo))
    assert (quick.info["steps"], quick.info["guidance_scale"]) == (1, 0.0)


def test_picking_another_checkpoint_frees_the_last_one_unless_more_are_kept(configured, sdxl_folder, monkeypatch):
    """One Stable Diffusion checkpoint (with its inpainting partner) stays loaded by default: picking another forgets
    the first, whose weights go once no request holds them; STUDIO_SD_MODELS_KEPT=2 keeps both."""
    import gc
    import weakref

    from tests.test_stable_diffusion import box_mask, noise_image

    monkeypatch.setenv("SD_MODELS", f"{configured['sd']},{sdxl_folder}")
    MODELS.clear()
    inpaint = dict(image=noise_image((64, 64)), mask=box_mask((64, 64), (8, 8, 40, 40)), steps=2, seed=1)
    sd.generate(sd.Request(task="txt2img", prompt="a", steps=2, seed=1))
    sd.generate(sd.Request(task="inpaint", prompt="a", **inpaint))  # the dedicated inpainting model joins it
    first = weakref.ref(sd.get_base_pipeline().unet)
    assert {key[0] for key in MODELS.loaded()} == {"sd", "sd-inpaint"}
    sd.generate(sd.Request(task="txt2img", prompt="a", steps=2, seed=1, model=sdxl_folder))
    gc.collect()
    assert [key[1] for key in MODELS.loaded()] == [sdxl_folder] and first() is None
    monkeypatch.setenv("STUDIO_SD_MODELS_KEPT", "2")
    sd.generate(sd.Request(task="txt2img", prompt="a", steps=2, seed=1))
    sd.generate(sd.Request(task="txt2img", prompt="a", steps=2, seed=1, model=sdxl_folder))
    assert sorted(key[1] for key in MODELS.loaded()) == sorted([configured["sd"], sdxl_folder])
    assert MODELS.load_count == 4  # SD, its inpainting model, SDXL, SD again: SDXL was kept


def test_components_placed_in_the_cache_get_their_family_from_their_configs():
    from diffusers import StableDiffusionXLPipeline

    from tests.tiny_models import tiny_sdxl_components

    pipeline = StableDiffusionXLPipeline(**tiny_sdxl_components(), add_watermarker=False)
    family = sd.remember_family("in-memory-components", pipeline)
    assert (family.kind, family.native_size) == ("SDXL", 64) and sd.checkpoint_family("in-memory-components") is family
