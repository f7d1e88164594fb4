"""scripts/grid.py run --record: a grid spread over sessions on fresh machines (the work dir
lost between them, the record kept). Fake trainings and evaluations (FakeRuns), no fairseq;
tests/test_grid.py takes the tiny grid through it with fairseq."""

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from test_grid import sentences, tiny_grid
from test_grid_record import fake_work, load_grid_script, write_log

sys.path.insert(0, str(REPO / "scripts"))

from comparison import record, resume, runner  # noqa: E402
from comparison import table as tables  # noqa: E402
from comparison.grid import BIN, all_cells, load_grid, portable  # noqa: E402


def score_of(parts: list[str]) -> float:
    """A score that follows from a command's settings, not from its paths."""
    key = " ".join(part for part in parts if not part.startswith("/"))
    return 10 + int(hashlib.sha256(key.encode()).hexdigest()[:6], 16) % 2000 / 100


def option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


class FakeRuns:
    """fairseq-train and evaluate.py as the runner calls them (runner.run_streaming), at no
    cost and reproducibly; ``drift`` is added to the start's test scores. Each training notes
    the cells the record has finished when it begins."""

    def __init__(self, references: list[str], base: Path, record_root: Path):
        self.references, self.base, self.record_root = references, base, record_root
        self.drift = 0.0
        self.trained: list[tuple[str, list[str]]] = []
        self.evaluated: list[str] = []

    def __call__(self, command: list[str], log: Path) -> None:
        if Path(command[0]).name == "fairseq-train":
            self.train(command, log)
        else:
            self.evaluate(command)

    def train(self, command: list[str], log: Path) -> None:
        checkpoints = Path(option(command, "--save-dir"))
        checkpoints.mkdir(parents=True, exist_ok=True)
        (checkpoints / "checkpoint_best.pt").write_bytes(b"weights")
        write_log(log.parent, "bleu", score_of(command))
        cell = Path(*log.parent.relative_to(self.base).parts[1:]).as_posix()
        self.trained.append((cell, sorted(recorded(self.record_root))))

    def evaluate(self, command: list[str]) -> None:
        name, subset = option(command, "--name"), option(command, "--gen-subset")
        self.evaluated.append(name)
        beams = command[command.index("--beams") + 1 : command.index("--gen-subset")]
        rows = []
        for beam in beams:
            bleu = score_of([name, subset, beam]) + (self.drift if name == "start" else 0)
            rng = np.random.default_rng(int(bleu * 100))
            hyps = [" ".join(w if rng.random() < 0.6 else "x" for w in r.split())
                    for r in self.references]  # fmt: skip
            path = Path(option(command, "--save-hypotheses")) / f"{subset}.beam{beam}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(h + "\n" for h in hyps))
            rows.append(
                {"name": name, "checkpoint": option(command, "--checkpoint"),
                 "data": option(command, "--data"), "gen_subset": subset, "beam": int(beam),
                 "metric": "bleu", "references": option(command, "--reference-text"),
                 "text": None, "bleu": bleu, "sentences": len(hyps),
                 "sentences_per_s": 100.0, "hypotheses": str(path)}
            )  # fmt: skip
        Path(option(command, "--out-json")).write_text("".join(json.dumps(r) + "\n" for r in rows))


def recorded(root: Path) -> set[str]:
    """The folders of the cells that have a finished training in the record."""
    return {p.parent.parent.relative_to(root).as_posix() for p in root.glob("**/.done/train.json")}


@pytest.fixture
def sessions(tmp_path, monkeypatch):
    """A grid, its record folder, and a function that runs one session (a fresh work dir)."""
    data = tmp_path / "data"
    (data / "bin").mkdir(parents=True)
    references, _, _ = sentences(4, count=20)
    (data / "text").mkdir()
    (data / "text" / "test.tgt").write_text("".join(r + "\n" for r in references))
    spec = tiny_grid(data)
    spec["evaluate"]["beams"] = [1, 5]
    grid_path = tmp_path / "tiny.json"
    grid_path.write_text(json.dumps(spec))
    rec = tmp_path / "record"
    fake = FakeRuns(references, tmp_path, rec)
    monkeypatch.setattr(runner, "run_streaming", fake)

    def session(work: str, *options: str) -> None:
        args = ["run", str(grid_path), "--workdir", str(tmp_path / work), "--cpu", *options]
        load_grid_script().main(args)

    return grid_path, rec, fake, session


def table_of(grid_path: Path, folder: Path, metric: str | None = None) -> dict:
    return {**tables.build(load_grid(grid_path, folder), 30, metric), "workdir": None}


