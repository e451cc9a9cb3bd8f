"""The tab registry (pipelines.tabs) is the one list of tabs: the page, the endpoints, sweeps and the batch command
cover exactly its tabs, and each tab's family builds, checks and runs that tab's requests."""

import dataclasses

from pipelines import stable_diffusion as sd
from pipelines import unconditional as uncond
from pipelines.params import KEYWORDS
from pipelines.tabs import LABELS, PIXEL_TABS, SD_TABS, TABS, family, is_sd


def test_every_list_of_tabs_is_the_registrys():
    import app
    from ui.handlers import HANDLERS

    assert tuple(app.TABS) == tuple(HANDLERS) == tuple(KEYWORDS) == tuple(LABELS) == TABS == PIXEL_TABS + SD_TABS


def test_each_family_builds_its_tabs_requests():
    for tab in TABS:
        runs = family(tab)
        request = runs.request(tab, {"model": None} if is_sd(tab) else {"model": "m"})
        assert isinstance(request, runs.request_type)
        if is_sd(tab):
            assert request.task == tab and runs.validate is sd.validate and runs.generate_steps is sd.generate_steps
        else:
            assert "task" not in {field.name for field in dataclasses.fields(request)}
            assert runs.validate is uncond.validate and runs.generate is uncond.generate
