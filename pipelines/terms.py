"""The guidance terms a checked request asks for, built the same way for both families: a color loss and a CLIP loss
toward a text and/or a reference picture, each seeing the sample through its own view."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from guidance import ColorLoss, GuidanceTerm
from guidance.particles import Particles
from guidance.reference import ReferencePosterior
from pipelines.clip import ClipBundle, clip_loss, clip_targets, get_clip
from pipelines.config import model_location
from pipelines.reference import get_reference_embeddings, get_reference_set, reference_loss
from pipelines.seeds import RESAMPLING_STREAM, stream_generators


@dataclass(frozen=True)
class View:
    """What a loss sees of the predicted sample (None: the sample itself, pixels) and on which share of the steps."""

    decode: Callable[[torch.Tensor], torch.Tensor] | None = None
    fraction: float = 1.0


def clip_guided(request) -> bool:
    """Whether a request asks for CLIP guidance (toward a text, a reference picture or both)."""
    return request.clip_scale > 0 or request.clip_image_scale > 0


def is_guided(request) -> bool:
    """Whether a request asks for any guidance (color, CLIP text or CLIP picture)."""
    return request.color_scale > 0 or clip_guided(request)


def effective_particles(request) -> tuple[int, list[str]]:
    """(The particles a checked request runs with, warnings): 1 with a warning when nothing guides, since only the
    guidance losses score particles."""
    if request.particles > 1 and not is_guided(request):
        return 1, [f"particles {request.particles} need guidance to score them (a strength above 0): ran with 1"]
    return request.particles, []


def particle_run(seed: int, batch_size: int, count: int) -> Particles | None:
    """How a batch of images of seeds seed + i runs as `count` particles each (None for one): each image resamples
    from a generator of its own."""
    if count == 1:
        return None
    return Particles(count, stream_generators(seed, batch_size, RESAMPLING_STREAM))


def guidance_terms(
    request, text: str, region: torch.Tensor | None = None, color: View = View(), clip: View = View()
) -> list[GuidanceTerm]:
    """The color and CLIP terms of a checked request (either family): CLIP pulls toward `text` (the pixel tabs'
    prompt, the SD tabs' clip_prompt) and the reference picture; `region` limits the color loss (inpainting)."""
    terms = []
    if request.color_rgb is not None:
        loss = ColorLoss(request.color_rgb, region)
        terms.append(GuidanceTerm("color", loss, request.color_scale, color.decode, fraction=color.fraction))
    if clip_guided(request):
        model = get_clip(request.model)
        embeds, weights, scale = clip_targets(
            model, text, request.clip_scale, request.clip_image, request.clip_image_scale
        )
        if getattr(request, "clip_method", "cutouts") == "data set":  # pixel models that ship their training set
            loss = data_set_loss(request, model, embeds, weights)  # the exact classifier: classifier guidance's step
            terms.append(GuidanceTerm("clip", loss, scale, noisy=True, rule="classifier"))
            return terms
        rows = request.particles  # each image's particles, when it runs as several (guidance.particles)
        loss = clip_loss(model, embeds, weights, request.cuts, request.seed, request.batch_size, rows)
        if model.noise_aware and clip.decode is None:  # pixels: a noise-aware CLIP reads x_t
            terms.append(GuidanceTerm("clip", lambda x_t, alpha: loss(x_t), scale, noisy=True))
        else:
            terms.append(GuidanceTerm("clip", loss, scale, clip.decode, fraction=clip.fraction))
    return terms


def data_set_loss(request, clip: ClipBundle, embeds: torch.Tensor, weights: list[float]) -> ReferencePosterior:
    """The data-set guidance loss of a pixel request toward its CLIP targets (the prompt's text first, then the
    reference picture, as `clip_targets` orders them), over its model's reference set."""
    location = model_location(request.model)
    references = get_reference_set(location)
    kinds = ["text"] * (request.clip_scale > 0) + ["picture"] * (request.clip_image_scale > 0)
    embeddings = get_reference_embeddings(clip, location, references)
    return reference_loss(embeddings, references, embeds, kinds, weights)
