"""Tiny random models built from configs and saved like real checkpoints (no downloads), for tests and benches."""

from __future__ import annotations

import json
import os

import torch

from training.tokenizer import save_clip_tokenizer  # noqa: F401 (re-exported for tests and benches)

TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def tiny_unet(seed: int = 0, sample_size: int = 32):
    """A 32x32 UNet2DModel with random weights (about 2.5M parameters)."""
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    ).eval()


def tiny_scheduler(prediction_type: str = "epsilon"):
    """The celebahq-256 scheduler config (linear betas, clip_sample on) with a chosen prediction type."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="linear", clip_sample=True, prediction_type=prediction_type
    )


def save_tiny_unconditional(folder: str, seed: int = 0, prediction_type: str = "epsilon") -> str:
    """Save a tiny DDPMPipeline to `folder` (loadable with from_pretrained, like google/ddpm-celebahq-256)."""
    from diffusers import DDPMPipeline

    DDPMPipeline(unet=tiny_unet(seed), scheduler=tiny_scheduler(prediction_type)).save_pretrained(folder)
    return folder


def tiny_clip(seed: int = 0):
    """A tiny open_clip CLIP model with random weights."""
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.CLIP(**TINY_CLIP_CONFIG)
    return model.eval()


def save_tiny_clip(folder: str, seed: int = 0) -> str:
    """Save a tiny open_clip model as a `local-dir:` folder; returns the `local-dir:` reference."""
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    model = tiny_clip(seed)
    with open(os.path.join(folder, "open_clip_config.json"), "w") as handle:
        json.dump({"model_cfg": TINY_CLIP_CONFIG, "preprocess_cfg": {}}, handle)
    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    save_file(state, os.path.join(folder, "open_clip_model.safetensors"))
    return f"local-dir:{folder}"


class GaussianPriorUNet(torch.nn.Module):
    """A denoiser that is exact for N(0, I) data, plus a small random-UNet term for structure.

    A random UNet's noise prediction explains nothing, so schedulers without x0 clipping (DPM-Solver++) run off to
    huge values with it; this model keeps every scheduler's trajectory in range, like a trained model would.
    """

    def __init__(self, unet, alphas_cumprod: torch.Tensor, mix: float = 0.1):
        super().__init__()
        self.unet, self.mix = unet, mix
        self.register_buffer("alphas_cumprod", alphas_cumprod.float().clone())
        self.config = unet.config

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def forward(self, sample: torch.Tensor, timestep):
        from diffusers.models.unets.unet_2d import UNet2DOutput

        alpha = self.alphas_cumprod[torch.as_tensor(timestep).long()]
        eps = (1 - alpha).sqrt() * sample + self.mix * self.unet(sample, timestep).sample
        return UNet2DOutput(sample=eps)


# The tiny Stable Diffusion UNet and text encoders: SDXL's differ only by what they add (`tiny_sdxl_components`).
TINY_SD_UNET = dict(
    sample_size=32,
    out_channels=4,
    block_out_channels=(32, 64),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=(2, 4),
    norm_num_groups=32,
)
TINY_TEXT_ENCODER = dict(
    hidden_size=32,
    intermediate_size=37,
    num_attention_heads=4,
    num_hidden_layers=2,
    vocab_size=49408,
    max_position_embeddings=77,
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=49407,
)


def tiny_sd_components(seed: int = 0, inpainting: bool = False, time_cond_proj_dim: int | None = None) -> dict:
    """Tiny Stable Diffusion components (64x64 native size) with random weights and a real tokenizer;
    `time_cond_proj_dim` makes the UNet read a CFG-scale embedding, as a latent consistency model's does."""
    import tempfile

    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        **TINY_SD_UNET,
        in_channels=9 if inpainting else 4,
        cross_attention_dim=32,
        time_cond_proj_dim=time_cond_proj_dim,
    )
    vae = AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        sample_size=64,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(**TINY_TEXT_ENCODER))
    from training.train_sd import build_scheduler

    scheduler = build_scheduler()  # SD 1.x's schedule
    return {
        "unet": unet.eval(),
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "tokenizer": save_clip_tokenizer(tempfile.mkdtemp()),
        "scheduler": scheduler,
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }


def save_tiny_sd(folder: str, seed: int = 0, inpainting: bool = False) -> str:
    """Save a tiny Stable Diffusion checkpoint (txt2img, or a 9-channel inpainting one) to `folder`."""
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline

    pipeline_class = StableDiffusionInpaintPipeline if inpainting else StableDiffusionPipeline
    pipeline_class(**tiny_sd_components(seed, inpainting)).save_pretrained(folder)
    return folder


def tiny_sdxl_components(seed: int = 0, inpainting: bool = False) -> dict:
    """Tiny SDXL components (64x64 native size): a "text_time" UNet (9 input channels for an inpainting one) fed by
    two text encoders (the second one projected, giving the pooled embedding), random weights, a real tokenizer,
    SDXL's Euler schedule."""
    from diffusers import EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    components = tiny_sd_components(seed)
    torch.manual_seed(seed + 1)

    unet = UNet2DConditionModel(
        **TINY_SD_UNET,
        in_channels=9 if inpainting else 4,
        cross_attention_dim=64,  # the two encoders' hidden states side by side
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=8 * 6 + 32,  # six size ids + the pooled embedding
    )
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**TINY_TEXT_ENCODER, projection_dim=32))
    scheduler = EulerDiscreteScheduler.from_config(
        components["scheduler"].config, timestep_spacing="leading", steps_offset=1
    )
    return {
        "unet": unet.eval(),
        "vae": components["vae"],
        "text_encoder": components["text_encoder"],
        "text_encoder_2": text_encoder_2.eval(),
        "tokenizer": components["tokenizer"],
        "tokenizer_2": components["tokenizer"],  # one CLIP tokenizer serves both encoders
        "scheduler": scheduler,
        "force_zeros_for_empty_prompt": True,
    }


def save_tiny_sdxl(folder: str, seed: int = 0, inpainting: bool = False) -> str:
    """Save a tiny SDXL checkpoint (txt2img, or a 9-channel inpainting one) to `folder` (no watermarker: the
    studio's images carry none)."""
    from diffusers import StableDiffusionXLInpaintPipeline, StableDiffusionXLPipeline

    pipeline_class = StableDiffusionXLInpaintPipeline if inpainting else StableDiffusionXLPipeline
    pipeline_class(**tiny_sdxl_components(seed, inpainting), add_watermarker=False).save_pretrained(folder)
    return folder
