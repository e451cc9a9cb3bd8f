"""The MCP server (on by default in `python app.py`) through the `mcp` package's streamable-HTTP client, as an AI
agent reaches it: the tools, their schemas and descriptions, calls, errors and progress."""

import ast
import asyncio
import io
import urllib.request

import jsonschema
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from PIL import Image

from tests.conftest import gallery_pixels

GENERATION_TOOLS = ["clip_guided", "color_guided", "img2img", "inpaint", "txt2img", "unconditional"]


def _mcp(server: str, work):
    """Run `work(session)` in an MCP session with the app's MCP server; returns what it returns."""

    async def main():
        async with streamable_http_client(server + "gradio_api/mcp/") as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await work(session)

    return asyncio.run(main())


def _values(result) -> list:
    """The Python values in a tool result's text blocks (Gradio writes each output as its repr)."""
    values = []
    for block in result.content:
        value = ast.literal_eval(block.text)
        values.extend(value if isinstance(value, list) and value and isinstance(value[0], list) else [value])
    return values


def _images_and_info(result) -> tuple[list[np.ndarray], dict]:
    """A generation tool's images (fetched from the URLs it returns) and its info dict."""
    gallery, info = _values(result)
    images = []
    for item in gallery:
        with urllib.request.urlopen(item["image"]["url"], timeout=30) as response:
            images.append(np.asarray(Image.open(io.BytesIO(response.read()))))
    return images, info


@pytest.fixture(scope="module")
def tools(server):
    async def work(session):
        return (await session.list_tools()).tools

    return {tool.name: tool for tool in _mcp(server, work)}


def test_each_endpoint_is_one_tool_and_every_argument_is_described(tools):
    """An agent sees the six generation endpoints, /sweep and /read_parameters (not /stop, not UI events), each with
    a summary and, for every argument, a description and a valid JSON Schema (a client that checks schemas would
    otherwise refuse the whole server)."""
    assert sorted(tools) == sorted([*GENERATION_TOOLS, "read_parameters", "sweep"])
    for name, tool in tools.items():
        jsonschema.Draft202012Validator.check_schema(tool.inputSchema)
        assert len(tool.description) > 40, name
        for argument, schema in tool.inputSchema["properties"].items():
            assert len(schema.get("description", "")) > 15, (name, argument)
    steps = tools["txt2img"].inputSchema["properties"]["steps"]
    assert "1 to 150" in steps["description"] and steps["default"] == 25
    assert "DPM++ 2M Karras" in tools["txt2img"].inputSchema["properties"]["scheduler"]["enum"]


def test_tool_calls_make_what_gradio_client_makes_report_progress_and_name_a_bad_argument(server, tiny_models):
    """txt2img and color_guided through MCP give the images and parameters that the same requests through
    gradio_client give, pixel for pixel; progress reaches the client as notifications; a bad argument is a tool
    error that names it."""
    txt2img = {"prompt": "a red apple", "steps": 4, "seed": 11, "batch_size": 2}
    color_guided = {"steps": 3, "seed": 5, "color": "#00ff00", "color_scale": 1.0}
    progress_messages = []

    async def on_progress(progress, total, message):
        progress_messages.append(message or "")

    async def work(session):
        return (
            await session.call_tool("txt2img", txt2img, progress_callback=on_progress),
            await session.call_tool("color_guided", color_guided),  # no progress token: Gradio's other path
            await session.call_tool("txt2img", {**txt2img, "steps": 4000}),
        )

    sd_result, color_result, refused = _mcp(server, work)
    client = Client(server, verbose=False)
    for result, api_name, arguments in (
        (sd_result, "/txt2img", txt2img),
        (color_result, "/color_guided", color_guided),
    ):
        assert not result.isError, result.content
        images, info = _images_and_info(result)
        expected_gallery, expected_info = client.predict(**arguments, api_name=api_name)
        expected = gallery_pixels(expected_gallery)
        assert len(images) == len(expected) == arguments.get("batch_size", 1)
        for image, reference in zip(images, expected):
            np.testing.assert_array_equal(image, reference)
        assert info["seeds"] == expected_info["seeds"] and info["steps"] == arguments["steps"]
    assert any("Step 4 of 4" in message for message in progress_messages), progress_messages
    assert refused.isError
    with pytest.raises(AppError) as caught:
        client.predict(**{**txt2img, "steps": 4000}, api_name="/txt2img")
    assert str(caught.value) in refused.content[0].text and "steps" in str(caught.value)


