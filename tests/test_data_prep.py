"""The data preparation scripts, run whole on small real data and on miniature inputs."""

from __future__ import annotations

import gzip
import io
import logging
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from data_prep import common, prepare_gigaword, prepare_iwslt14, prepare_multi30k
from data_prep.synthetic import generate_pairs

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MULTI30K_DIR = SHARED_DATA / "multi30k"
GIGAWORD_DIR = SHARED_DATA / "gigaword_sample"
UNREACHABLE = "http://127.0.0.1:9/"
MULTI30K_STEMS = ("train", "val", "test_2016_flickr", "test_2017_flickr")


def line_count(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").split("\n")) - 1


def binarised_sizes(bin_dir: Path, split: str, langs: tuple[str, str]) -> list[int]:
    from fairseq.data import Dictionary, data_utils

    pair = "-".join(langs)
    sizes = []
    for lang in langs:
        dictionary = Dictionary.load(str(bin_dir / f"dict.{lang}.txt"))
        dataset = data_utils.load_indexed_dataset(
            str(bin_dir / f"{split}.{pair}.{lang}"), dictionary
        )
        assert dataset is not None, f"cannot load {split}.{pair}.{lang}"
        sizes.append(len(dataset))
    return sizes


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def assert_nothing_half_written(dest: Path) -> None:
    leftovers = list(dest.rglob("*")) if dest.exists() else []
    assert leftovers == [], f"left in {dest}: {leftovers}"


def run_failing(
    main: Callable[[list[str]], int], argv: list[str], capsys: pytest.CaptureFixture[str]
) -> str:
    assert main(argv) == 1
    return capsys.readouterr().err


# ---------------------------------------------------------------------------- command line


@pytest.mark.parametrize(
    "module", ["synthetic", "prepare_multi30k", "prepare_gigaword", "prepare_iwslt14"]
)
def test_help(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", f"data_prep.{module}", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert "--dest" in result.stdout and "--workers" in result.stdout


def test_error_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable, "-m", "data_prep.prepare_gigaword",
            "--input-dir", str(tmp_path / "absent"), "--dest", str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "missing input file" in result.stderr and "train.article" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------- multi30k


@pytest.fixture(scope="module")
def multi30k_dest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not MULTI30K_DIR.is_dir():
        pytest.skip(f"Multi30k raw files not found at {MULTI30K_DIR}")
    dest = tmp_path_factory.mktemp("multi30k") / "data"
    argv = ["--raw-dir", str(MULTI30K_DIR), "--dest", str(dest), "--limit-train", "500"]
    assert prepare_multi30k.main(argv) == 0
    return dest


def test_multi30k_word_level(multi30k_dest: Path) -> None:
    text_dir, bin_dir = multi30k_dest / "text", multi30k_dest / "bin"
    expected = {"train": 500, "valid": 1014, "test": 1000, "test1": 1000}
    for split, count in expected.items():
        assert line_count(text_dir / f"{split}.de") == count
        assert line_count(text_dir / f"{split}.en") == count
        assert binarised_sizes(bin_dir, split, ("de", "en")) == [count, count]
    first = (text_dir / "train.de").read_text(encoding="utf-8").split("\n")[0]
    assert first == "Zwei junge weiße Männer sind im Freien in der Nähe vieler Büsche ."
    assert not (multi30k_dest / "subword").exists()


def test_multi30k_rerun_reuses_and_keeps_files(
    multi30k_dest: Path, caplog: pytest.LogCaptureFixture
) -> None:
    before = file_bytes(multi30k_dest)
    argv = ["--raw-dir", str(MULTI30K_DIR), "--dest", str(multi30k_dest), "--limit-train", "500"]
    with caplog.at_level(logging.INFO, logger="data_prep"):
        assert prepare_multi30k.main(argv) == 0
    assert "step text: reusing" in caplog.text and "step bin: reusing" in caplog.text
    assert file_bytes(multi30k_dest) == before


def test_multi30k_sentencepiece_reuses_the_tokenised_text(
    multi30k_dest: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dest = tmp_path / "data"
    shutil.copytree(multi30k_dest, dest)
    argv = [
        "--raw-dir", str(MULTI30K_DIR), "--dest", str(dest), "--limit-train", "500",
        "--sentencepiece", "400", "--joined-dictionary",
    ]  # fmt: skip
    with caplog.at_level(logging.INFO, logger="data_prep"):
        assert prepare_multi30k.main(argv) == 0
    assert "step text: reusing" in caplog.text and "step bin: building" in caplog.text
    text, subwords = dest / "text" / "test.en", dest / "subword" / "test.en"
    ratio = common.pieces_per_word(common.read_lines(text), common.read_lines(subwords))
    assert ratio > 1.0 and f"test.en: encoded with sentencepiece, {ratio:.2f} pieces a word" in (
        caplog.text
    )
    assert (dest / "subword" / "spm.model").is_file()
    dictionary = (dest / "bin" / "dict.de.txt").read_text(encoding="utf-8")
    assert "\u2581" in dictionary
    assert dictionary == (dest / "bin" / "dict.en.txt").read_text(encoding="utf-8")
    assert binarised_sizes(dest / "bin", "test1", ("de", "en")) == [1000, 1000]
    assert (dest / "text" / "test.en").read_bytes() == (
        multi30k_dest / "text" / "test.en"
    ).read_bytes()


# ---------------------------------------------------------------------------- multi30k errors


def write_gzip(path: Path, lines: list[str]) -> None:
    path.write_bytes(gzip.compress("".join(line + "\n" for line in lines).encode("utf-8")))


@pytest.fixture
def tiny_raw_dir(tmp_path: Path) -> Path:
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    for stem in MULTI30K_STEMS:
        write_gzip(raw_dir / f"{stem}.de.gz", ["Ein Hund läuft.", "Zwei Katzen schlafen."])
        write_gzip(raw_dir / f"{stem}.en.gz", ["A dog runs.", "Two cats sleep."])
    return raw_dir


def test_missing_file_is_named(
    tiny_raw_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tiny_raw_dir / "val.en.gz").unlink()
    dest = tmp_path / "out"
    error = run_failing(
        prepare_multi30k.main, ["--raw-dir", str(tiny_raw_dir), "--dest", str(dest)], capsys
    )
    assert "missing input file" in error and "val.en.gz" in error
    assert_nothing_half_written(dest)


def test_truncated_gzip_is_an_error(
    tiny_raw_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    damaged = tiny_raw_dir / "test_2016_flickr.de.gz"
    write_gzip(damaged, [f"Satz Nummer {i} ." for i in range(2000)])
    damaged.write_bytes(damaged.read_bytes()[:-40])
    dest = tmp_path / "out"
    error = run_failing(
        prepare_multi30k.main, ["--raw-dir", str(tiny_raw_dir), "--dest", str(dest)], capsys
    )
    assert "test_2016_flickr.de.gz" in error and "truncated" in error
    assert_nothing_half_written(dest)


def test_mismatched_line_counts_are_an_error(
    tiny_raw_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_gzip(tiny_raw_dir / "train.en.gz", ["A dog runs.", "Two cats sleep.", "One more."])
    dest = tmp_path / "out"
    error = run_failing(
        prepare_multi30k.main, ["--raw-dir", str(tiny_raw_dir), "--dest", str(dest)], capsys
    )
    assert "mismatched line counts" in error
    assert "train.de.gz has 2 lines" in error and "train.en.gz has 3" in error
    assert_nothing_half_written(dest)


def test_multi30k_download_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "out"
    error = run_failing(
        prepare_multi30k.main, ["--url-base", UNREACHABLE, "--dest", str(dest)], capsys
    )
    assert "download failed" in error and UNREACHABLE in error
    assert_nothing_half_written(dest)


def test_empty_pairs_are_dropped_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    split = common.ParallelSplit("valid", ["a b", "", "c", "d"], ["x", "y", "", "z"])
    with caplog.at_level(logging.INFO, logger="data_prep"):
        kept = common.drop_empty_pairs(split)
    assert (kept.source, kept.target) == (["a b", "d"], ["x", "z"])
    assert "valid: dropped 2 pairs with an empty side" in caplog.text


def test_pieces_per_word_counts_whitespace_pieces_over_words() -> None:
    words = ["a dog runs .", "sleeping"]
    pieces = ["\u2581a \u2581dog \u2581run s \u2581.", "\u2581sleep ing"]
    assert common.pieces_per_word(words, pieces) == 7 / 5
    assert common.pieces_per_word([], []) == 0.0


def test_tokenising_in_several_processes_gives_the_same_lines() -> None:
    lines = [f'Line {i}: it\'s "quoted" & done.' for i in range(2 * common.LINES_PER_CHUNK)]
    single = common.moses_tokenize(lines, "en", lowercase=True, workers=1)
    assert single[7] == 'line 7 : it \'s " quoted " & done .'
    assert common.moses_tokenize(lines, "en", lowercase=True, workers=2) == single


# ---------------------------------------------------------------------------- gigaword


def test_gigaword_subsample_and_joined_dictionary(tmp_path: Path) -> None:
    if not GIGAWORD_DIR.is_dir():
        pytest.skip(f"Gigaword sample not found at {GIGAWORD_DIR}")
    dest = tmp_path / "giga"
    argv = [
        "--input-dir", str(GIGAWORD_DIR), "--dest", str(dest), "--subsample", "300",
        "--max-article-len", "40", "--max-title-len", "15", "--joined-dictionary",
    ]  # fmt: skip
    assert prepare_gigaword.main(argv) == 0
    text_dir, bin_dir = dest / "text", dest / "bin"
    assert line_count(text_dir / "train.article") == 300
    assert line_count(text_dir / "test.title") == 500
    articles = (text_dir / "valid.article").read_text(encoding="utf-8").splitlines()
    assert 0 < len(articles) <= 500 and max(len(line.split()) for line in articles) <= 40
    titles = (text_dir / "train.title").read_text(encoding="utf-8").splitlines()
    assert max(len(line.split()) for line in titles) <= 15
    assert (bin_dir / "dict.article.txt").read_bytes() == (bin_dir / "dict.title.txt").read_bytes()
    assert binarised_sizes(bin_dir, "train", ("article", "title")) == [300, 300]


def test_gigaword_subsample_is_deterministic_and_ordered() -> None:
    split = common.ParallelSplit(
        "train", [str(i) for i in range(100)], [str(i) for i in range(100)]
    )
    first = prepare_gigaword.subsample(split, 10, seed=3)
    assert first == prepare_gigaword.subsample(split, 10, seed=3)
    assert [int(line) for line in first.source] == sorted(int(line) for line in first.source)
    assert first.source == first.target


# ---------------------------------------------------------------------------- iwslt14

TALK_HEADER = (
    "<url>http://www.ted.com/talks/talk_{n}.html</url>",
    "<keywords>talks, science</keywords>",
    "<speaker>Speaker {n}</speaker>",
    "<talkid>{n}</talkid>",
    "<title>Title Word{n}</title>",
    "<description>TED Talk Subtitles and Transcript: about{n}</description>",
    "<reviewer></reviewer>",
    "<translator></translator>",
)
TEST_SETS = (
    "IWSLT14.TED.dev2010", "IWSLT14.TED.tst2010", "IWSLT14.TED.tst2011",
    "IWSLT14.TED.tst2012", "IWSLT14.TEDX.dev2012",
)  # fmt: skip
LONG_LINE_WORDS = 60


def miniature_training_sides() -> tuple[list[str], list[str]]:
    """Four talks of synthetic sentences (English side capitalised) plus two 60-word lines."""
    pairs = generate_pairs(320, seed=9)
    german: list[str] = []
    english: list[str] = []
    for talk in range(4):
        german += [line.format(n=talk) for line in TALK_HEADER]
        english += [line.format(n=talk) for line in TALK_HEADER]
        for source, target in pairs[talk * 80 : (talk + 1) * 80]:
            german.append(target + " .")
            english.append(source.capitalize() + ".")
    german += [" ".join(["wort"] * LONG_LINE_WORDS)] * 2
    english += [" ".join(["word"] * LONG_LINE_WORDS)] * 2
    return german, english


def xml_document(lines: list[str], lang: str) -> str:
    opening = (
        '<srcset setid="iwslt" srclang="german">'
        if lang == "de"
        else ('<refset setid="iwslt" trglang="english">')
    )
    segments = [f'<seg id="{i + 1}"> {line} </seg>' for i, line in enumerate(lines)]
    body = ['<?xml version="1.0" encoding="UTF-8"?>', "<mteval>", opening,
            '<doc docid="1" genre="lectures">', "<url>http://www.ted.com/x</url>",
            "<talkid>1</talkid>", "<title>A Title</title>", *segments, "</doc>",
            "</srcset>" if lang == "de" else "</refset>", "</mteval>"]  # fmt: skip
    return "\n".join(body) + "\n"


def add_member(archive: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode("utf-8")
    info = tarfile.TarInfo(f"de-en/{name}")
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def iwslt_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("iwslt") / "de-en.tgz"
    german, english = miniature_training_sides()
    test_pairs = generate_pairs(60, seed=99)
    with tarfile.open(path, "w:gz") as archive:
        add_member(archive, "train.tags.de-en.de", "\n".join(german) + "\n")
        add_member(archive, "train.tags.de-en.en", "\n".join(english) + "\n")
        for index, test_set in enumerate(TEST_SETS):
            chosen = test_pairs[index * 10 : (index + 1) * 10]
            english_side = [source.capitalize() + " it\u2019s" for source, _ in chosen]
            german_side = [target for _, target in chosen]
            if index == 0:
                german_side[3] = ""
            add_member(archive, f"{test_set}.de-en.de.xml", xml_document(german_side, "de"))
            add_member(archive, f"{test_set}.de-en.en.xml", xml_document(english_side, "en"))
    return path


def run_iwslt(archive: Path, dest: Path, *options: str) -> None:
    argv = ["--archive", str(archive), "--dest", str(dest), *options]
    assert prepare_iwslt14.main(argv) == 0


def read_text(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_iwslt_release_recipe(iwslt_archive: Path, tmp_path: Path) -> None:
    dest = tmp_path / "release"
    run_iwslt(iwslt_archive, dest, "--recipe", "release")
    text_dir, bin_dir = dest / "text", dest / "bin"
    train_en, valid_en = read_text(text_dir / "train.en"), read_text(text_dir / "valid.en")
    kept = len(train_en) + len(valid_en)
    assert len(valid_en) == kept // 23
    every_side = train_en + valid_en + read_text(text_dir / "train.de")
    assert all(1 <= len(line.split()) <= 50 for line in every_side)
    assert all(line == line.lower() for line in every_side)
    assert not any("http" in line or "speaker" in line or "<" in line for line in every_side)
    assert any("word0" in line for line in every_side), "title text is kept by default"
    test_en = read_text(text_dir / "test.en")
    assert len(test_en) == 49, "one of 50 test pairs has an empty German side"
    assert all(line.endswith("it 's") for line in test_en)
    assert not (dest / "subword").exists()
    entries = [line.split() for line in read_text(bin_dir / "dict.en.txt")]
    counts = [int(count) for word, count in entries if not word.startswith("madeupword")]
    assert counts and min(counts) >= 3
    assert binarised_sizes(bin_dir, "test", ("de", "en")) == [49, 49]


def test_iwslt_fairseq_recipe(iwslt_archive: Path, tmp_path: Path) -> None:
    dest = tmp_path / "fairseq"
    run_iwslt(
        iwslt_archive, dest, "--recipe", "fairseq", "--sentencepiece", "120", "--titles", "drop"
    )
    text_dir = dest / "text"
    train_de = read_text(text_dir / "train.de") + read_text(text_dir / "valid.de")
    assert sum(len(line.split()) == LONG_LINE_WORDS for line in train_de) == 2
    assert not any("word0" in line for line in read_text(text_dir / "train.en"))
    assert (dest / "subword" / "spm.model").is_file()
    assert "\u2581" in (dest / "bin" / "dict.en.txt").read_text(encoding="utf-8")
    valid_count = len(read_text(text_dir / "valid.en"))
    assert binarised_sizes(dest / "bin", "valid", ("de", "en")) == [valid_count, valid_count]


def test_iwslt_truncated_archive(
    iwslt_archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    truncated = tmp_path / "de-en.tgz"
    truncated.write_bytes(iwslt_archive.read_bytes()[:-300])
    dest = tmp_path / "out"
    error = run_failing(
        prepare_iwslt14.main, ["--archive", str(truncated), "--dest", str(dest)], capsys
    )
    assert "cannot read archive" in error and str(truncated) in error
    assert_nothing_half_written(dest)


def test_iwslt_download_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "out"
    url = UNREACHABLE + "de-en.tgz"
    error = run_failing(prepare_iwslt14.main, ["--url", url, "--dest", str(dest)], capsys)
    assert "download failed" in error and url in error
    assert_nothing_half_written(dest)
