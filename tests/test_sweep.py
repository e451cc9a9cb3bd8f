"""Sweep plans and grids: what may be swept, how values and seeds are read, at most 16 cells, a labelled grid."""

import numpy as np
import pytest
from PIL import Image

from pipelines.params import sweepable
from pipelines.sweep import MAX_CELLS, plan_sweep, sweep_grid


def test_a_plan_is_columns_of_values_and_rows_of_seeds_each_cell_one_image():
    plan = plan_sweep("txt2img", "guidance_scale", "3, 7.5 12", "1,2", default_seed=9)
    assert plan.values == (3.0, 7.5, 12.0) and plan.seeds == (1, 2)
    cells = plan.cells()
    assert len(cells) == 6 and cells[0] == {"guidance_scale": 3.0, "seed": 1, "batch_size": 1}
    assert cells[4] == {"guidance_scale": 7.5, "seed": 2, "batch_size": 1}  # row by row
    assert plan_sweep("txt2img", "steps", "10 20", "", default_seed=9).seeds == (9,)
    assert plan_sweep("txt2img", "steps", "10 20", "", default_seed=9).values == (10, 20)
    # A choice sweeps by its names, comma-separated (a name may hold spaces).
    assert plan_sweep("clip_guided", "clip_method", "cutouts, data set", "", 9).values == ("cutouts", "data set")


@pytest.mark.parametrize(
    "tab, parameter, values, seeds, message",
    [
        ("png_info", "steps", "1", "", "tab 'png_info' is not one of"),
        ("txt2img", "mask_blur", "4", "", "parameter 'mask_blur' cannot be swept in txt2img"),
        ("txt2img", "guidance_scale", "", "", "values is empty"),
        ("txt2img", "guidance_scale", "1, lots", "", "values: 'lots' is not a number"),
        ("txt2img", "guidance_scale", "1, nan", "", "values: 'nan' is not a finite number"),
        ("txt2img", "steps", "10, 12.5", "", "values: '12.5' is not a whole number"),
        ("txt2img", "guidance_scale", "1", "3, x", "seeds: 'x' is not a number"),
        ("txt2img", "guidance_scale", "1 2 3 4 5", "1 2 3 4", f"at most {MAX_CELLS} cells, got 5 values x 4 seeds"),
        ("clip_guided", "clip_method", "cutouts, nearest", "", "values: 'nearest' is not one of auto, data set"),
        ("clip_guided", "clip_method", " , ", "", "values is empty: give the values to compare, like auto, data"),
    ],
)
def test_a_bad_sweep_is_a_named_error(tab, parameter, values, seeds, message):
    with pytest.raises(ValueError, match=message):
        plan_sweep(tab, parameter, values, seeds, default_seed=0)


def test_every_tab_with_a_strength_sweeps_it():
    assert "color_scale" in sweepable("color_guided") and "clip_scale" in sweepable("clip_guided")
    assert all("guidance_scale" in sweepable(tab) for tab in ("txt2img", "img2img", "inpaint"))
    assert all("strength" in sweepable(tab) for tab in ("img2img", "inpaint"))


def test_the_grid_holds_every_cell_enlarged_under_its_labels():
    plan = plan_sweep("color_guided", "color_scale", "0, 1, 2", "5, 6", default_seed=0)
    colors = [(40 * index, 200, 255 - 40 * index) for index in range(6)]
    cells = [Image.new("RGB", (32, 32), color) for color in colors]
    grid = np.asarray(sweep_grid(cells, plan, "Color-guided: color_scale sweep"))
    margin, label = 96, 28  # seed labels on the left, title and values on top; 32 px cells drawn at 128 px
    assert grid.shape == (2 * label + 2 * 128, margin + 3 * 128, 3)
    for index, color in enumerate(colors):
        row, column = divmod(index, 3)
        top, left = 2 * label + row * 128, margin + column * 128
        assert (grid[top : top + 128, left : left + 128] == color).all()
    assert (grid[:label] < 128).any() and (grid[label : 2 * label, margin:] < 128).any()  # title and value labels
    assert (grid[2 * label :, :margin] < 128).any()  # seed labels
