"""Gradio inputs whose refusals name the parameter.

Gradio checks a slider's range and a dropdown's choices in the component's `preprocess`, before any handler or
`validator=` runs, and says only "Value 1000000000 is greater than maximum value 1000." With ten keywords in an API
call nobody can tell which one. These subclasses check first, with the studio's wording: the API keyword (set by
`name_inputs` from the handler's signature), the page's label and the allowed range or choices. The frontend sees
the same components (`get_block_name`).
"""

from __future__ import annotations

import inspect
import math
import os
import urllib.parse

import gradio as gr
import PIL.Image
from gradio.utils import is_in_or_equal

from pipelines.images import MAX_UPLOAD_PIXELS
from pipelines.validation import LABELS, check_length, choice, in_page, number, typed


def _where(component) -> tuple[str, str | None]:
    """(API keyword, label for the message) of an input; the label is left to LABELS when it knows the keyword."""
    keyword = getattr(component, "api_keyword", None) or str(component.label or "value")
    return keyword, None if keyword in LABELS else component.label


def _refuse(message: str) -> gr.Error:
    return gr.Error(message, print_exception=False)


class _GradioFrontend:
    """Rendered by the frontend component of the Gradio class refined (Gradio looks it up by class name)."""

    def get_block_name(self) -> str:
        gradio_class = next(cls for cls in type(self).__mro__ if cls.__module__.startswith("gradio."))
        if getattr(gradio_class, "is_template", False):  # ImageMask is drawn by ImageEditor's frontend
            gradio_class = gradio_class.__base__
        return gradio_class.__name__.lower()

    def get_block_class(self) -> str:
        # What view_api names the component: its own class, except a template's (ImageMask), named as Gradio does.
        return self.get_block_name() if getattr(self, "is_template", False) else type(self).__name__.lower()


class _Bounded:
    """Range check of Slider and Number, before Gradio's own."""

    def _kind(self) -> type:
        step = getattr(self, "step", None)
        integral = getattr(self, "precision", None) == 0 or (
            step is not None and float(step).is_integer() and float(self.minimum or 0).is_integer()
        )
        return int if integral else float

    def preprocess(self, payload):
        if payload is None and isinstance(self, gr.Number):
            return None  # an empty number box: the handler's default applies
        keyword, label = _where(self)
        low = -math.inf if self.minimum is None else self.minimum
        high = math.inf if self.maximum is None else self.maximum
        kind = self._kind()
        try:
            typed(keyword, payload, kind, label)  # "5", [1], True: not a number
            number(keyword, payload, kind, low, high, label=label)
        except ValueError as error:
            raise _refuse(str(error)) from None
        return super().preprocess(payload)


class _Choice:
    """Choice check of Dropdown and Radio, before Gradio's own."""

    def preprocess(self, payload):
        if payload is not None and not getattr(self, "allow_custom_value", False):
            keyword, label = _where(self)
            try:
                choice(keyword, payload, [value for _, value in self.choices], label)
            except ValueError as error:
                raise _refuse(str(error)) from None
        return super().preprocess(payload)


class Textbox(_GradioFrontend, gr.Textbox):
    """Text only (Gradio would pass a list or a dict on as its repr), at most MAX_TEXT characters (check_length)."""

    def preprocess(self, payload):
        if payload is not None:
            keyword, label = _where(self)
            try:
                check_length(keyword, typed(keyword, payload, str, label), label)
            except ValueError as error:
                raise _refuse(str(error)) from None
        return super().preprocess(payload)


FILE_ROUTE = "/gradio_api/file="  # where Gradio serves the files in its cache


def served_file(url: str, cache: str) -> str | None:
    """The file in `cache` that a URL of Gradio's file route names (`.../gradio_api/file=<path>`, as tool results
    give an image), if it exists there; else None."""
    path = urllib.parse.urlparse(url).path
    if FILE_ROUTE not in path:
        return None
    local = os.path.realpath(urllib.parse.unquote(path.split(FILE_ROUTE, 1)[1]))
    return local if is_in_or_equal(local, cache) and os.path.isfile(local) else None


