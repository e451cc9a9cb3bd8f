"""End to end: `python app.py` with tiny models, called through gradio_client like a user's script."""

import time
from unittest.mock import ANY

import numpy as np
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from PIL import Image

from pipelines.outputs import read_parameters


@pytest.fixture(scope="module")
def client(server):
    return Client(server, verbose=False)


def pixels(gallery_item) -> np.ndarray:
    return np.asarray(Image.open(gallery_item["image"]))


def check_pngs(gallery, seeds):
    assert len(gallery) == len(seeds)
    for item, seed in zip(gallery, seeds):
        with Image.open(item["image"]) as image:
            assert image.format == "PNG"
        assert read_parameters(item["image"])["seed"] == seed


def test_unconditional_endpoint(client, tiny_models):
    gallery, info = client.predict(
        model=tiny_models["unet"], scheduler="DPM++ 2M", steps=4, batch_size=2, seed=11, api_name="/unconditional"
    )
    check_pngs(gallery, [11, 12])
    assert info["seeds"] == [11, 12] and info["scheduler"] == "DPM++ 2M" and info["elapsed_seconds"] > 0
    again, _ = client.predict(
        model=tiny_models["unet"], scheduler="DPM++ 2M", steps=4, batch_size=1, seed=12, api_name="/unconditional"
    )
    np.testing.assert_array_equal(pixels(gallery[1]), pixels(again[0]))


def test_color_guided_endpoint(client, tiny_models):
    kwargs = dict(model=tiny_models["unet"], steps=4, batch_size=1, seed=21, color="rgba(255, 136.5, 0, 1)")
    gallery, info = client.predict(**kwargs, color_scale=0.5, compare=True, api_name="/color_guided")
    check_pngs(gallery, [21, 21])
    assert read_parameters(gallery[0]["image"])["kind"] == "guided"
    assert read_parameters(gallery[1]["image"])["kind"] == "unguided"
    assert info["color"] == "rgba(255, 136.5, 0, 1)" and info["color_scale"] == 0.5
    again, _ = client.predict(**kwargs, color_scale=0.5, api_name="/color_guided")
    np.testing.assert_array_equal(pixels(gallery[0]), pixels(again[0]))


def test_clip_guided_endpoint(client, tiny_models):
    gallery, info = client.predict(
        model=tiny_models["unet"],
        steps=4,
        batch_size=2,
        seed=31,
        prompt="a red heart",
        clip_scale=3,
        cuts=4,
        color="#00ff00",
        color_scale=1,
        api_name="/clip_guided",
    )
    check_pngs(gallery, [31, 32])
    assert info["prompt"] == "a red heart" and info["cuts"] == 4 and info["color_scale"] == 1


def test_only_pictures_are_required_and_a_reference_picture_alone_guides(client, tiny_models):
    from gradio_client import handle_file

    from ui.controls import APPLE

    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    required = {
        name: [
            parameter["parameter_name"]
            for parameter in endpoint["parameters"]
            if not parameter["parameter_has_default"]
        ]
        for name, endpoint in api.items()
    }
    assert {name: names for name, names in required.items() if names} == {
        "/img2img": ["image"],
        "/inpaint": ["image"],
        "/read_parameters": ["image"],
    }
    # The call a new user writes: no prompt, the picture alone pulls.
    gallery, info = client.predict(
        model=tiny_models["unet"],
        clip_image=handle_file(APPLE),
        clip_image_scale=3,
        steps=3,
        seed=1,
        api_name="/clip_guided",
    )
    check_pngs(gallery, [1])
    assert info["clip_image_scale"] == 3 and info["clip_scale"] == 0
    assert info["clip_image"].startswith("128x128 sha256:")


