"""Guided-diffusion studio: the Gradio UI. Handlers parse inputs, call `pipelines`, return images and info."""

from __future__ import annotations

import logging

import gradio as gr

from guidance.sampler import GRADIENT_METHODS
from pipelines import unconditional as uncond
from pipelines.config import uncond_models
from pipelines.device import default_device
from pipelines.jobs import STOP_FLAGS
from pipelines.outputs import save_png

logger = logging.getLogger("studio")
TITLE = "Guided-diffusion studio"
INTRO = (
    "Sample diffusion models and steer them with color and CLIP guidance. Guidance strength is the total "
    "distance (RMS, in [-1, 1] pixel units) that guidance may move the predicted clean image over a run, "
    "spread over the steps in proportion to the noise level; the same seed gives the same image."
)
GPU_QUEUE = "gpu"  # every generating event shares one queue slot: one job on the accelerator at a time
GRADIENT_LABELS = [
    ("x0 (fast: no backprop through the UNet)", "x0"),
    ("through the UNet (slower, more memory)", "unet"),
]
assert [value for _, value in GRADIENT_LABELS] == list(GRADIENT_METHODS)


def _session(request: gr.Request | None) -> str:
    """The caller's session id (the browser tab or gradio_client instance), used for the Stop button."""
    return getattr(request, "session_hash", None) or "anonymous"


def _run(sampling_request: uncond.SamplingRequest, request: gr.Request | None, progress: gr.Progress):
    """Run one sampling request and shape the result for the gallery and the info panel."""
    stop_flag = STOP_FLAGS.start(_session(request))
    progress(0, desc="Loading models")
    try:
        result = uncond.generate(
            sampling_request,
            on_step=lambda done, total: progress((done, total), desc="Sampling", unit="steps"),
            should_stop=stop_flag.is_set,
        )
    except ValueError as error:
        raise gr.Error(str(error)) from None
    except Exception as error:  # a failed download, out of memory...: tell the caller, keep serving
        logger.exception("generation failed")
        raise gr.Error(f"generation failed: {type(error).__name__}: {error}") from None
    gallery = [
        (save_png(image, parameters), f"{parameters['kind']} · seed {parameters['seed']}")
        for image, parameters in zip(result.images, result.image_parameters)
    ]
    return gallery, result.info


def _sampling_request(arguments: dict) -> uncond.SamplingRequest:
    """A SamplingRequest from a handler's arguments, which are named like its fields (and the API's keywords)."""
    fields = {key: value for key, value in arguments.items() if key not in ("request", "progress")}
    return uncond.SamplingRequest(**fields)


def unconditional(
    model: str,
    scheduler: str,
    steps: int,
    batch_size: int,
    seed: int,
    eta: float = 0.0,
    request: gr.Request = None,
    progress: gr.Progress = gr.Progress(),
):
    """Sample images from an unconditional diffusion model."""
    return _run(_sampling_request(locals()), request, progress)


def color_guided(
    model: str,
    scheduler: str,
    steps: int,
    batch_size: int,
    seed: int,
    color: str,
    color_scale: float,
    compare: bool = False,
    eta: float = 0.0,
    gradient_method: str = "x0",
    request: gr.Request = None,
    progress: gr.Progress = gr.Progress(),
):
    """Sample images pulled toward a color by a loss on the predicted clean image."""
    return _run(_sampling_request(locals()), request, progress)


def clip_guided(
    model: str,
    scheduler: str,
    steps: int,
    batch_size: int,
    seed: int,
    prompt: str,
    clip_scale: float,
    cuts: int,
    color: str = "#ff8800",
    color_scale: float = 0.0,
    compare: bool = False,
    eta: float = 0.0,
    gradient_method: str = "x0",
    request: gr.Request = None,
    progress: gr.Progress = gr.Progress(),
):
    """Sample images pulled toward a text prompt by CLIP (and optionally toward a color at the same time)."""
    return _run(_sampling_request(locals()), request, progress)


def stop(request: gr.Request = None) -> None:
    """Ask this session's running job to stop after its current step."""
    STOP_FLAGS.stop(_session(request))


def device_note() -> str:
    """One line saying where models run, read when the page loads (never at import)."""
    device = default_device()
    if device.type == "cpu":
        return (
            "Running on **CPU**: 256x256 models take seconds per step; use few steps, or a GPU Space "
            "(Settings > Hardware), or tiny models via `UNCOND_MODELS`."
        )
    return f"Running on **{device.type.upper()}**."


def _sampling_controls(prefix: str) -> dict[str, gr.components.Component]:
    """Model, scheduler, steps, eta, batch size and seed controls shared by the three tabs."""
    models = uncond_models()
    controls = {
        "model": gr.Dropdown(models, value=models[0], label="Model", elem_id=f"{prefix}-model"),
        "scheduler": gr.Dropdown(list(uncond.SCHEDULERS), value="DDIM", label="Scheduler"),
    }
    with gr.Row():
        controls["steps"] = gr.Slider(1, uncond.MAX_STEPS, value=50, step=1, label="Steps")
        controls["eta"] = gr.Slider(0, 1, value=0, step=0.05, label="Eta (DDIM only; 0 = deterministic)")
    with gr.Row():
        controls["batch_size"] = gr.Slider(1, uncond.MAX_BATCH, value=1, step=1, label="Batch size")
        controls["seed"] = gr.Number(-1, precision=0, label="Seed (-1 = random; image i uses seed + i)")
    return controls


