"""Every complete job file in the manual's Recipes page (docs/recipes.md) loads and plans."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from apilake.jobfile import load_job
from apilake.plan import plan

RECIPES_PAGE = Path(__file__).resolve().parents[1] / "docs" / "recipes.md"
SECTION = RECIPES_PAGE.read_text()
JOBS = re.findall(r"```yaml\n(.*?)```", SECTION, re.S)


def test_the_recipes_are_there() -> None:
    assert len(JOBS) == 6


@pytest.mark.parametrize("text", JOBS)
def test_each_recipe_loads_and_plans(tmp_path: Path, text: str) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    environ = {name: "x-" + name.lower() for name in re.findall(r"\$\{(\w+)\}", text)}
    job = load_job(path, environ=environ)
    assert plan(job, [dt.date(2026, 11, 25)])