def test_sessions_on_fresh_machines_take_up_the_record_and_give_one_runs_table(
    sessions, tmp_path, capsys
):
    grid_path, rec, fake, session = sessions
    session("one", "--record", str(rec), "--only", "start,tune")
    assert fake.trained == [
        ("start", []), ("tune/dad/linear", ["start"]),
        ("tune/dad/isig", ["start", "tune/dad/linear"]),
    ]  # fmt: skip
    assert json.loads((rec / "tune" / "dad" / "choice.json").read_text())["scores"]
    shutil.rmtree(tmp_path / "one")
    capsys.readouterr()

    fake.trained.clear()
    session("two", "--record", str(rec), "--only", "start,xent_more")
    printed = capsys.readouterr().out
    assert "start: reproduces the record's test scores exactly" in printed
    assert [cell for cell, _ in fake.trained] == [
        "start", "runs/xent_more/seed1", "runs/xent_more/seed2"
    ]  # fmt: skip
    shutil.rmtree(tmp_path / "two")

    fake.trained.clear()
    session("three", "--record", str(rec))
    assert [cell for cell, _ in fake.trained] == ["start", "runs/dad/seed1", "runs/dad/seed2"]
    assert fake.trained[-1][1] == sorted(
        ["start", "tune/dad/linear", "tune/dad/isig", "runs/xent_more/seed1",
         "runs/xent_more/seed2", "runs/dad/seed1"]
    )  # fmt: skip
    three = load_grid(grid_path, tmp_path / "three")
    rows = [json.loads(line) for line in (three.workdir / "runs/xent_more/seed1/results.jsonl")
            .read_text().splitlines()]  # fmt: skip
    assert all("statistics" in row and "hypotheses" not in row for row in rows)
    assert rows[0]["checkpoint"] == str(three.workdir / "runs/xent_more/seed1/checkpoints"
                                        / "checkpoint_best.pt")  # fmt: skip

    session("whole")
    assert table_of(grid_path, tmp_path / "three") == table_of(grid_path, tmp_path / "whole")
    assert table_of(grid_path, rec) == table_of(grid_path, tmp_path / "whole")
    fake.trained.clear()
    session("four", "--record", str(rec))
    assert fake.trained == [] and "every cell asked for is done" in capsys.readouterr().out
    assert table_of(grid_path, tmp_path / "four") == table_of(grid_path, rec)


def test_a_start_that_does_not_reproduce_stops_and_leaves_the_record(sessions, tmp_path):
    grid_path, rec, fake, session = sessions
    session("one", "--record", str(rec), "--only", "start,tune")
    before = {p: p.read_bytes() for p in rec.rglob("*") if p.is_file()}
    first = json.loads((rec / "start" / "results.jsonl").read_text().splitlines()[0])["bleu"]

    fake.drift, fake.trained = 0.25, []
    for _ in range(2):
        with pytest.raises(SystemExit) as stop:
            session("two", "--record", str(rec))
        assert "does not reproduce the record's: test beam 1 BLEU " in str(stop.value)
        assert f"{first + 0.25!r} here, {first!r} in {rec}" in str(stop.value)
    assert fake.trained == [("start", ["start", "tune/dad/isig", "tune/dad/linear"])]  # once
    assert {p: p.read_bytes() for p in rec.rglob("*") if p.is_file()} == before


def test_seeding_takes_finished_cells_and_keeps_the_work_dirs_own(tmp_path):
    grid_path, work, _ = fake_work(tmp_path, "bleu")
    rec = tmp_path / "record"
    record.export(load_grid(grid_path, work), rec)
    (rec / ".done").mkdir()
    (rec / ".done" / "data.json").write_text("{}")
    mixed = tmp_path / "mixed"
    shutil.copytree(work, mixed)
    for cell in ("runs/dad/seed2", "tune/dad/isig", "tune/dad/choice.json"):
        path = mixed / cell
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    own = (mixed / "runs/xent_more/seed1/.done/train.json").read_text()
    (rec / "runs/xent_more/seed1/.done/train.json").write_text("{}")
    grid = load_grid(grid_path, mixed)

    taken = resume.seed(grid, rec)
    assert taken == ["tune:dad:isig", "dad:seed2"]
    assert (mixed / "runs/xent_more/seed1/.done/train.json").read_text() == own
    assert not (mixed / ".done").exists()  # no data here
    assert (mixed / "tune/dad/choice.json").exists()
    assert table_of(grid_path, mixed) == table_of(grid_path, work)

    again = tmp_path / "again"
    record.export(grid, again)
    assert table_of(grid_path, again) == table_of(grid_path, work)
    assert (again / "runs/dad/seed2/stats/test.beam5.chrf.json.gz").exists()
    assert table_of(grid_path, again, "chrf") == table_of(grid_path, work, "chrf")

    fresh = load_grid(grid_path, tmp_path / "fresh")
    grid.bin.mkdir(parents=True)
    assert resume.seed(fresh, rec)[0] == "tune:dad:linear"
    assert (fresh.workdir / ".done" / "data.json").exists()
    assert [c.name for c in runner.unfinished(fresh)] == ["xent_more:seed3", "dad:seed3"]
    assert not (fresh.workdir / "start").exists()  # cells left need its checkpoint
    assert not (fresh.workdir / "runs/dad/seed3").exists()  # trained, not scored: run again


def test_a_record_of_another_grid_is_refused(sessions, tmp_path):
    grid_path, rec, _, session = sessions
    session("one", "--record", str(rec), "--only", "start")
    other = tmp_path / "other.json"
    shutil.copyfile(grid_path, other)
    with pytest.raises(SystemExit, match=f"is the record of {grid_path}, not of {other}"):
        load_grid_script().main(["run", str(other), "--workdir", str(tmp_path / "w"),
                                 "--record", str(rec)])  # fmt: skip
    assert [c.name for c in all_cells(load_grid(grid_path, rec))][0] == "start"


def test_markers_name_the_work_dir_the_venv_and_the_repository_by_placeholders(tmp_path):
    work = REPO / "work" / "x"
    command = [
        str(BIN / "fairseq-train"), str(work / "data" / "bin"), "--user-dir",
        str(REPO / "fairseq_mixer"), "--save-dir", str(work / "start"), "--cpu", str(tmp_path),
    ]  # fmt: skip
    kept = portable([command], work)
    assert kept == [
        [
            "{bin}/fairseq-train",
            "{workdir}/data/bin",
            "--user-dir",
            "{repo}/fairseq_mixer",
            "--save-dir",
            "{workdir}/start",
            str(tmp_path),
        ]
    ]
    assert portable(kept, work) == kept