def check_header(path: str, keyword: str, label: str | None) -> None:
    """Refuse, by name, a file that is not an image or whose header says it decodes to more than MAX_UPLOAD_PIXELS
    (read from the header alone, before anything is decoded)."""
    where = in_page(keyword, label)
    try:
        with PIL.Image.open(path) as header:
            width, height = header.size
    except Exception as error:  # noqa: BLE001 - any unreadable upload is the same refusal
        raise _refuse(f"{keyword} is not an image this server can read ({type(error).__name__}){where}") from None
    if width * height > MAX_UPLOAD_PIXELS:
        raise _refuse(
            f"{keyword} is {width}x{height} px ({width * height / 1e6:.1f} megapixels), above this server's "
            f"limit of {MAX_UPLOAD_PIXELS / 1e6:.1f} megapixels: scale it down first{where}"
        )


def decoded(decode, keyword: str, label: str | None):
    """`decode()`, a body that does not decode refused by name."""
    try:
        return decode()
    except Exception as error:  # noqa: BLE001 - a header that reads but a body that does not
        where = in_page(keyword, label)
        raise _refuse(f"{keyword} could not be decoded: {str(error)[:80] or type(error).__name__}{where}") from None


class Image(_GradioFrontend, gr.Image):
    """An upload that is not an image, is truncated, or would decode to more than MAX_UPLOAD_PIXELS is refused by
    name, from its header, before anything is decoded."""

    async def async_move_resource_to_block_cache(self, url_or_file_path):
        # An image this server made, passed back by its URL (an MCP agent chaining txt2img into img2img) is read from
        # the cache: Gradio would fetch it over HTTP, and its SSRF guard refuses a local server's own address.
        if isinstance(url_or_file_path, str) and (local := served_file(url_or_file_path, self.GRADIO_CACHE)):
            url_or_file_path = local
        try:
            return await super().async_move_resource_to_block_cache(url_or_file_path)
        except Exception as error:  # noqa: BLE001 - a URL that cannot be fetched, for whatever reason, is one refusal
            if not (isinstance(url_or_file_path, str) and url_or_file_path.startswith(("http://", "https://"))):
                raise
            keyword, label = _where(self)
            reason = str(error)[:120] or type(error).__name__
            raise _refuse(
                f"{keyword} could not be fetched from {url_or_file_path[:120]} ({reason}; this server fetches public "
                f"http(s) URLs only){in_page(keyword, label)}"
            ) from None

    def preprocess(self, payload):
        if payload is None:
            return None
        keyword, label = _where(self)
        check_header(payload.path, keyword, label)
        return decoded(lambda: super(Image, self).preprocess(payload), keyword, label)


MAX_EDITOR_LAYERS = 4  # the page's editor paints one layer


class ImageMask(_GradioFrontend, gr.ImageMask):
    """The inpainting editor: its background, layers and composite each checked as an Image upload is, from their
    headers, and at most MAX_EDITOR_LAYERS layers, before any is decoded."""

    def preprocess(self, payload):
        if payload is None:
            return None
        keyword, label = _where(self)
        layers = list(payload.layers or [])
        if len(layers) > MAX_EDITOR_LAYERS:
            raise _refuse(f"{keyword} has {len(layers)} layers, above {MAX_EDITOR_LAYERS}{in_page(keyword, label)}")
        for file in [payload.background, payload.composite, *layers]:
            if file is not None and getattr(file, "path", None):
                check_header(file.path, keyword, label)
        return decoded(lambda: super(ImageMask, self).preprocess(payload), keyword, label)


class KeywordValues(_GradioFrontend, gr.JSON):
    """A JSON input holding a dict of keyword values, described as a JSON Schema object: gr.JSON's own `"type": {}`
    is not valid JSON Schema, and MCP clients that check tool schemas refuse a server with one."""

    def api_info(self) -> dict:
        return {"type": "object", "additionalProperties": True, "description": "keyword values"}


class Slider(_GradioFrontend, _Bounded, gr.Slider):
    pass


class Number(_GradioFrontend, _Bounded, gr.Number):
    pass


class Dropdown(_GradioFrontend, _Choice, gr.Dropdown):
    pass


class Radio(_GradioFrontend, _Choice, gr.Radio):
    pass


def name_inputs(fn, inputs) -> None:
    """Give each input the API keyword it fills: the handler's parameter at the same position."""
    for parameter, component in zip(inspect.signature(fn).parameters, inputs):
        if getattr(component, "api_keyword", None) is None:
            component.api_keyword = parameter
