"""A pixel model's own training images (its reference set), for data-set guidance (guidance.reference).

A model folder may ship `reference_set.safetensors`: its training images at the model's resolution, uint8
(N, C, H, W) under "images", their names as a JSON list in the file's metadata. The bundled emoji DDPM does
(`training/export_reference_set.py`); Hub models do not, and CLIP guidance on them reads cutouts of x0.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from guidance.reference import ReferencePosterior, target_log_prior
from pipelines.cache import MODELS
from pipelines.clip import ClipBundle

REFERENCE_FILE = "reference_set.safetensors"
# How sharply a target picks its references: a softmax of this x CLIP's cosine similarity, so that what CLIP ranks
# first takes nearly all the mass (near-ties share it). Small mass left on the other images lets whichever one the
# sample passes near absorb the pull: hits fell from 65% to 55% at 100 (docs/clip-steering.md).
REFERENCE_TEMPERATURE = 1000.0
METHODS = ("auto", "data set", "cutouts")  # how CLIP guidance steers (the clip_method keyword)


@dataclass(frozen=True)
class ReferenceSet:
    """Training images in [-1, 1] (N, C, H, W) float32 and their names."""

    images: torch.Tensor
    names: tuple[str, ...]


def reference_path(location: str) -> str | None:
    """The reference set file of a model folder, or None (a Hub id, or a folder without one)."""
    path = os.path.join(location, REFERENCE_FILE)
    return path if os.path.isfile(path) else None


def load_reference_set(path: str) -> ReferenceSet:
    """Read a reference set file (see the module docstring)."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as handle:
        images = handle.get_tensor("images")
        names = json.loads((handle.metadata() or {}).get("names", "[]"))
    if images.dtype != torch.uint8 or images.ndim != 4 or len(names) != images.shape[0]:
        raise ValueError(f"{REFERENCE_FILE} must hold uint8 images (N, C, H, W) and N names")
    return ReferenceSet(images.float() / 127.5 - 1, tuple(str(name) for name in names))


def save_reference_set(path: str, images: torch.Tensor, names: list[str]) -> None:
    """Write images in [-1, 1] (N, C, H, W) and their names as a reference set file."""
    from safetensors.torch import save_file

    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).contiguous()
    save_file({"images": pixels}, path, metadata={"names": json.dumps(list(names))})


def get_reference_set(location: str) -> ReferenceSet | None:
    """The reference set of a model folder, loaded once (None where it ships none)."""
    path = reference_path(location)
    if path is None:
        return None
    return MODELS.get(("reference", os.path.abspath(path), "cpu"), lambda: load_reference_set(path))


@dataclass(frozen=True)
class ReferenceEmbeddings:
    """A guiding CLIP's unit embeddings of a reference set: of each image (N, D) and of each name's text (N, D)."""

    images: torch.Tensor
    texts: torch.Tensor


@torch.no_grad()
def embed_references(clip: ClipBundle, references: ReferenceSet, chunk: int = 256) -> ReferenceEmbeddings:
    """Embed every reference image (whole, resized to CLIP's input as its cutouts are) and every name."""
    model = clip.model
    parameter = next(model.parameters())
    mean = torch.tensor(clip.mean).view(1, 3, 1, 1)
    std = torch.tensor(clip.std).view(1, 3, 1, 1)
    images, texts = [], []
    for start in range(0, len(references.names), chunk):
        pixels = (references.images[start : start + chunk] + 1) / 2
        pixels = F.interpolate(pixels, size=(clip.image_size, clip.image_size), mode="bilinear", align_corners=False)
        pixels = ((pixels - mean) / std).to(parameter.device, parameter.dtype)
        images.append(model.encode_image(pixels).float().cpu())
        tokens = clip.tokenizer(list(references.names[start : start + chunk])).to(parameter.device)
        texts.append(model.encode_text(tokens).float().cpu())
    return ReferenceEmbeddings(F.normalize(torch.cat(images), dim=-1), F.normalize(torch.cat(texts), dim=-1))


def get_reference_embeddings(clip: ClipBundle, location: str, references: ReferenceSet) -> ReferenceEmbeddings:
    """The guiding CLIP's embeddings of a model's reference set, computed once per process."""
    key = ("reference-embeddings", clip.name, os.path.abspath(location), "cpu")
    return MODELS.get(key, lambda: embed_references(clip, references))


def target_similarities(embeddings: ReferenceEmbeddings, targets: torch.Tensor, kinds: list[str]) -> torch.Tensor:
    """(K, N) cosine similarity of each CLIP target embedding to each reference: a text to the mean of the names'
    texts and the images (a name typed exactly finds its image; other words find what looks like them), a picture to
    the images."""
    targets = F.normalize(targets.float().cpu(), dim=-1)
    rows = []
    for target, kind in zip(targets, kinds):
        to_images = embeddings.images @ target
        rows.append((embeddings.texts @ target + to_images) / 2 if kind == "text" else to_images)
    return torch.stack(rows)


def reference_loss(
    embeddings: ReferenceEmbeddings,
    references: ReferenceSet,
    targets: torch.Tensor,
    kinds: list[str],
    weights: list[float],
    temperature: float = REFERENCE_TEMPERATURE,
) -> ReferencePosterior:
    """The data-set guidance loss toward CLIP targets (text and/or picture embeddings, mixed by their strengths)."""
    similarities = target_similarities(embeddings, targets, kinds)
    return ReferencePosterior(references.images, target_log_prior(similarities, weights, temperature))


def uses_reference_set(method: str, location: str) -> bool:
    """Whether CLIP guidance by `method` on the pixel model at `location` runs on its reference set."""
    return method != "cutouts" and reference_path(location) is not None
