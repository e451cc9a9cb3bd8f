"""LoRAs for the Stable Diffusion tabs: stable-diffusion-webui's `<lora:name:weight>` in the prompt, names from the
server's `LORA_DIR` (safetensors files, by stem) and `LORAS` (Hub ids the server allows, fetched once per process;
diffusers/PEFT, kohya and webui formats, which diffusers converts). A request only ever names a LoRA of that catalog:
never a path or a repository.

Adapters are loaded once onto a checkpoint's shared modules and never fused: a request activates its own set with
its weights under the checkpoint's lock and turns them off again when it ends (also after an error or a Stop), so the
base weights are never written and two requests cannot see each other's LoRAs. docs/lora-research.md has the sources.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import struct
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

from guidance.colors import shown

# <lora:name>, <lora:name:weight>; webui's optional third field (a separate UNet weight) is read as the weight too.
LORA_TAG = re.compile(r"<lora:([^:<>]+)(?::([^:<>]*))?(?::([^:<>]*))?>")
WEIGHT_RANGE = (-4.0, 4.0)  # what a tag's weight may be
_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # a checkpoint's UNet -> its lock
_GUARD = threading.Lock()
_HASHES: dict[tuple[str, float], str] = {}
# One `LORAS` entry: [name=]owner/repo[/path/in/repo.safetensors]; every part starts with a letter, digit, _ or -
# (no empty, "." or ".." part, no absolute path), and a name holds nothing webui's `Lora hashes` text would break on.
_PART = r"[\w-][\w.-]*"
HUB_ENTRY = re.compile(
    rf"^(?:(?P<name>[^=:<>,\"\s]+)=)?(?P<repo>[A-Za-z0-9][\w.-]*/{_PART})"
    rf"(?:/(?P<file>(?:{_PART}/)*{_PART}\.safetensors))?$"
)
DIFFUSERS_WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # what diffusers' training scripts save
HUB_RETRY_SECONDS = 600.0  # how long an entry that could not be fetched waits before the next try
_HUB: dict[str, tuple[dict[str, str], float | None]] = {}  # LORAS text -> ({name: local file}, when one last failed)
_HUB_GUARD = threading.Lock()
logger = logging.getLogger("studio")


@dataclass(frozen=True)
class Lora:
    """One LoRA a request asks for: its name (the file's stem), weight and file."""

    name: str
    weight: float
    path: str


def lora_dir() -> str | None:
    """`LORA_DIR`: the folder of LoRA files the server offers (None: no LoRAs)."""
    folder = os.environ.get("LORA_DIR", "").strip()
    return folder if folder and os.path.isdir(folder) else None


@dataclass(frozen=True)
class HubLora:
    """One LoRA of `LORAS`: the name a prompt uses, its Hub repository and file (None: the repository's one)."""

    name: str
    repo: str
    file: str | None

    @property
    def source(self) -> str:
        """The entry as LORAS names it: owner/repo[/file]."""
        return f"{self.repo}/{self.file}" if self.file else self.repo


def hub_entries(text: str) -> list[HubLora]:
    """The entries of a `LORAS` value (comma-separated `[name=]owner/repo[/file.safetensors]`; the name defaults to the
    file's stem, or the repository's name for diffusers' `pytorch_lora_weights`); ValueError naming LORAS and the
    entry for one that is not of that form or a name given twice."""
    entries: dict[str, HubLora] = {}
    for raw in (part.strip() for part in text.split(",")):
        if not raw:
            continue
        match = HUB_ENTRY.match(raw)
        if match is None:
            raise ValueError(f"LORAS: {shown(raw)} is not [name=]owner/repo or [name=]owner/repo/path/file.safetensors")
        repo, file = match["repo"], match["file"]
        base = os.path.basename(file or DIFFUSERS_WEIGHT_NAME)
        name = match["name"] or (
            repo.split("/")[1] if base == DIFFUSERS_WEIGHT_NAME else base.removesuffix(".safetensors")
        )
        if name in entries:
            raise ValueError(f"LORAS: the name {shown(name)} is given twice (name one of them: name=owner/repo/...)")
        entries[name] = HubLora(name, repo, file)
    return list(entries.values())


def single_safetensors(repo: str, files: list[str]) -> str:
    """The one `.safetensors` file of a repository's `files` (what a bare `owner/repo` entry means when it holds no
    `pytorch_lora_weights.safetensors`); ValueError naming LORAS when there are none or several."""
    candidates = sorted(file for file in files if file.endswith(".safetensors"))
    if len(candidates) != 1:
        found = ", ".join(candidates[:5]) or "none"
        raise ValueError(f"LORAS: {repo} holds {len(candidates)} .safetensors files ({found}); name one: {repo}/file")
    return candidates[0]


def hub_file(entry: HubLora) -> str:
    """The local copy of an entry's file, downloaded into the Hub cache once (offline or the Hub unreachable: the
    cached copy; a bare repository's one `.safetensors` file is then looked for among its cached files)."""
    from huggingface_hub import hf_hub_download, list_repo_files, snapshot_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    if entry.file is not None:
        return hf_hub_download(entry.repo, entry.file)
    try:
        return hf_hub_download(entry.repo, DIFFUSERS_WEIGHT_NAME)
    except LocalEntryNotFoundError:  # offline, or the Hub unreachable: the repository's cached files, if any
        folder = snapshot_download(entry.repo, allow_patterns="*.safetensors", local_files_only=True)
        files = [
            os.path.relpath(os.path.join(root, name), folder) for root, _, names in os.walk(folder) for name in names
        ]
        return os.path.join(folder, single_safetensors(entry.repo, files))
    except EntryNotFoundError:  # the Hub says the repository has no such file
        return hf_hub_download(entry.repo, single_safetensors(entry.repo, list_repo_files(entry.repo)))


def _fresh(known: tuple[dict[str, str], float | None] | None) -> bool:
    """Whether a fetched catalog serves as it is: every entry fetched, or its last failure under HUB_RETRY_SECONDS
    ago."""
    return known is not None and (known[1] is None or time.monotonic() - known[1] < HUB_RETRY_SECONDS)


def hub_catalog() -> dict[str, str]:
    """{name: local file} of the `LORAS` entries, fetched once per process (on ZeroGPU in the main process, when the
    page is built, so workers inherit them); an entry that cannot be fetched is logged, not offered, and tried again
    after HUB_RETRY_SECONDS."""
    text = os.environ.get("LORAS", "").strip()
    if not text:
        return {}
    if _fresh(known := _HUB.get(text)):  # read without the lock: a forked worker must not wait on a lock held at fork
        return known[0]
    with _HUB_GUARD:
        if not _fresh(known := _HUB.get(text)):
            files, failed = dict(known[0]) if known else {}, None
            for entry in hub_entries(text):
                if entry.name in files:
                    continue
                try:
                    files[entry.name] = hub_file(entry)
                except Exception as error:  # noqa: BLE001 - one missing LoRA must not stop the server
                    failed = time.monotonic()
                    logger.warning("LORAS: %s is not offered: %s: %s", entry.source, type(error).__name__, error)
            _HUB[text] = (files, failed)
        return _HUB[text][0]


def lora_catalog() -> dict[str, str]:
    """{name: file} of the LoRAs offered: the `.safetensors` files directly in `LORA_DIR`, named by their stem, then
    the `LORAS` Hub entries (a name LORA_DIR already has keeps its LORA_DIR file)."""
    folder, catalog = lora_dir(), {}
    if folder is not None:
        files = sorted(entry for entry in os.listdir(folder) if entry.endswith(".safetensors"))
        catalog = {entry.removesuffix(".safetensors"): os.path.join(folder, entry) for entry in files}
    for name, path in hub_catalog().items():
        catalog.setdefault(name, path)
    return catalog


def lora_tags(prompt: str) -> list[tuple[str, str]]:
    """(name, weight text) of each `<lora:...>` tag of a prompt, in order."""
    return [
        (match.group(1).strip(), (match.group(3) or match.group(2) or "1").strip())
        for match in LORA_TAG.finditer(prompt)
    ]


def without_lora_tags(prompt: str) -> str:
    """The prompt the text encoder reads: the `<lora:...>` tags taken out (they stay in the recorded prompt)."""
    return re.sub(r"\s{2,}", " ", LORA_TAG.sub("", prompt)).strip()


def with_lora_tag(prompt: str, name: str, weight: float) -> str:
    """The prompt with `<lora:name:weight>`: an existing tag of that name replaced, else the tag appended (what the
    page's LoRA picker does, as stable-diffusion-webui's cards do)."""
    tag = f"<lora:{name}:{weight:g}>"
    same = re.compile(rf"<lora:{re.escape(name)}(?::[^:<>]*){{0,2}}>")
    if same.search(prompt):
        return same.sub(lambda _: tag, prompt, count=1)
    return f"{prompt.rstrip()} {tag}".strip()


def requested_loras(prompt: str, name: str = "prompt") -> list[Lora]:
    """The LoRAs a prompt's tags ask for, the last weight of a name winning; ValueError naming the prompt and the
    tag for a name the server does not offer or a weight that is not a number from -4 to 4."""
    tags = lora_tags(prompt)
    catalog, chosen = (lora_catalog() if tags else {}), {}
    for tag, weight_text in tags:
        if tag not in catalog:
            offered = ", ".join(catalog) or "none (neither LORA_DIR nor LORAS is set)"
            raise ValueError(f"{name}: <lora:{shown(tag)[1:-1]}> is not a LoRA this server offers (offered: {offered})")
        try:
            weight = float(weight_text)
        except ValueError:
            weight = float("nan")
        low, high = WEIGHT_RANGE
        if not low <= weight <= high:
            raise ValueError(
                f"{name}: the weight of <lora:{tag}> must be a number from {low:g} to {high:g}, "
                f"got {shown(weight_text)}"
            )
        chosen[tag] = Lora(tag, weight, catalog[tag])
    return list(chosen.values())


def lora_hash(path: str) -> str:
    """stable-diffusion-webui's hash of a LoRA file: the file's own `sshs_model_hash` metadata where it has one, else
    the SHA-256 of its tensors (the bytes after the safetensors header); 12 hex digits, read once per file version."""
    key = (path, os.path.getmtime(path))
    if key not in _HASHES:
        with open(path, "rb") as handle:
            header_size = struct.unpack("<Q", handle.read(8))[0]
            header = json.loads(handle.read(header_size) or b"{}")
            recorded = (header.get("__metadata__") or {}).get("sshs_model_hash")
            digest = hashlib.sha256()
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _HASHES[key] = (recorded or digest.hexdigest())[:12]
    return _HASHES[key]


def hashes_line(loras: list[Lora]) -> str:
    """The `Lora hashes` value of the PNG parameters: "name: hash, name: hash", as stable-diffusion-webui writes it."""
    return ", ".join(f"{lora.name.replace(':', '').replace(',', '')}: {lora_hash(lora.path)}" for lora in loras)


def _adapter_name(lora: Lora) -> str:
    """An adapter name diffusers accepts (no dots) that changes when the file does."""
    return "lora_" + hashlib.sha256(f"{lora.path}:{os.path.getmtime(lora.path)}".encode()).hexdigest()[:16]


def checkpoint_lock(unet) -> threading.RLock:
    """The lock a checkpoint's requests hold while its adapters are set (one per shared UNet)."""
    with _GUARD:
        return _LOCKS.setdefault(unet, threading.RLock())


def _loaded(pipeline) -> set[str]:
    """The adapters loaded onto a pipeline's shared modules."""
    try:
        return {name for names in pipeline.get_list_adapters().values() for name in names}
    except (ValueError, AttributeError):  # no peft backend, or nothing loaded
        return set()


@contextlib.contextmanager
def applied(pipeline, loras: list[Lora]) -> Iterator[None]:
    """Run the body with exactly `loras` active on the pipeline's shared modules (none: every adapter off), holding
    the checkpoint's lock; adapters are loaded once and left loaded but off afterwards, whatever happens."""
    with checkpoint_lock(pipeline.unet):
        loaded = _loaded(pipeline)
        try:
            for lora in loras:
                if _adapter_name(lora) not in loaded:
                    _load(pipeline, lora)
                    loaded.add(_adapter_name(lora))
            if loras:
                pipeline.set_adapters([_adapter_name(lora) for lora in loras], [lora.weight for lora in loras])
                pipeline.enable_lora()
            elif loaded:
                pipeline.disable_lora()
            yield
        finally:
            if _loaded(pipeline):
                pipeline.disable_lora()


def _load(pipeline, lora: Lora) -> None:
    """Load one LoRA file onto the pipeline's shared modules; ValueError naming the tag (no server path) for a file
    that does not fit, with nothing of it left behind."""
    name = _adapter_name(lora)
    try:
        pipeline.load_lora_weights(lora.path, adapter_name=name)
    except Exception as error:  # noqa: BLE001 - another family's LoRA, or a format diffusers does not read
        with contextlib.suppress(Exception):
            pipeline.delete_adapters([name])
        raise ValueError(
            f"prompt: <lora:{lora.name}> cannot be applied to this model ({type(error).__name__}: another model "
            "family's LoRA, or a format diffusers does not read)"
        ) from None
