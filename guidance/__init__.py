"""Guidance: predicted-x0 math, per-sample guidance losses (color, CLIP) and the one guided sampling loop."""

from guidance.clip import ClipLoss, make_cutouts, spherical_distance
from guidance.color import ColorLoss, color_distance, color_loss
from guidance.colors import parse_color
from guidance.interrupt import StopRequested, stop_checks
from guidance.prediction import model_output_from_x0_and_eps, predicted_x0_and_eps
from guidance.sampler import GuidanceTerm, SamplingInterrupted, guided_sample

__all__ = [
    "ClipLoss",
    "ColorLoss",
    "GuidanceTerm",
    "SamplingInterrupted",
    "StopRequested",
    "color_distance",
    "color_loss",
    "guided_sample",
    "make_cutouts",
    "model_output_from_x0_and_eps",
    "parse_color",
    "predicted_x0_and_eps",
    "spherical_distance",
    "stop_checks",
]