def test_view_api_describes_every_endpoint(server):
    """What `client.view_api(return_format="dict")` tells a script: each documented endpoint's summary."""
    endpoints = Client(server, verbose=False).view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert sorted(endpoints) == sorted(f"/{name}" for name in [*GENERATION_TOOLS, "read_parameters", "sweep"])
    for name, endpoint in endpoints.items():
        assert len(endpoint["description"]) > 40, name


def test_a_picture_reaches_a_tool_as_the_url_of_an_image_the_studio_made(server):
    """An agent chains tools: the URL of a txt2img image is the input of img2img (equal to gradio_client's img2img of
    the same file), /read_parameters and an outpainting with no mask; a URL that cannot be fetched is refused by
    name."""
    img2img = {"prompt": "a green apple", "steps": 4, "strength": 0.75, "seed": 2}

    async def work(session):
        made = _values(await session.call_tool("txt2img", {"prompt": "a red apple", "steps": 2, "seed": 1}))
        url = made[0][0]["image"]["url"]
        return (
            url,
            await session.call_tool("img2img", {"image": url, **img2img}),
            await session.call_tool("read_parameters", {"image": url}),
            # Outpainting needs no mask: the schema must not require one (the client checks arguments against it).
            await session.call_tool("inpaint", {"image": url, "prompt": "", "outpaint_right": 8, "steps": 2}),
            await session.call_tool("img2img", {"image": "https://example.invalid/apple.png", "prompt": "x"}),
        )

    url, result, parameters, outpainted, unreachable = _mcp(server, work)
    assert not outpainted.isError, outpainted.content
    assert _images_and_info(outpainted)[0][0].shape[:2] == (64, 72)
    assert unreachable.isError
    assert "image could not be fetched from https://example.invalid" in unreachable.content[0].text
    assert not result.isError, result.content
    images, info = _images_and_info(result)
    with urllib.request.urlopen(url, timeout=30) as response:
        source = Image.open(io.BytesIO(response.read()))
        source.load()
    expected, _ = Client(server, verbose=False).predict(image=handle_file(url), **img2img, api_name="/img2img")
    np.testing.assert_array_equal(images[0], gallery_pixels(expected)[0])
    assert info["strength"] == 0.75 and images[0].shape[:2] == source.size[::-1]
    made = _values(parameters)[0]
    assert made["tab"] == "txt2img" and made["values"]["seed"] == 1 and made["values"]["prompt"] == "a red apple"


def test_only_a_file_in_the_cache_is_read_from_its_url_and_anything_else_is_left_to_gradio(tmp_path):
    from ui_components import served_file

    cache = tmp_path / "cache"
    (cache / "ab12").mkdir(parents=True)
    picture = cache / "ab12" / "a picture.png"
    picture.write_bytes(b"png")
    (tmp_path / "secret.txt").write_text("no")
    route = "http://127.0.0.1:7860/gradio_api/file="
    assert served_file(route + str(picture).replace(" ", "%20"), str(cache)) == str(picture)
    assert served_file("https://user-space.hf.space/gradio_api/file=" + str(picture), str(cache)) == str(picture)
    for outside in (
        route + str(tmp_path / "secret.txt"),  # a file outside the cache
        route + str(cache / ".." / "secret.txt"),  # .. out of it
        route + str(cache / "ab12" / "missing.png"),
        "https://example.com/picture.png",  # another route: Gradio fetches it, with its SSRF guard
    ):
        assert served_file(outside, str(cache)) is None, outside
