"""Model wrappers that let the one guided loop drive a conditioned latent model (k-diffusion's way): the loop sees
a plain denoiser `model(sample, timestep).sample`, the wrapper hides classifier-free guidance and conditioning."""

from __future__ import annotations

from types import SimpleNamespace

import torch


class ClassifierFreeGuidance(torch.nn.Module):
    """A text-conditioned UNet as a plain denoiser, computed exactly as diffusers' Stable Diffusion pipelines do.

    With `uncond_embeds`, both passes run in one batch (unconditional first) and combine as
    uncond + guidance_scale * (text - uncond); without, one conditioned pass. `extra_channels` (already doubled
    for CFG, as diffusers prepares them) are concatenated to the scaled input: the mask and masked-image latents
    of a 9-channel inpainting UNet. `added_cond` (batched like the embeddings) goes to the UNet as its
    `added_cond_kwargs`: SDXL's pooled text embedding and size ids; `timestep_cond` the CFG-scale embedding an LCM
    UNet reads instead of running CFG.
    """

    def __init__(
        self,
        unet: torch.nn.Module,
        text_embeds: torch.Tensor,
        uncond_embeds: torch.Tensor | None = None,
        guidance_scale: float = 1.0,
        extra_channels: torch.Tensor | None = None,
        added_cond: dict[str, torch.Tensor] | None = None,
        timestep_cond: torch.Tensor | None = None,
    ):
        super().__init__()
        self.unet, self.guidance_scale, self.extra_channels = unet, guidance_scale, extra_channels
        self.added_cond, self.timestep_cond = added_cond, timestep_cond
        self.embeds = text_embeds if uncond_embeds is None else torch.cat([uncond_embeds, text_embeds])
        self.guided = uncond_embeds is not None

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> SimpleNamespace:
        model_input = torch.cat([sample] * 2) if self.guided else sample
        if self.extra_channels is not None:
            model_input = torch.cat([model_input, self.extra_channels], dim=1)
        conditioning = {"added_cond_kwargs": self.added_cond} if self.added_cond is not None else {}
        if self.timestep_cond is not None:
            conditioning["timestep_cond"] = self.timestep_cond
        output = self.unet(model_input, timestep, encoder_hidden_states=self.embeds, return_dict=False, **conditioning)[
            0
        ]
        if self.guided:
            uncond, text = output.chunk(2)
            output = uncond + self.guidance_scale * (text - uncond)
        return SimpleNamespace(sample=output)