def test_bad_requests_are_errors_and_the_server_keeps_serving(client, tiny_models):
    with pytest.raises(AppError, match="notacolor"):
        client.predict(
            model=tiny_models["unet"], steps=2, seed=1, color="notacolor", color_scale=1, api_name="/color_guided"
        )
    with pytest.raises(AppError, match=r"steps must be between 1 and 1000, got 0 \(\"Steps\" in the page\)"):
        client.predict(model=tiny_models["unet"], steps=0, seed=1, api_name="/unconditional")
    with pytest.raises(AppError):
        client.predict(model="someone/other-model", steps=2, seed=1, api_name="/unconditional")
    gallery, _ = client.predict(model=tiny_models["unet"], steps=2, seed=1, api_name="/unconditional")
    check_pngs(gallery, [1])


def test_a_refused_request_is_one_log_line_and_no_traceback(client, server):
    from tests.conftest import SERVERS

    def log() -> str:
        with open(SERVERS[server]["log"]) as handle:
            return handle.read()

    before = log()
    # The request that once held the only slot for 1469 s on a CPU: refused by the compute limit, before loading.
    with pytest.raises(AppError, match=r"megapixel-steps .* limit of 3 \(set by STUDIO_MAX_MEGAPIXEL_STEPS\)"):
        client.predict(prompt="a", width=1024, height=1024, batch_size=4, steps=150, seed=1, api_name="/txt2img")
    deadline = time.monotonic() + 10
    while "megapixel-steps" not in log()[len(before) :] and time.monotonic() < deadline:
        time.sleep(0.1)
    added = log()[len(before) :]
    lines = [line for line in added.splitlines() if "megapixel-steps" in line]
    assert len(lines) == 1 and "studio INFO refused: " in lines[0], added[-2000:]
    assert "Traceback" not in added


def test_stop_interrupts_within_a_step(client, tiny_models):
    job = client.submit(model=tiny_models["unet"], steps=1000, seed=3, previews=False, api_name="/unconditional")
    deadline = time.monotonic() + 60
    while not (job.status().progress_data or job.done()):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    client.predict(api_name="/stop")
    stopped_at = time.monotonic()
    gallery, info = job.result(timeout=60)
    assert time.monotonic() - stopped_at < 5
    assert info["interrupted"] is True and info["stopped_after_step"] < 1000
    check_pngs(gallery, [3])


def _noise_png(path, size, mode="RGB", seed=0) -> str:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode).save(path)
    return str(path)


def test_txt2img_endpoint(client):
    kwargs = dict(prompt="a red heart", negative_prompt="blurry", scheduler="Euler a", steps=4, guidance_scale=7)
    gallery, info = client.predict(**kwargs, width=64, height=96, batch_size=2, seed=41, api_name="/txt2img")
    check_pngs(gallery, [41, 42])
    assert Image.open(gallery[0]["image"]).size == (64, 96) and info["task"] == "txt2img"
    again, _ = client.predict(**kwargs, width=64, height=96, batch_size=2, seed=41, api_name="/txt2img")
    np.testing.assert_array_equal(pixels(gallery[1]), pixels(again[1]))


def test_img2img_endpoint_takes_odd_modes_and_sizes(client, tmp_path):
    from gradio_client import handle_file

    path = _noise_png(tmp_path / "input.png", (90, 50), mode="P")
    gallery, info = client.predict(
        image=handle_file(path), prompt="a cat", steps=4, strength=0.5, seed=51, api_name="/img2img"
    )
    check_pngs(gallery, [51])
    assert Image.open(gallery[0]["image"]).size == (90, 50) and info["working_size"] == [112, 64]  # short side up to 64


def test_inpaint_endpoint_keeps_pixels_outside_the_mask(client, tmp_path):
    from gradio_client import handle_file

    image_path = _noise_png(tmp_path / "image.png", (80, 64), seed=2)
    mask = Image.new("L", (80, 64), 0)
    mask.paste(255, (10, 10, 50, 40))
    mask.save(tmp_path / "mask.png")
    gallery, info = client.predict(
        image=handle_file(image_path),
        mask=handle_file(str(tmp_path / "mask.png")),
        prompt="a cat",
        steps=4,
        strength=1.0,
        seed=61,
        mask_blur=3,
        api_name="/inpaint",
    )
    check_pngs(gallery, [61])
    outside = np.asarray(mask) == 0
    np.testing.assert_array_equal(pixels(gallery[0])[outside], np.asarray(Image.open(image_path))[outside])


