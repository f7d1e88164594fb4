"""The results page and the committed records agree: every ``table*.md`` in docs/records is
what ``grid.py table`` rebuilds from that record today, and each record's main table is on
docs/results.md word for word, so no figure on the page is typed by hand or left stale."""

import re
import sys
from pathlib import Path

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))

from comparison import report  # noqa: E402
from comparison import table as tables  # noqa: E402
from comparison.grid import load_grid  # noqa: E402

RECORDS = REPO / "docs" / "records"
RESULTS_PAGE = REPO / "docs" / "results.md"
# table.md, table.chrf.md, table.against_mixer_id.md, table.chrf.against_mixer_id.md
TABLE_FILE = re.compile(r"table(?:\.(?P<metric>[a-z0-9]+))?(?:\.against_(?P<against>\w+))?\.md")
COMMITTED_TABLES = sorted(RECORDS.glob("*/table*.md"))


def first_markdown_table(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]


def test_the_records_have_tables():
    assert COMMITTED_TABLES, f"no table*.md under {RECORDS}"


@pytest.mark.parametrize("path", COMMITTED_TABLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_committed_table_is_what_its_record_rebuilds(path: Path):
    name = TABLE_FILE.fullmatch(path.name)
    assert name, f"{path}: not a name grid.py table writes"
    grid_file = REPO / "scripts" / "grids" / f"{path.parent.name}.json"
    grid = load_grid(grid_file, path.parent)
    built = tables.build(grid, metric=name["metric"], against=name["against"])
    assert report.markdown(built) == path.read_text(encoding="utf-8"), (
        f"{path} is stale: rebuild it with scripts/grid.py table {grid_file.relative_to(REPO)} "
        f"--workdir {path.parent.relative_to(REPO)} (see docs/results.md)"
    )


@pytest.mark.parametrize(
    "path", [p for p in COMMITTED_TABLES if p.name == "table.md"], ids=lambda p: p.parent.name
)
def test_the_results_page_shows_each_records_main_table(path: Path):
    page = RESULTS_PAGE.read_text(encoding="utf-8")
    rows = first_markdown_table(path.read_text(encoding="utf-8"))
    missing = [row for row in rows if row not in page]
    assert not missing, f"{RESULTS_PAGE.name} lacks these rows of {path}: {missing}"
