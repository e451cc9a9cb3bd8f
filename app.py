"""Guided-diffusion studio: the Gradio page. Each tab's layout lives in its own module under `ui/` (handlers in
`ui.handlers`, shared controls in `ui.controls`); this module composes them, and starts the server when run."""

from __future__ import annotations

import importlib
import logging
import os

import gradio as gr

from pipelines import stable_diffusion as sd
from pipelines import unconditional as uncond
from pipelines.bundled import BUNDLED_LABEL, bundled_path, hub_unreachable, status_text
from pipelines.clip import get_clip
from pipelines.config import setting, uncond_models
from pipelines.device import default_device
from pipelines.gpu import on_zero_gpu, simulating
from pipelines.tabs import LABELS
from pipelines.tabs import TABS as TAB_IDS
from ui.controls import PageParts, wire_gallery_tools
from ui.handlers import HANDLERS  # noqa: F401 (the API)
from ui.jobs import stop
from ui.png_info import png_info_tab, read_parameters  # noqa: F401 (the API)
from ui.sessions import guard_queue, keep_sessions_small, session_capacity, session_idle_seconds
from ui.sweep import sweep, sweep_endpoint  # noqa: F401 (the API)
from ui.txt2img import native_size_update  # noqa: F401

# Each tab's page module, named as the tab (ui/txt2img.py, ...).
TABS = {tab: importlib.import_module(f"ui.{tab}") for tab in TAB_IDS}

logger = logging.getLogger("studio")


TITLE = "Guided-diffusion studio"


INTRO = (
    "Sample diffusion models and steer them with color and CLIP guidance, in every tab. Guidance strength is the "
    "total distance (RMS, in [-1, 1] pixel units; latent units for Stable Diffusion) that guidance may move the "
    "predicted clean image over a run; the same seed gives the same image."
)


def device_note() -> str:
    """The status line for this process (device, Space or not, bundled models present, Hub reachable); read when the
    page loads."""
    offline = hub_unreachable()
    if offline:  # the bundled models that are the defaults (a configured model is the default even offline)
        defaults = {"ddpm": uncond_models()[0], "sd": sd.sd_models()[0]}
        bundled = tuple(name for name in ("ddpm", "sd") if defaults[name] == BUNDLED_LABEL)
    else:  # the bundled models offered
        bundled = tuple(name for name in ("ddpm", "sd") if bundled_path(name) is not None)
    return status_text(default_device().type, bool(os.environ.get("SPACE_ID")), bundled, offline)


# Ctrl+Enter (Cmd+Enter on a Mac), in a prompt or anywhere on the page, clicks the visible tab's Generate; a plain
# Enter in a prompt stays a newline.
SHORTCUTS_JS = """
() => {
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" || !(event.ctrlKey || event.metaKey) || event.repeat) return;
    const visible = [...document.querySelectorAll("button[id$='-generate']")].filter((b) => b.offsetParent !== null);
    if (visible.length === 0) return;
    event.preventDefault();
    visible[0].click();
  }, true);
}
"""


def build_demo() -> gr.Blocks:
    """The whole UI: six generation tabs (one module each under `ui/`, one endpoint each) and PNG info; controls
    on the left, results on the right."""
    # Gradio's copies of outputs and uploads: swept every 10 minutes, deleted after an hour.
    with gr.Blocks(title=TITLE, delete_cache=(600, 3600)) as demo:
        gr.Markdown(f"# {TITLE}\n{INTRO}")
        note = gr.Markdown()
        page = PageParts()
        tabs_built = {}
        with gr.Tabs() as tabs:
            for tab_id, module in TABS.items():
                with gr.Tab(LABELS[tab_id], id=tab_id):
                    tabs_built[tab_id] = module.build(page)
            # Stop sets the session's flag (the running job ends within one step and shows its current images) and
            # marks its queued jobs; it is never queued behind a job (a concurrency group of its own, no limit) and
            # a full queue does not refuse it (`guard_queue` at launch). No `cancels=`: Gradio's cancel would throw
            # the running job's images away and leave the previous run on the page.
            gr.on(
                [tab.stop_button.click for tab in tabs_built.values()],
                stop,
                None,
                None,
                api_name="stop",
                # Callable by gradio_client (a script stops its own session's job), but not an MCP tool: an agent's
                # tool calls share no session with the job it would stop.
                api_visibility="undocumented",
                concurrency_limit=None,
            )
            with gr.Tab("PNG info", id="png_info"):
                png_info_tab(tabs, {tab_id: tab.inputs for tab_id, tab in tabs_built.items()})
        sweep_endpoint()
        wire_gallery_tools(page, tabs, tabs_built["img2img"].picture, tabs_built["inpaint"].picture)
        demo.load(device_note, None, note, api_visibility="private")
        demo.load(None, None, None, js=SHORTCUTS_JS)
    return demo