def test_bad_stable_diffusion_requests_are_errors(client, tmp_path):
    from gradio_client import handle_file

    with pytest.raises(AppError, match="width must be a multiple of 8"):
        client.predict(prompt="x", width=100, steps=2, api_name="/txt2img")
    with pytest.raises(AppError):
        client.predict(prompt="x", width=13, steps=2, api_name="/txt2img")
    with pytest.raises(AppError):
        client.predict(prompt="x", steps=0, api_name="/txt2img")
    image = handle_file(_noise_png(tmp_path / "in.png", (64, 64)))
    with pytest.raises(AppError):
        client.predict(image=image, prompt="x", strength=1.5, api_name="/img2img")
    with pytest.raises(AppError, match="image is empty"):
        client.predict(image=None, prompt="x", steps=2, api_name="/img2img")
    gallery, info = client.predict(prompt="word " * 100, steps=2, seed=1, api_name="/txt2img")
    assert info["prompt_reading"] == "2 chunks of up to 75 tokens" and not info["warnings"]
    check_pngs(gallery, [1])


def test_submit_streams_previews_before_the_final_images_and_predict_returns_only_those(client, tiny_models):
    kwargs = dict(model=tiny_models["unet"], steps=24, batch_size=2, seed=41, api_name="/unconditional")
    job = client.submit(**kwargs)
    iterated = [output for output in job]  # as docs/api.md shows: previews, then the final images
    gallery, info = job.result()
    outputs = job.outputs()
    assert [output[1] for output in iterated] == [output[1] for output in outputs]
    streamed = [output for output in outputs[:-1] if output[1].get("preview")]
    assert streamed, [output[1] for output in outputs]  # at least one preview before the final images
    preview_gallery, preview_info = streamed[0]
    assert 0 < preview_info["step"] < 24 and preview_info["total_steps"] == 24
    assert len(preview_gallery) == 2 and preview_gallery[0]["caption"].startswith("preview · step ")
    assert outputs[-1][1] == info and "preview" not in info and info["seeds"] == [41, 42]
    # predict gives the final images alone, the same pixels; previews off streams nothing else.
    predicted, predicted_info = client.predict(**kwargs)
    assert "preview" not in predicted_info
    np.testing.assert_array_equal(pixels(predicted[1]), pixels(gallery[1]))
    quiet = client.submit(**kwargs | {"previews": False})
    quiet.result()
    assert len(quiet.outputs()) == 1


def _keywords(handler_name: str) -> set[str]:
    import inspect

    import app

    return set(inspect.signature(app.HANDLERS[handler_name]).parameters) - {"request", "progress"}


@pytest.mark.parametrize(
    "endpoint, request_fields",
    [
        ("unconditional", dict(steps=4, seed=41, scheduler="DDPM")),
        ("color_guided", dict(steps=4, seed=61, color="#00ff00", color_scale=0.5, scheduler="DDPM")),
        ("clip_guided", dict(steps=3, seed=71, prompt="a heart", clip_scale=2, cuts=2, recurrence=2)),
        ("txt2img", dict(prompt="a red heart", negative_prompt="blurry", scheduler="Euler a", steps=4, seed=51)),
        ("img2img", dict(prompt="a green apple", steps=4, strength=0.5, seed=52)),
        ("inpaint", dict(prompt="a red apple", steps=4, seed=53, mask_blur=0)),
    ],
)
def test_read_parameters_gives_values_that_reproduce_an_image_bit_for_bit(
    client, tiny_models, endpoint, request_fields, tmp_path
):
    """Generate two images, read the second one's parameters back, send its values as they are to the tab's
    endpoint (img2img and inpainting get their pictures again): the same pixels."""
    from gradio_client import handle_file

    from ui.controls import APPLE

    pictures = {}
    if endpoint in ("img2img", "inpaint"):
        pictures["image"] = handle_file(APPLE)
    if endpoint == "inpaint":
        mask = Image.new("L", Image.open(APPLE).size, 0)
        mask.paste(255, (8, 8, 40, 40))
        mask.save(tmp_path / "mask.png")
        pictures["mask"] = handle_file(str(tmp_path / "mask.png"))
    if endpoint in ("unconditional", "color_guided", "clip_guided"):
        request_fields |= {"model": tiny_models["unet"]}
    gallery, _ = client.predict(**request_fields, **pictures, batch_size=2, api_name=f"/{endpoint}")
    read = client.predict(image=handle_file(gallery[1]["image"]), api_name="/read_parameters")
    assert read["source"] == "studio" and read["tab"] == endpoint and read["not_used"] == []
    assert read["values"]["seed"] == request_fields["seed"] and read["values"]["batch_size"] == 2
    assert read["image_index"] == 1 and read["parameters"]["seed"] == request_fields["seed"] + 1
    assert set(read["values"]) <= _keywords(endpoint) and "elapsed_seconds" in read["recorded"]
    again, _ = client.predict(**read["values"], **pictures, api_name=f"/{read['tab']}")
    np.testing.assert_array_equal(pixels(again[1]), pixels(gallery[1]))


