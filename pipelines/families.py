"""Which Stable Diffusion family a checkpoint is, and the defaults that follow, read from its configs (not its name).

The facts and their sources are in docs/model-families-research.md: a UNet with a "text_time" added embedding
(pooled text and size micro-conditioning) is SDXL, any other text-conditioned UNet runs on the SD pipelines (SD 1.x
at cross-attention width 768, SD 2.x at 1024); the scheduler's prediction type tells v-prediction; a
guidance-embedding UNet (time_cond_proj_dim) or an LCM scheduler is a latent consistency model; a "trailing"
timestep spacing is how distilled few-step checkpoints (SD-Turbo, SDXL-Turbo, Lightning) ship.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.params import SD

# Pipeline kind -> its default CFG scale: the SD tabs' own default, and SDXL pipelines' (diffusers' default there).
KIND_CFG = {"SD": SD["guidance_scale"].default, "SDXL": 5.0}
# Cross-attention width -> the name of an SD-pipeline family (another width: a custom model on the SD pipelines).
SD_WIDTHS = {768: "SD 1.x", 1024: "SD 2.x"}
# Few-step kind -> (scheduler, steps, CFG scale) the tabs should start from: the model cards' recommendations.
FEW_STEP: dict[str, tuple[str, int, float]] = {
    "LCM": ("LCM", 4, 8.5),  # a guidance-embedding UNet: the CFG scale is an input, one pass per step
    "LCM scheduler": ("LCM", 4, 1.0),  # an LCM-LoRA merged into a plain UNet: CFG off or low
    "turbo": ("Euler a", 1, 0.0),  # SD-Turbo, SDXL-Turbo (adversarial distillation at 512 px)
    "trailing": ("Euler", 4, 0.0),  # Lightning-style distillations on a trailing schedule
}


@dataclass(frozen=True)
class Family:
    """What the tabs need to know of a checkpoint: its pipeline kind, name, native side, prediction type, few-step
    kind and whether its UNet is an inpainting one."""

    kind: str  # a key of KIND_CFG: which diffusers pipelines run it
    name: str  # "SD 1.x", "SD 2.x", "SDXL", or "SD (cross-attention N)" for a custom width
    native_size: int  # pixels per side it was trained at: unet.sample_size x the VAE's downscale
    prediction_type: str  # "epsilon", "v_prediction" or "sample"
    few_step: str | None  # a key of FEW_STEP, or None for a plain model
    inpainting: bool  # a 9-channel UNet (latents, mask, masked-image latents)

    def defaults(self) -> dict[str, object]:
        """The scheduler, steps and CFG scale a tab should start from for this model (plain models: only CFG)."""
        if self.few_step is None:
            return {"guidance_scale": KIND_CFG[self.kind]}
        scheduler, steps, cfg = FEW_STEP[self.few_step]
        return {"scheduler": scheduler, "steps": steps, "guidance_scale": cfg}


def uses_cfg(guidance_scale: float, guidance_embedded: bool) -> bool:
    """Whether classifier-free guidance runs (two UNet halves per step): a scale above 1 on a UNet that does not read
    the scale as an input (an LCM UNet does, in one pass)."""
    return guidance_scale > 1 and not guidance_embedded


def detect_family(unet: dict, scheduler: dict, vae: dict) -> Family:
    """The family of a checkpoint from its UNet, scheduler and VAE configs (dicts as `load_config` returns them;
    an absent key takes diffusers' class default)."""
    width = unet.get("cross_attention_dim", 1280)
    if unet.get("addition_embed_type") == "text_time":
        kind, name = "SDXL", "SDXL"
    else:
        kind, name = "SD", SD_WIDTHS.get(width, f"SD (cross-attention {width})")
    native = int(unet.get("sample_size", 64)) * 2 ** (len(vae.get("block_out_channels", [0] * 4)) - 1)
    return Family(
        kind=kind,
        name=name,
        native_size=native,
        prediction_type=scheduler.get("prediction_type", "epsilon"),
        few_step=few_step_kind(unet, scheduler),
        inpainting=unet.get("in_channels", 4) == 9,
    )


def few_step_kind(unet: dict, scheduler: dict) -> str | None:
    """The few-step kind a checkpoint's configs say (the first that applies): "LCM" for a guidance-embedding UNet,
    "LCM scheduler" for a plain UNet shipped with an LCM scheduler, "turbo" for a trailing schedule at 512 px
    (SD-Turbo, SDXL-Turbo), "trailing" for other trailing-schedule distillations (Lightning); None for a plain model.
    A LoRA changes no config: its kind comes from the LoRA, not from here."""
    if unet.get("time_cond_proj_dim") is not None:
        return "LCM"
    if scheduler.get("_class_name") == "LCMScheduler":
        return "LCM scheduler"
    if scheduler.get("timestep_spacing") == "trailing":
        return "turbo" if int(unet.get("sample_size", 64)) == 64 else "trailing"
    return None
