"""Boundary checks: errors name the parameter, print bounds as people write them, never echo a huge value whole;
generated files go to a private folder."""

import os
import stat

import pytest

from pipelines.validation import MAX_SEED, number, resolve_seed


def test_a_huge_seed_names_the_bound_in_digits():
    with pytest.raises(ValueError) as caught:
        resolve_seed(10**30, 1)
    assert f"between -1 and {MAX_SEED - 1}," in str(caught.value) and "e+" not in str(caught.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "abc", None, [1], "9" * 10_000])
def test_hostile_numbers_name_the_parameter_briefly(value):
    with pytest.raises(ValueError) as caught:
        number("steps", value, int, 1, 1000)
    message = str(caught.value)
    assert message.startswith("steps must be") and len(message) < 120, message


def test_outputs_go_to_a_private_folder_per_process(monkeypatch):
    from pipelines import outputs

    monkeypatch.delenv("STUDIO_OUTPUT_DIR", raising=False)
    monkeypatch.setattr(outputs, "_private_output_dir", None)
    folder = outputs.output_dir()
    assert outputs.output_dir() == folder and not os.path.islink(folder)
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert os.path.basename(folder) != "guided-diffusion-studio"  # not a predictable, shared name