@pytest.mark.parametrize(
    "tab, parameter, values, seeds, settings",
    [
        ("txt2img", "guidance_scale", "1, 9", "71, 72", dict(prompt="a red heart", steps=3, scheduler="Euler a")),
        ("color_guided", "color_scale", "0, 2", "", dict(steps=3, seed=81, color="#00ff00", scheduler="DDPM")),
        ("clip_guided", "clip_method", "cutouts, data set", "", dict(steps=3, seed=5, prompt="a cat", recurrence=1)),
    ],
)
def test_sweep_cells_equal_the_single_requests_and_follow_a_labelled_grid(
    client, tiny_models, tab, parameter, values, seeds, settings
):
    if tab in ("color_guided", "clip_guided"):
        settings |= {"model": tiny_models["unet"]}
    gallery, info = client.predict(
        tab=tab, parameter=parameter, values=values, seeds=seeds, settings=settings, api_name="/sweep"
    )
    plan = [(value, seed) for seed in info["sweep"]["seeds"] for value in info["sweep"]["values"]]
    assert len(gallery) == 1 + len(plan) and info["sweep"]["parameter"] == parameter
    grid = read_parameters(gallery[0]["image"])
    assert grid["kind"] == "sweep grid" and grid["sweep"]["values"] == info["sweep"]["values"]
    assert Image.open(gallery[0]["image"]).width > len(info["sweep"]["values"]) * 64
    for (value, seed), cell in zip(plan, gallery[1:]):
        single_settings = settings | {parameter: value, "seed": seed, "batch_size": 1}
        single, _ = client.predict(**single_settings, api_name=f"/{tab}")
        np.testing.assert_array_equal(pixels(cell), pixels(single[0]))
        assert f"seed {seed}" in cell["caption"]


def test_a_bad_sweep_names_what_is_wrong(client):
    with pytest.raises(AppError, match="parameter 'mask_blur' cannot be swept in txt2img"):
        client.predict(tab="txt2img", parameter="mask_blur", values="4", api_name="/sweep")
    with pytest.raises(AppError, match="steps must be between 1 and 150, got 0"):
        client.predict(tab="txt2img", parameter="steps", values="2, 0", api_name="/sweep")
    with pytest.raises(AppError, match="'colour' is not a keyword of /txt2img"):
        client.predict(tab="txt2img", parameter="steps", values="2", settings={"colour": "red"}, api_name="/sweep")


