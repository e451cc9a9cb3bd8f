"""LoRAs in the Stable Diffusion tabs: `<lora:name:weight>` from LORA_DIR (PEFT and kohya files), exactly the
request's own adapters while it runs, the base weights never written, the hashes recorded as webui records them."""

import hashlib
import threading

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pipelines import stable_diffusion as sd
from pipelines.loras import lora_hash, lora_tags, with_lora_tag, without_lora_tags

LAYERS = [f"down_blocks.1.attentions.0.transformer_blocks.0.attn{n}.to_{p}" for n in (1, 2) for p in "qkv"]
SHAPES = {"q": (64, 64), "k": (64, 64), "v": (64, 64)}  # attn2's k and v read the 32-wide text embeddings
RANK = 4


def _tensors(seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(down, up) of each layer, drawn from a generator of `seed` (up non-zero: a visible LoRA)."""
    generator, pairs = torch.Generator().manual_seed(seed), {}
    for layer in LAYERS:
        out_features, in_features = SHAPES[layer[-1]]
        if "attn2" in layer and layer[-1] in "kv":
            in_features = 32
        down = torch.randn(RANK, in_features, generator=generator) * 0.5
        up = torch.randn(out_features, RANK, generator=generator) * 0.5
        pairs[layer] = (down, up)
    return pairs


def _peft_file(path, seed: int) -> None:
    tensors = {}
    for layer, (down, up) in _tensors(seed).items():
        tensors[f"unet.{layer}.lora_A.weight"], tensors[f"unet.{layer}.lora_B.weight"] = down, up
    save_file(tensors, str(path))


def _kohya_file(path, seed: int) -> None:
    tensors = {}
    for layer, (down, up) in _tensors(seed).items():
        key = "lora_unet_" + layer.replace(".", "_")
        tensors[f"{key}.lora_down.weight"], tensors[f"{key}.lora_up.weight"] = down, up
        tensors[f"{key}.alpha"] = torch.tensor(float(RANK))  # alpha = rank: scale 1, as the PEFT file
    save_file(tensors, str(path))


@pytest.fixture()
def loras(configured, tmp_path, monkeypatch):
    folder = tmp_path / "loras"
    folder.mkdir()
    _peft_file(folder / "red.safetensors", seed=1)
    _peft_file(folder / "blue.safetensors", seed=2)
    _kohya_file(folder / "red_kohya.safetensors", seed=1)
    monkeypatch.setenv("LORA_DIR", str(folder))
    return folder


def run(prompt: str, **fields):
    values = dict(task="txt2img", prompt=prompt, steps=3, seed=2, scheduler="DDIM")
    return sd.generate(sd.Request(**(values | fields)))


def pixels(result) -> np.ndarray:
    return np.asarray(result.images[0])


def test_tags_are_read_and_taken_out_of_what_the_encoder_reads():
    assert lora_tags("a cat <lora:red:0.8>, <lora:blue> <lora:x:1:0.5>") == [
        ("red", "0.8"),
        ("blue", "1"),
        ("x", "0.5"),
    ]
    assert without_lora_tags("a cat <lora:red:0.8>, in snow") == "a cat , in snow"


def test_the_picker_adds_a_tag_or_changes_the_weight_of_the_one_there():
    assert with_lora_tag("a cat", "red", 0.8) == "a cat <lora:red:0.8>"
    assert with_lora_tag("a cat <lora:red:1> in snow", "red", 0.5) == "a cat <lora:red:0.5> in snow"
    assert with_lora_tag("", "blue", 1.0) == "<lora:blue:1>"
    assert with_lora_tag("<lora:red.v2:1>", "red", 2) == "<lora:red.v2:1> <lora:red:2>"


def test_a_lora_changes_the_image_and_leaves_the_base_weights_as_they_were(loras):
    unet = sd.get_base_pipeline().unet
    before = {name: value.clone() for name, value in unet.state_dict().items()}
    plain = pixels(run("a heart"))
    red = run("a heart <lora:red:1>")
    assert not np.array_equal(plain, pixels(red))
    assert red.info["loras"] == [{"name": "red", "weight": 1.0}] and red.info["prompt"] == "a heart <lora:red:1>"
    np.testing.assert_array_equal(pixels(run("a heart <lora:red:0>")), plain)  # weight 0: no change at all
    np.testing.assert_array_equal(pixels(run("a heart")), plain)  # the adapter is off again
    after = {name.replace(".base_layer", ""): value for name, value in unet.state_dict().items() if "lora_" not in name}
    assert after.keys() == before.keys() and all(torch.equal(before[name], after[name]) for name in before)


def test_kohya_and_peft_files_of_the_same_numbers_give_the_same_image(loras):
    np.testing.assert_array_equal(pixels(run("a heart <lora:red>")), pixels(run("a heart <lora:red_kohya>")))


def test_a_stop_or_an_error_leaves_no_adapter_on(loras):
    plain = pixels(run("a heart"))
    stopped = sd.generate(
        sd.Request(task="txt2img", prompt="a heart <lora:blue>", steps=6, seed=2), should_stop=lambda: True
    )
    assert stopped.info["interrupted"]
    np.testing.assert_array_equal(pixels(run("a heart")), plain)
    save_file({"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.ones(4, 7),
               "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight": torch.ones(64, 4)},
              str(loras / "broken.safetensors"))  # fmt: skip
    with pytest.raises(ValueError, match=r"<lora:broken> cannot be applied to this model") as caught:
        run("a heart <lora:broken> <lora:red>")
    assert str(loras) not in str(caught.value)
    np.testing.assert_array_equal(pixels(run("a heart")), plain)
    assert not np.array_equal(pixels(run("a heart <lora:red>")), plain)  # the others still load and work


def test_two_requests_at_once_each_get_only_their_own_lora(loras):
    alone = {name: pixels(run(f"a heart <lora:{name}:0.9>", batch_size=1)) for name in ("red", "blue")}
    results, failures = {}, []

    def worker(name: str) -> None:
        try:
            for _ in range(2):
                results.setdefault(name, []).append(pixels(run(f"a heart <lora:{name}:0.9>", batch_size=1)))
        except Exception as error:  # noqa: BLE001 - reported below
            failures.append(error)

    threads = [threading.Thread(target=worker, args=(name,)) for name in ("red", "blue")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    for name, images in results.items():
        for image in images:
            np.testing.assert_array_equal(image, alone[name])


def test_unknown_names_and_bad_weights_are_refused_by_name_without_server_paths(loras):
    with pytest.raises(ValueError, match=r"prompt: <lora:nope> is not a LoRA this server offers \(offered: blue, red"):
        sd.validate(sd.Request(task="txt2img", prompt="x <lora:nope>"))
    with pytest.raises(ValueError, match="the weight of <lora:red> must be a number from -4 to 4, got 'lots'"):
        sd.validate(sd.Request(task="txt2img", prompt="x <lora:red:lots>"))
    try:
        sd.validate(sd.Request(task="txt2img", prompt="x <lora:nope>"))
    except ValueError as error:
        assert str(loras) not in str(error)


def test_the_png_records_lora_hashes_as_webui_does(loras):
    from pipelines.infotext import infotext, parse_infotext

    result = run("a heart <lora:red:0.7>")
    data = (loras / "red.safetensors").read_bytes()
    header = 8 + int.from_bytes(data[:8], "little")
    expected = hashlib.sha256(data[header:]).hexdigest()[:12]
    assert lora_hash(str(loras / "red.safetensors")) == expected
    text = infotext(result.image_parameters[0], result.images[0].size)
    assert parse_infotext(text)["Lora hashes"] == f"red: {expected}" and "<lora:red:0.7>" in text


def test_an_sdxl_lora_changes_the_image_and_goes_off_again(sdxl, tmp_path, monkeypatch):
    """The same on SDXL (adapters on its UNet; attn1 only, whose shapes the tiny SDXL shares)."""
    folder = tmp_path / "xl-loras"
    folder.mkdir()
    generator, tensors = torch.Generator().manual_seed(5), {}
    for layer in [name for name in LAYERS if "attn1" in name]:
        tensors[f"unet.{layer}.lora_A.weight"] = torch.randn(RANK, 64, generator=generator) * 0.5
        tensors[f"unet.{layer}.lora_B.weight"] = torch.randn(64, RANK, generator=generator) * 0.5
    save_file(tensors, str(folder / "xl.safetensors"))
    monkeypatch.setenv("LORA_DIR", str(folder))
    plain = pixels(run("a heart"))
    assert not np.array_equal(pixels(run("a heart <lora:xl:1>")), plain)
    np.testing.assert_array_equal(pixels(run("a heart")), plain)


def _hub_cache(root, repo: str, files: dict[str, int]) -> None:
    """A Hub cache holding `repo` at one commit with `files` (PEFT LoRAs of the given seeds) where hf_hub_download
    looks for them, so the offline test run reads them as a Space reads what it downloaded."""
    commit = hashlib.sha1(repo.encode()).hexdigest()
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True)
    for name, seed in files.items():
        _peft_file(folder / "snapshots" / commit / name, seed)


def test_hub_loras_are_offered_by_name_fetched_once_and_read_as_their_files(loras, tmp_path, monkeypatch, caplog):
    import huggingface_hub.constants

    from pipelines import loras as module
    from pipelines.infotext import infotext, parse_infotext

    cache = tmp_path / "hub"
    _hub_cache(cache, "studio/red-lora", {"pytorch_lora_weights.safetensors": 1})  # diffusers' name: the repo's
    _hub_cache(cache, "studio/styles", {"blue.safetensors": 2, "green.safetensors": 3})
    _hub_cache(cache, "studio/ink", {"ink-v2.safetensors": 2})  # a bare repository, its one file cached
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(module, "_HUB", {})
    fetched = []
    monkeypatch.setattr(module, "hub_file", lambda entry, fetch=module.hub_file: fetched.append(entry) or fetch(entry))
    monkeypatch.setenv(
        "LORAS",
        "studio/red-lora, azul=studio/styles/blue.safetensors, studio/missing, red=studio/styles/green.safetensors, "
        "studio/ink",
    )
    catalog = module.lora_catalog()
    assert list(catalog) == ["blue", "red", "red_kohya", "red-lora", "azul", "ink"]  # LORA_DIR's "red" keeps its file
    assert catalog["red"] == str(loras / "red.safetensors") and str(cache) in catalog["azul"]
    assert catalog["ink"].endswith("ink-v2.safetensors")  # offline: the bare repository's one cached file
    assert "LORAS: studio/missing is not offered" in caplog.text
    assert len(fetched) == 5 and module.lora_catalog() == catalog and len(fetched) == 5  # once per process...
    monkeypatch.setattr(module, "HUB_RETRY_SECONDS", 0.0)
    assert module.lora_catalog() == catalog and [entry.name for entry in fetched[5:]] == ["missing"]  # ...but failures
    # The same file from the Hub or from LORA_DIR: the same image and the same recorded hash, under its own name.
    np.testing.assert_array_equal(pixels(run("a heart <lora:red-lora:0.8>")), pixels(run("a heart <lora:red:0.8>")))
    from_hub = run("a heart <lora:azul>")
    np.testing.assert_array_equal(pixels(from_hub), pixels(run("a heart <lora:blue>")))
    text = infotext(from_hub.image_parameters[0], from_hub.images[0].size)
    assert parse_infotext(text)["Lora hashes"] == f"azul: {lora_hash(str(loras / 'blue.safetensors'))}"
    with pytest.raises(ValueError, match=r"<lora:missing> is not a LoRA this server offers") as caught:
        sd.validate(sd.Request(task="txt2img", prompt="x <lora:missing>"))
    assert str(cache) not in str(caught.value)


def test_loras_entries_are_hub_ids_and_files_never_anything_else():
    from pipelines.loras import HubLora, hub_entries, single_safetensors

    assert hub_entries("a/b, pix=c/d/sub/pix-xl.safetensors, e/f/g.safetensors, v1..2=h/i") == [
        HubLora("b", "a/b", None),
        HubLora("pix", "c/d", "sub/pix-xl.safetensors"),
        HubLora("g", "e/f", "g.safetensors"),
        HubLora("v1..2", "h/i", None),
    ]
    bad_entries = ("/etc/passwd", "a", "a/b/c.bin", "a/b/../c.safetensors", "a/b//etc/x.safetensors", "a/./x")
    for bad in (*bad_entries, "a/b/./x.safetensors", "a/..", 'q"=a/b', "n:x=a/b", "https://x.io/a/b"):
        with pytest.raises(ValueError, match=r"^LORAS: .* is not \[name=\]owner/repo"):
            hub_entries(bad)
    with pytest.raises(ValueError, match="LORAS: the name 'b' is given twice"):
        hub_entries("a/b, c/d/b.safetensors")
    assert single_safetensors("a/b", ["README.md", "x.safetensors"]) == "x.safetensors"
    with pytest.raises(ValueError, match=r"LORAS: a/b holds 2 .safetensors files \(x.safetensors, y.safetensors\)"):
        single_safetensors("a/b", ["y.safetensors", "x.safetensors"])


def test_a_bare_repo_without_diffusers_file_name_means_its_one_safetensors_file(monkeypatch):
    """Online, `owner/repo` reads `pytorch_lora_weights.safetensors`, and where the Hub answers that the repository
    has no such file, its one `.safetensors` file; offline nothing is listed (the entry is not offered)."""
    import httpx
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError, RemoteEntryNotFoundError

    from pipelines.loras import HubLora, hub_file

    asked = []

    def download(repo, file):
        asked.append(file)
        if file == "pytorch_lora_weights.safetensors":
            raise RemoteEntryNotFoundError(
                "404", response=httpx.Response(404, request=httpx.Request("GET", "http://h"))
            )
        return f"/cache/{repo}/{file}"

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda repo: ["README.md", "style.safetensors"])
    assert hub_file(HubLora("s", "a/s", None)) == "/cache/a/s/style.safetensors"
    assert asked == ["pytorch_lora_weights.safetensors", "style.safetensors"]
    assert hub_file(HubLora("t", "a/t", "t.safetensors")) == "/cache/a/t/t.safetensors"  # a named file: only it

    def offline(repo, file):
        raise LocalEntryNotFoundError("offline")

    def cached(repo, allow_patterns, local_files_only):
        assert local_files_only and allow_patterns == "*.safetensors"
        if repo == "a/none":
            raise LocalEntryNotFoundError("nothing cached")
        return "/cache/a/s"

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", cached)
    monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda repo: pytest.fail("listed while offline"))
    with pytest.raises(LocalEntryNotFoundError):
        hub_file(HubLora("none", "a/none", None))
    with pytest.raises(ValueError, match="LORAS: a/s holds 0 .safetensors files"):  # the folder does not exist here
        hub_file(HubLora("s", "a/s", None))
