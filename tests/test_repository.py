"""The repository as a Space receives it: a plain `git push` (or `hf upload`) to a Space refuses any file of 10 MB
or more outside LFS, so no tracked file may be that large; the bundled weights are sharded and load unchanged."""

import os
import shutil
import subprocess

import pytest

from pipelines import bundled

SPACE_FILE_LIMIT = 10 * 2**20  # what the Hub takes outside LFS (10 MiB)


def tracked_files() -> list[str]:
    """The files git tracks in this checkout."""
    root = bundled.REPO_ROOT
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
    return [os.path.join(root, name) for name in listed.decode().split("\0") if name]


@pytest.mark.skipif(
    shutil.which("git") is None or not os.path.exists(os.path.join(bundled.REPO_ROOT, ".git")),
    reason="not a git checkout",
)
def test_no_tracked_file_is_10_mb_or_more():
    files = tracked_files()
    assert len(files) > 100
    large = [
        f"{os.path.relpath(path, bundled.REPO_ROOT)}: {os.path.getsize(path)} bytes"
        for path in files
        if os.path.isfile(path) and os.path.getsize(path) >= SPACE_FILE_LIMIT
    ]
    assert not large, "files a Space refuses outside LFS:\n" + "\n".join(large)


@pytest.mark.skipif(bundled.bundled_path("sd") is None, reason="bundled SD not shipped")
def test_the_sharded_bundled_unets_load_through_diffusers_as_one_checkpoint():
    from diffusers import UNet2DConditionModel, UNet2DModel

    for model_class, name in ((UNet2DModel, "ddpm"), (UNet2DConditionModel, "sd")):
        weights = os.path.join(bundled.bundled_dir(), bundled.WEIGHT_FILES[name])
        assert os.path.isfile(weights + ".index.json") and not os.path.exists(weights)  # shipped as shards
        model = model_class.from_pretrained(os.path.dirname(weights))
        assert sum(parameter.numel() for parameter in model.parameters()) > 1_000_000
