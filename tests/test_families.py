"""Model families read from configs (pipelines.families): the published checkpoints' config facts
(docs/model-families-research.md) give each its family, native size, prediction type and few-step kind."""

import pytest

from pipelines.families import FEW_STEP, KIND_CFG, detect_family

SD_VAE = {"block_out_channels": [128, 256, 512, 512]}
SDXL_UNET = {"cross_attention_dim": 2048, "addition_embed_type": "text_time", "sample_size": 128}
# (name, unet, scheduler) -> (kind, family name, native size, prediction type, few-step kind, inpainting)
CHECKPOINTS = [
    ("SD 1.5", {"cross_attention_dim": 768, "sample_size": 64}, {"_class_name": "PNDMScheduler"}),
    ("SD 1.5 inpainting", {"cross_attention_dim": 768, "in_channels": 9}, {"_class_name": "DDIMScheduler"}),
    (
        "SD 2.1",
        {"cross_attention_dim": 1024, "sample_size": 96},
        {"_class_name": "DDIMScheduler", "prediction_type": "v_prediction"},
    ),
    ("SD 2.1 base", {"cross_attention_dim": 1024, "sample_size": 64}, {"prediction_type": "epsilon"}),
    ("SDXL base", SDXL_UNET, {"_class_name": "EulerDiscreteScheduler", "timestep_spacing": "leading"}),
    ("SD-Turbo", {"cross_attention_dim": 1024, "sample_size": 64}, {"timestep_spacing": "trailing"}),
    ("SDXL-Turbo", {**SDXL_UNET, "sample_size": 64}, {"timestep_spacing": "trailing"}),
    ("LCM Dreamshaper v7", {"cross_attention_dim": 768, "sample_size": 96, "time_cond_proj_dim": 256}, {}),
    ("SDXL + LCM scheduler", SDXL_UNET, {"_class_name": "LCMScheduler"}),
    ("SDXL-Lightning (trailing)", SDXL_UNET, {"timestep_spacing": "trailing"}),
]
EXPECTED = {
    "SD 1.5": ("SD", "SD 1.x", 512, "epsilon", None, False),
    "SD 1.5 inpainting": ("SD", "SD 1.x", 512, "epsilon", None, True),
    "SD 2.1": ("SD", "SD 2.x", 768, "v_prediction", None, False),
    "SD 2.1 base": ("SD", "SD 2.x", 512, "epsilon", None, False),
    "SDXL base": ("SDXL", "SDXL", 1024, "epsilon", None, False),
    "SD-Turbo": ("SD", "SD 2.x", 512, "epsilon", "turbo", False),
    "SDXL-Turbo": ("SDXL", "SDXL", 512, "epsilon", "turbo", False),
    "LCM Dreamshaper v7": ("SD", "SD 1.x", 768, "epsilon", "LCM", False),
    "SDXL + LCM scheduler": ("SDXL", "SDXL", 1024, "epsilon", "LCM scheduler", False),
    "SDXL-Lightning (trailing)": ("SDXL", "SDXL", 1024, "epsilon", "trailing", False),
}


@pytest.mark.parametrize("name, unet, scheduler", CHECKPOINTS, ids=[c[0] for c in CHECKPOINTS])
def test_each_published_checkpoint_gets_its_family_from_its_configs(name, unet, scheduler):
    family = detect_family(unet, scheduler, SD_VAE)
    facts = (family.kind, family.name, family.native_size, family.prediction_type, family.few_step, family.inpainting)
    assert facts == EXPECTED[name]


def test_defaults_follow_the_few_step_kind_and_plain_models_keep_their_pipelines_cfg():
    turbo = detect_family({**SDXL_UNET, "sample_size": 64}, {"timestep_spacing": "trailing"}, SD_VAE)
    assert turbo.defaults() == {"scheduler": "Euler a", "steps": 1, "guidance_scale": 0.0}
    assert (
        detect_family(SDXL_UNET, {}, SD_VAE).defaults()
        == {"guidance_scale": KIND_CFG["SDXL"]}
        == {"guidance_scale": 5.0}
    )
    assert detect_family({"cross_attention_dim": 768}, {}, SD_VAE).defaults() == {"guidance_scale": 7.5}
    assert all(cfg >= 0 and steps >= 1 for _, steps, cfg in FEW_STEP.values())


def test_a_custom_width_runs_on_the_sd_pipelines_and_says_its_width():
    family = detect_family({"cross_attention_dim": 32, "sample_size": 32}, {}, {"block_out_channels": [32, 64]})
    assert (family.kind, family.name, family.native_size) == ("SD", "SD (cross-attention 32)", 64)