def test_an_outpainted_inpainting_reproduces_from_its_parameters_and_the_same_pictures(client, tmp_path):
    """Round trip for inpainting: generate, read the PNG back, send its values with the same image and mask."""
    from gradio_client import handle_file

    image_path = _noise_png(tmp_path / "image.png", (64, 48), seed=3)
    mask = Image.new("L", (64, 48), 0)
    mask.paste(255, (8, 8, 32, 32))
    mask.save(tmp_path / "mask.png")
    pictures = dict(image=handle_file(image_path), mask=handle_file(str(tmp_path / "mask.png")))
    fields = dict(prompt="a cat", steps=4, strength=1.0, seed=91, mask_blur=2, outpaint_right=16, outpaint_top=8)
    gallery, info = client.predict(**pictures, **fields, api_name="/inpaint")
    output = pixels(gallery[0])
    assert output.shape == (56, 80, 3) and info["input_size"] == [64, 48]
    kept = np.asarray(mask) == 0
    np.testing.assert_array_equal(output[8:, :64][kept], np.asarray(Image.open(image_path))[kept])
    read = client.predict(image=handle_file(gallery[0]["image"]), api_name="/read_parameters")
    assert read["tab"] == "inpaint" and read["values"]["outpaint_right"] == 16
    values = {key: value for key, value in read["values"].items() if key in _keywords("inpaint")}
    again, _ = client.predict(**values, **pictures, api_name="/inpaint")
    np.testing.assert_array_equal(pixels(again[0]), output)


def test_a_batch_count_runs_batches_in_a_row_with_seeds_continuing(client):
    fields = dict(prompt="a red heart", steps=3, scheduler="Euler a", batch_size=1)
    gallery, info = client.predict(**fields, seed=101, batch_count=2, api_name="/txt2img")
    assert info["batch_count"] == 2 and info["seeds"] == [101, 102]
    check_pngs(gallery, [101, 102])
    second, _ = client.predict(**fields, seed=102, api_name="/txt2img")
    np.testing.assert_array_equal(pixels(gallery[1]), pixels(second[0]))
    assert gallery[1]["image"].endswith("txt2img-102-a-red-heart.png")
    with pytest.raises(AppError, match="batch_count must be between 1 and 8, got 9"):
        client.predict(**fields, seed=1, batch_count=9, api_name="/txt2img")


def test_the_batch_command_makes_what_the_api_makes_reports_a_bad_line_and_resumes(
    client, configured, tmp_path, capsys
):
    import batch

    jobs = tmp_path / "jobs.txt"
    jobs.write_text(
        '--prompt a red heart --negative_prompt blurry --steps 3 --cfg_scale 7 --seed 5 --sampler_name "Euler a"'
        " --restore_faces true\n"
        "# a comment, then a blank line\n\n"
        f"--tab color_guided --model {configured['unet']} --steps 3 --seed 6 --color #00ff00 --scheduler DDPM\n"
        "--prompt a cat --steps lots\n"
    )
    out = tmp_path / "out"
    assert batch.main(["--file", str(jobs), "--out", str(out)]) == 1
    report = capsys.readouterr()
    assert "line 5: --steps must be a number, got 'lots'" in report.err
    assert "line 1: ignored (not offered here): --restore_faces" in report.err
    assert "3 jobs: 2 made (2 images" in report.out and "1 bad or failed" in report.out
    made = out / "txt2img-5-a-red-heart.png"
    same, _ = client.predict(
        prompt="a red heart",
        negative_prompt="blurry",
        steps=3,
        guidance_scale=7,
        seed=5,
        scheduler="Euler a",
        api_name="/txt2img",
    )
    np.testing.assert_array_equal(np.asarray(Image.open(made)), pixels(same[0]))
    assert read_parameters(str(made)) == read_parameters(same[0]["image"]) | {"elapsed_seconds": ANY}
    guided = out / "color_guided-6.png"
    same, _ = client.predict(
        model=configured["unet"],
        steps=3,
        seed=6,
        color="#00ff00",
        color_scale=0.75,
        scheduler="DDPM",
        api_name="/color_guided",
    )
    np.testing.assert_array_equal(np.asarray(Image.open(guided)), pixels(same[0]))
    modified = {path.name: path.stat().st_mtime_ns for path in out.iterdir()}
    assert batch.main(["--file", str(jobs), "--out", str(out)]) == 1  # the bad line is still bad
    assert "2 skipped" in capsys.readouterr().out
    assert {path.name: path.stat().st_mtime_ns for path in out.iterdir()} == modified  # no work done