def _outputs(prefix: str):
    """Gallery, info panel, Generate and Stop buttons of one tab."""
    with gr.Row():
        generate_button = gr.Button("Generate", variant="primary", elem_id=f"{prefix}-generate")
        stop_button = gr.Button("Stop", variant="stop", elem_id=f"{prefix}-stop")
    gallery = gr.Gallery(
        label="Images (PNG with parameters)", format="png", columns=4, height=520, elem_id=f"{prefix}-gallery"
    )
    info = gr.JSON(label="Info")
    return generate_button, stop_button, gallery, info


def _wire(fn, inputs, tab_outputs, api_name: str):
    """Connect Generate for one tab (all tabs share one GPU queue slot); returns (event, stop button)."""
    generate_button, stop_button, gallery, info = tab_outputs
    event = generate_button.click(
        fn, inputs, [gallery, info], api_name=api_name, concurrency_id=GPU_QUEUE, concurrency_limit=1
    )
    return event, stop_button


def _guidance_options(prefix: str):
    """Compare toggle and gradient method, shared by the guided tabs."""
    with gr.Accordion("Options", open=False):
        compare = gr.Checkbox(False, label="Also show the unguided image of the same seed", elem_id=f"{prefix}-compare")
        method = gr.Radio(GRADIENT_LABELS, value="x0", label="Guidance gradient")
    return compare, method


def build_demo() -> gr.Blocks:
    """The whole UI: three tabs, one endpoint each; controls on the left, results on the right."""
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(f"# {TITLE}\n{INTRO}")
        note = gr.Markdown()
        wired = []
        with gr.Tab("Unconditional"):
            with gr.Row():
                with gr.Column():
                    controls = _sampling_controls("uncond")
                with gr.Column():
                    tab_outputs = _outputs("uncond")
            inputs = [controls[key] for key in ("model", "scheduler", "steps", "batch_size", "seed", "eta")]
            wired.append(_wire(unconditional, inputs, tab_outputs, "unconditional"))

        with gr.Tab("Color-guided"):
            with gr.Row():
                with gr.Column():
                    controls = _sampling_controls("color")
                    with gr.Row():
                        color = gr.ColorPicker("#ff8800", label="Target color", elem_id="color-color")
                        color_scale = gr.Slider(
                            0,
                            uncond.MAX_COLOR_SCALE,
                            value=uncond.DEFAULT_COLOR_SCALE,
                            step=0.5,
                            label="Color guidance strength (0 = off)",
                        )
                    compare, method = _guidance_options("color")
                with gr.Column():
                    tab_outputs = _outputs("color")
            inputs = [controls[key] for key in ("model", "scheduler", "steps", "batch_size", "seed")]
            inputs += [color, color_scale, compare, controls["eta"], method]
            wired.append(_wire(color_guided, inputs, tab_outputs, "color_guided"))

        with gr.Tab("CLIP-guided"):
            with gr.Row():
                with gr.Column():
                    controls = _sampling_controls("clip")
                    prompt = gr.Textbox(
                        label="Prompt", placeholder="a smiling face with red hair", elem_id="clip-prompt"
                    )
                    with gr.Row():
                        clip_scale = gr.Slider(
                            0,
                            uncond.MAX_CLIP_SCALE,
                            value=uncond.DEFAULT_CLIP_SCALE,
                            step=0.5,
                            label="CLIP guidance strength (0 = off)",
                        )
                        cuts = gr.Slider(1, uncond.MAX_CUTS, value=4, step=1, label="Cutouts per image")
                    with gr.Row():
                        color = gr.ColorPicker("#ff8800", label="Also pull toward a color")
                        color_scale = gr.Slider(
                            0, uncond.MAX_COLOR_SCALE, value=0, step=0.5, label="Color strength (0 = no color)"
                        )
                    compare, method = _guidance_options("clip")
                with gr.Column():
                    tab_outputs = _outputs("clip")
            inputs = [controls[key] for key in ("model", "scheduler", "steps", "batch_size", "seed")]
            inputs += [prompt, clip_scale, cuts, color, color_scale, compare, controls["eta"], method]
            wired.append(_wire(clip_guided, inputs, tab_outputs, "clip_guided"))

        # Stop sets the session's flag (the running job ends within one step) and drops queued jobs; it is
        # never queued behind a job.
        gr.on(
            [stop_button.click for _, stop_button in wired],
            stop,
            None,
            None,
            cancels=[event for event, _ in wired],
            api_name="stop",
            concurrency_limit=None,
        )
        demo.load(device_note, None, note, api_visibility="private")
    return demo


demo = build_demo()

if __name__ == "__main__":
    demo.queue(default_concurrency_limit=1).launch()