def queue_size() -> int:
    """Jobs that may wait in the queue (`STUDIO_QUEUE_SIZE`, default 20): beyond it a caller is told the queue is
    full at once. Set explicitly: on ZeroGPU, Gradio's default would be 1."""
    return setting("STUDIO_QUEUE_SIZE", 20, minimum=1)


def max_upload_megabytes() -> int:
    """Largest upload accepted (`STUDIO_MAX_UPLOAD_MB`, default 20): Gradio refuses bigger files before storing them."""
    return setting("STUDIO_MAX_UPLOAD_MB", 20, minimum=1)


def queue_poll_seconds() -> float:
    """How often the idle queue looks for work (`STUDIO_QUEUE_POLL_SECONDS`, default 0.01)."""
    return setting("STUDIO_QUEUE_POLL_SECONDS", 0.01, minimum=0.001, kind=float)


def poll_queue_gently(demo: gr.Blocks, seconds: float) -> None:
    """Let Gradio's queue look for work every `seconds` instead of every millisecond (its Linux default), which alone
    keeps an idle server busy and takes CPU from the sampler (docs/benchmarks.md); a job then waits at most `seconds`
    more to start. Gradio has no public setting for it: its private queue's attribute is set, and a Gradio without it is
    left as it is."""
    queue = getattr(demo, "_queue", None)
    if queue is not None and isinstance(getattr(queue, "sleep_when_free", None), float):
        queue.sleep_when_free = seconds


def mcp_server_on() -> bool:
    """Whether to serve the MCP server (every documented endpoint as a tool, at /gradio_api/mcp/): on unless
    Gradio's own `GRADIO_MCP_SERVER` variable is `false`."""
    return os.environ.get("GRADIO_MCP_SERVER", "true").strip().lower() not in ("false", "0", "no", "off")


def preload_for_zero_gpu() -> None:
    """On ZeroGPU, load every tab's default model in this main process at start-up (ZeroGPU's documented pattern):
    each forked GPU worker inherits them, while whatever a worker loads itself may die with it. Elsewhere models
    load lazily, on the first request that needs them."""
    if not on_zero_gpu():
        return
    if simulating() and default_device().type != "cpu":  # CUDA initialised here could not be used in a fork
        return
    model = uncond_models()[0]
    loaders = {
        "unconditional": lambda: uncond.get_unconditional(model),
        "CLIP": lambda: get_clip(model),
        "Stable Diffusion": lambda: sd.get_components("txt2img"),
        "inpainting": lambda: sd.get_components("inpaint"),
    }
    for name, load in loaders.items():
        try:
            load()
        except Exception as error:  # an unreachable Hub must not keep the page from starting
            first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
            logger.warning("preloading the %s model failed: %s", name, first_line)


def log_to_console() -> None:
    """The studio's own log lines (refusals, failures, preloading) on stderr at INFO; libraries keep their level."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s studio %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # a library that configures the root logger would print each line twice


demo = build_demo()

if __name__ == "__main__":
    log_to_console()
    preload_for_zero_gpu()
    # api_open=False: off Spaces Gradio would also answer POST /gradio_api/run/<endpoint> outside the queue, so
    # that generation jobs would skip its size limit and the one-job-at-a-time GPU slot.
    demo.queue(max_size=queue_size(), default_concurrency_limit=1, api_open=False)
    guard_queue(demo, exempt_api_names=("stop",))  # a full queue never refuses a Stop
    poll_queue_gently(demo, queue_poll_seconds())
    keep_sessions_small(session_idle_seconds())
    demo.launch(
        max_file_size=f"{max_upload_megabytes()}mb",
        mcp_server=mcp_server_on(),
        state_session_capacity=session_capacity(),
    )
