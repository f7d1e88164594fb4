"""scripts/evaluate.py, scripts/plot.py and scripts/run_recipe.py: their parsing, scoring,
plotting and step-skipping logic, and one end-to-end run of the tiny recipe."""

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu
from conftest import REPO

SCRIPTS = REPO / "scripts"
sys.path.insert(0, str(SCRIPTS))  # run_recipe imports recipe_overrides beside it


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


evaluate = load_script("evaluate")
plot = load_script("plot")
run_recipe = load_script("run_recipe")
recipe_overrides = sys.modules["recipe_overrides"]

# What fairseq-generate prints (stdout, then its log on stderr), sentences out of id order.
GENERATE_OUTPUT = """\
S-2\tein hund läuft .
T-2\ta dog runs .
H-2\t-0.31\ta dog is running .
D-2\t-0.31\ta dog is running .
P-2\t-0.1 -0.2 -0.3 -0.4 -0.5 -0.6
S-0\tzwei männer .
T-0\ttwo <<unk>> .
H-0\t-0.52\ttwo men .
D-0\t-0.52\ttwo men .
P-0\t-0.1 -0.2 -0.3 -0.4
S-1\tleer
T-1\tnothing here
H-1\t-1.2\t
D-1\t-1.2\t
P-1\t-0.1
Generate test with beam=5: BLEU4 = 10.00, 50.0/20.0/10.0/5.0 (BP=1.000, ratio=1.0)
INFO:fairseq_cli.generate:NOTE: hypothesis and token scores are output in base 2
INFO:fairseq_cli.generate:Translated 3 sentences (12 tokens) in 0.1s (25.61 sentences/s, \
102.44 tokens/s)
"""
REFERENCES = ["two men stand .", "nothing here", "a dog is running ."]


# ---------------------------------------------------------------------- evaluate.py


def test_generate_output_is_put_back_in_sentence_id_order():
    generation = evaluate.parse_generate_output(GENERATE_OUTPUT)
    assert generation.hypotheses == ["two men .", "", "a dog is running ."]
    assert generation.references == ["two <<unk>> .", "nothing here", "a dog runs ."]
    assert (generation.sentences, generation.tokens) == (3, 12)
    assert generation.sentences_per_s == pytest.approx(25.61)


def test_speed_line_with_thousands_separators():
    lines = [f"H-{i}\t-1.0\tword" for i in range(1234)]
    speed = "Translated 1,234 sentences (5,678 tokens) in 2.5s (493.60 sentences/s, 9.0 tokens/s)"
    generation = evaluate.parse_generate_output("\n".join([*lines, speed]))
    assert (generation.sentences, generation.tokens) == (1234, 5678)


@pytest.mark.parametrize(
    "output, message",
    [
        (GENERATE_OUTPUT.replace("H-2\t-0.31\ta dog is running .\n", ""), "printed 2 H- lines"),
        (GENERATE_OUTPUT.replace("H-0", "H-7"), "miss sentence ids [0]"),
        (GENERATE_OUTPUT.replace("Translated", "Done"), "no 'Translated N sentences'"),
    ],
)
def test_incomplete_generate_output_is_an_error(output, message):
    with pytest.raises(evaluate.EvaluationError, match=message.replace("[", r"\[")):
        evaluate.parse_generate_output(output)


def test_bleu_is_sacrebleu_with_13a_on_the_restored_order():
    hypotheses = evaluate.parse_generate_output(GENERATE_OUTPUT).hypotheses
    scores = evaluate.score("bleu", hypotheses, REFERENCES, "13a")
    expected = sacrebleu.corpus_bleu(hypotheses, [REFERENCES])
    assert scores["bleu"] == pytest.approx(expected.score)
    assert scores["bleu"] > 0
    assert "tok:13a" in scores["signature"] and "nrefs:1" in scores["signature"]


def test_rouge_keeps_tokenised_text_and_averages_sentences():
    scores = evaluate.score("rouge", ["a b c", ", ."], ["a b d", ", ."], "13a")
    # sentence 1: unigram F 2/3, bigram F 1/2, LCS F 2/3; sentence 2 (punctuation only): 1.
    assert scores["rouge1"] == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert scores["rouge2"] == pytest.approx(100 * (1 / 2 + 1) / 2)
    assert scores["rougeL"] == pytest.approx(100 * (2 / 3 + 1) / 2)


def test_sentencepiece_hypotheses_are_decoded(tmp_path):
    import sentencepiece

    (tmp_path / "train.txt").write_text("a dog runs .\ntwo men stand .\n" * 20)
    sentencepiece.SentencePieceTrainer.train(
        input=str(tmp_path / "train.txt"), model_prefix=str(tmp_path / "spm"),
        model_type="char", vocab_size=20, hard_vocab_limit=False, minloglevel=2,
    )  # fmt: skip
    model = tmp_path / "spm.model"
    pieces = " ".join(sentencepiece.SentencePieceProcessor(model_file=str(model)).encode(
        "two dogs run .", out_type=str))  # fmt: skip
    assert evaluate.sentencepiece_decoder(model)(pieces) == "two dogs run ."
    assert evaluate.sentencepiece_decoder(None)(pieces) == pieces


def test_hypothesis_and_reference_counts_must_match():
    with pytest.raises(evaluate.EvaluationError, match="2 hypotheses but 3 references"):
        evaluate.score("bleu", ["a", "b"], ["a", "b", "c"], "13a")


def test_rows_are_merged_by_key_and_tabulated(tmp_path):
    def row(name, beam, bleu):
        return {
            "name": name, "checkpoint": f"/w/{name}/checkpoint_best.pt", "gen_subset": "test",
            "beam": beam, "metric": "bleu", "bleu": bleu, "signature": "tok:13a",
            "references": "ref.en", "sentences_per_s": 10.0,
        }  # fmt: skip

    path = tmp_path / "results.json"
    evaluate.write_rows(path, [row("XENT", 1, 10.0), row("XENT", 5, 11.0)])
    merged = evaluate.merge_rows(evaluate.load_rows(path), [row("XENT", 5, 12.0)])
    assert [(r["beam"], r["bleu"]) for r in merged] == [(1, 10.0), (5, 12.0)]
    table = evaluate.markdown_table(merged)
    assert "| XENT | test | 5 | 12.00 | 10.0 |" in table
    assert "`tok:13a`" in table


def test_missing_checkpoint_is_reported_before_running_anything(tmp_path, capsys):
    data = tmp_path / "bin"
    data.mkdir()
    (data / "dict.en.txt").write_text("a 1\n")
    with pytest.raises(SystemExit, match="--checkpoint .*nope.pt: no such file"):
        evaluate.main(["--data", str(data), "--checkpoint", str(tmp_path / "nope.pt")])
    with pytest.raises(SystemExit, match="no binarised data folder"):
        evaluate.main(["--data", str(tmp_path), "--checkpoint", str(tmp_path / "nope.pt")])


def test_generate_failure_shows_its_last_lines():
    failing = [sys.executable, "-c", "import sys; print('line one'); sys.exit('it broke')"]
    with pytest.raises(evaluate.EvaluationError, match=r"(?s)exit 1.*line one.*it broke"):
        evaluate.run_generate(failing)


# ---------------------------------------------------------------------- plot.py


def log_line(kind: str, record: dict) -> str:
    return f"2026-01-01 00:00:00 | INFO | {kind} | {json.dumps(record)}\n"


def write_training_log(path: Path) -> None:
    lines = ["2026-01-01 00:00:00 | INFO | fairseq_cli.train | training starts\n"]
    update = 0
    for epoch, s in enumerate((21, 17, 13), start=1):
        for _ in range(4):
            update += 1
            lines.append(
                log_line(
                    "train_inner",
                    {
                        "epoch": epoch,
                        "update": epoch - 1 + update / 12,
                        "loss": "1.5",
                        "reward": f"{0.2 + update / 100}",
                        "baseline_mse": f"{0.1 / update}",
                        "mixer_s": str(s),
                        "num_updates": str(update),
                        "gnorm": None,
                    },
                )  # fmt: skip
            )
        valid = {"epoch": epoch, "valid_loss": "4.0", "valid_bleu": f"{10 + epoch}",
                 "valid_num_updates": str(update)}  # fmt: skip
        lines.append(log_line("valid", valid))
        lines.append(log_line("train", {"epoch": epoch, "train_num_updates": str(update)}))
    # a resumed run logs epoch 3 again: the last record of an update wins
    lines.append(log_line("valid", {**valid, "valid_bleu": "20"}))
    path.write_text("".join(lines))


def test_training_log_is_read_by_update_with_stage_starts(tmp_path):
    write_training_log(tmp_path / "mixer.log")
    log = plot.read_training_log(tmp_path / "mixer.log", "MIXER")
    assert [r["num_updates"] for r in log.train] == list(range(1, 13))
    assert [r["bleu"] for r in log.valid] == [11.0, 12.0, 20.0]
    assert plot.stage_starts(log.train) == [(1, 21), (5, 17), (9, 13)]
    assert plot.validation_metric([log]) == "bleu"


def test_bare_json_lines_of_log_file_are_classified():
    inner = plot.parse_log_line('{"epoch": 1, "update": 0.5, "num_updates": "3", "reward": null}')
    assert inner == ("train_inner", {"epoch": 1, "update": 0.5, "num_updates": "3", "reward": None})
    valid = plot.parse_log_line('{"epoch": 1, "valid_rouge2": "9.5", "valid_num_updates": "3"}')
    assert valid == ("valid", {"epoch": 1, "rouge2": "9.5", "num_updates": "3"})
    assert plot.parse_log_line('{"epoch": 1, "train_loss": "2.0"}') is None


def is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_writes_training_curves_and_beam_figure(tmp_path):
    write_training_log(tmp_path / "mixer.log")
    xent_log = tmp_path / "xent_more.log"
    xent_log.write_text(log_line("valid", {"valid_bleu": "12", "valid_num_updates": "4"}))
    logs = ["--log", str(tmp_path / "mixer.log"), "--log", str(xent_log)]
    plot.main([*logs, "--label", "MIXER", "--label", "XENT", "--out", str(tmp_path / "curves.png")])
    assert is_png(tmp_path / "curves.png")
    rows = [
        {"name": name, "gen_subset": subset, "beam": beam, "bleu": 10 + beam + len(name)}
        for name in ("XENT", "MIXER") for subset in ("test", "test1") for beam in (1, 5, 10)
    ]  # fmt: skip
    evaluate.write_rows(tmp_path / "results.json", rows)
    plot.main(["--beam-json", str(tmp_path / "results.json"), "--out", str(tmp_path / "b.png")])
    assert is_png(tmp_path / "b.png")


# ---------------------------------------------------------------------- run_recipe.py


def fake_recipe(tmp_path: Path) -> Path:
    """A recipe whose data step makes the bin folder and counts its runs, trains nothing."""
    make_bin = (
        "import pathlib; b = pathlib.Path('{workdir}/data/bin'); b.mkdir(parents=True, "
        "exist_ok=True); c = b / 'runs'; c.write_text(str(int(c.read_text() or 0) + 1) "
        "if c.exists() else '1')"
    )
    recipe = {
        "data": {"command": ["-c", make_bin], "bin": "{workdir}/data/bin"},
        "train": ["--optimizer", "adam"], "model": ["--arch", "lstm"],
        "xent": ["--max-epoch", "2"], "mixer": ["--max-epoch", "1"],
        "xent_more": ["--max-epoch", "1"],
        "evaluate": {"checkpoint": "checkpoint_last.pt", "beams": [1]},
    }  # fmt: skip
    path = tmp_path / "fake.json"
    path.write_text(json.dumps(recipe))
    return path


def test_a_finished_step_is_skipped(tmp_path):
    recipe_path, workdir = fake_recipe(tmp_path), tmp_path / "work"
    for _ in range(2):
        run_recipe.main([str(recipe_path), "--workdir", str(workdir), "--steps", "data"])
    assert (workdir / "data" / "bin" / "runs").read_text() == "1"
    assert (workdir / "data.log").read_text().count("=== run_recipe") == 1


def test_training_steps_skip_on_marker_and_checkpoint(tmp_path, capsys):
    workdir = tmp_path / "work"
    recipe = run_recipe.load_recipe(fake_recipe(tmp_path), workdir)
    command = [run_recipe.train_command(recipe, "xent", workdir, cpu=False)]
    assert not run_recipe.should_skip(recipe, "xent", command, workdir)
    (workdir / "xent").mkdir(parents=True)
    (workdir / "xent" / "checkpoint_last.pt").write_bytes(b"")
    # interrupted: a checkpoint but no marker, so it runs again and fairseq resumes
    assert not run_recipe.should_skip(recipe, "xent", command, workdir)
    run_recipe.write_marker(workdir, "xent", command, seconds=1.0)
    assert run_recipe.should_skip(recipe, "xent", command, workdir)
    changed = [[*command[0], "--lr", "1"]]
    assert run_recipe.should_skip(recipe, "xent", changed, workdir)
    assert "the recipe changed since this step ran" in capsys.readouterr().out


def test_evaluation_is_redone_when_a_checkpoint_is_newer(tmp_path):
    workdir = tmp_path / "work"
    recipe = run_recipe.load_recipe(fake_recipe(tmp_path), workdir)
    (workdir / "xent").mkdir(parents=True)
    checkpoint = workdir / "xent" / "checkpoint_last.pt"
    checkpoint.write_bytes(b"")
    run_recipe.write_marker(workdir, "xent", [], seconds=1.0)
    commands = run_recipe.evaluate_commands(recipe, workdir, cpu=False)
    assert "--reference-text" not in commands[0] and "XENT" in commands[0]
    for name in ("results.json", "results.md"):
        (workdir / name).write_text("")
    run_recipe.write_marker(workdir, "evaluate", commands, seconds=1.0)
    assert run_recipe.should_skip(recipe, "evaluate", commands, workdir)
    marker_time = run_recipe.marker_path(workdir, "evaluate").stat().st_mtime
    os.utime(checkpoint, (marker_time + 10, marker_time + 10))
    assert not run_recipe.should_skip(recipe, "evaluate", commands, workdir)


def test_recipe_errors(tmp_path):
    recipe = json.loads(fake_recipe(tmp_path).read_text())
    recipe["xent_more"] = ["--max-epoch", "3"]
    (tmp_path / "unfair.json").write_text(json.dumps(recipe))
    with pytest.raises(run_recipe.RecipeError, match="--max-epoch is 1 for mixer but 3"):
        run_recipe.load_recipe(tmp_path / "unfair.json", tmp_path)
    with pytest.raises(run_recipe.RecipeError, match="unknown steps"):
        run_recipe.parse_steps("data,train")
    with pytest.raises(SystemExit, match="run the xent step to the end first"):
        run_recipe.main([str(fake_recipe(tmp_path)), "--workdir", str(tmp_path / "w"),
                         "--steps", "data,mixer"])  # fmt: skip


def test_share_xent_from_links_a_finished_xent_of_the_same_settings(tmp_path):
    recipe_path, first, second = fake_recipe(tmp_path), tmp_path / "first", tmp_path / "second"
    run_recipe.main([str(recipe_path), "--workdir", str(first), "--steps", "data"])
    shared = ["--share-xent-from", str(first), "--steps", "data"]
    with pytest.raises(SystemExit, match="its xent step has not finished"):
        run_recipe.main([str(recipe_path), "--workdir", str(second), *shared])
    recipe = run_recipe.load_recipe(recipe_path, first)
    xent = [run_recipe.train_command(recipe, "xent", first, cpu=False)]
    run_recipe.write_marker(first, "xent", xent, seconds=1.0)
    (first / "xent").mkdir()
    run_recipe.main([str(recipe_path), "--workdir", str(second), *shared])
    assert (second / "xent").resolve() == (first / "xent").resolve()
    assert (second / "data" / "bin" / "runs").read_text() == "1"  # linked, not run again
    own = run_recipe.load_recipe(recipe_path, second)
    assert run_recipe.recorded_commands(second, "xent") == [
        run_recipe.train_command(own, "xent", second, cpu=False)
    ]
    other = json.loads(recipe_path.read_text())
    other["xent"] = ["--max-epoch", "5"]
    other_path = tmp_path / "other.json"
    other_path.write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="its xent step ran with other settings"):
        run_recipe.main([str(other_path), "--workdir", str(tmp_path / "third"), *shared])


# Each shipped recipe, resolved (its base and changes applied, {workdir} = /workdir), as
# `settings_fingerprint` reads it. They were taken from the 16 whole files of commit 3565f87,
# before 13 of them became a base and changes: the changed ones resolve to the very settings
# they had (the order of a step's flags aside: a flag new to the base comes last).
RECIPE_FINGERPRINTS = {
    "demo_tiny": "645e889f265e23dd",
    "gigaword": "815c1a846812a8b4",
    "gigaword_leave_one_out": "9a59fed99c89f131",
    "gigaword_lr1e-4": "e2263d70d7c0c5e3",
    "gigaword_lr1e-4_16ep": "871448ae4747491f",
    "gigaword_lr1e-4_long": "ba0c79113acc5546",
    "gigaword_self_critical": "a30192752a1eaa9b",
    "multi30k": "e72e3f47ed982afa",
    "multi30k_gpu": "a88e8024d86f3c08",
    "multi30k_long": "9b4aa13b0dd95e50",
    "multi30k_lr1e-4": "61c4a027f3ad1056",
    "multi30k_lr1e-4_long": "9f8777b4cb95beb8",
    "multi30k_lr1e-4_stage3": "249bf2dce1479f6e",
    "multi30k_lr1e-4_xent025": "ab31e0122d468d38",
    "multi30k_release_sgd": "a42c53c6344fef6b",
    "multi30k_self_critical": "77e7f5799e8bb7ed",
    # added later: the subword recipe, and its id-reward twin as the whole file it was first
    "multi30k_spm": "96e484b2167e138a",
    "multi30k_spm_id_reward": "0d40190a53262d78",
}
BASE_RECIPES = {"multi30k", "gigaword", "demo_tiny", "multi30k_spm"}


def settings_fingerprint(recipe: dict) -> str:
    """A digest of every setting: each step's flags as fairseq reads them (in any order),
    every other key as it is."""
    settings = {
        key: run_recipe.flag_groups(value) if key in recipe_overrides.FLAG_STEPS else value
        for key, value in recipe.items()
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def test_every_shipped_recipe_is_fingerprinted():
    shipped = {path.stem for path in (SCRIPTS / "recipes").glob("*.json")}
    assert shipped == set(RECIPE_FINGERPRINTS)


@pytest.mark.parametrize("name", sorted(RECIPE_FINGERPRINTS))
def test_shipped_recipes_resolve_to_their_settings(name):
    path = SCRIPTS / "recipes" / f"{name}.json"
    recipe = run_recipe.load_recipe(path, Path("/workdir"))
    assert settings_fingerprint(recipe) == RECIPE_FINGERPRINTS[name]
    assert "/workdir" in recipe["data"]["bin"]
    for step in run_recipe.TRAIN_STEPS:
        assert "--max-epoch" in run_recipe.train_command(recipe, step, Path("/workdir"), True)
    assert ("base" in json.loads(path.read_text())) == (name not in BASE_RECIPES)


def test_set_replaces_a_flag_where_it_stands_appends_a_new_one_and_null_removes_it():
    flags = ["--lr", "0.1", "--eval-bleu", "--max-epoch", "4"]
    set_flag = recipe_overrides.set_flag
    assert set_flag(flags, "lr", "0.2") == ["--lr", "0.2", "--eval-bleu", "--max-epoch", "4"]
    assert set_flag(flags, "mixer_delta", "3") == [*flags, "--mixer-delta", "3"]
    assert set_flag(flags, "max-epoch", None) == ["--lr", "0.1", "--eval-bleu"]
    assert set_flag(flags, "eval-bleu", None) == ["--lr", "0.1", "--max-epoch", "4"]
    assert set_flag(flags, "no-save", True) == [*flags, "--no-save"]
    with pytest.raises(recipe_overrides.RecipeError, match="not among the flags"):
        set_flag(flags, "seed", None)
    with pytest.raises(recipe_overrides.RecipeError, match="a string, true or null"):
        set_flag(flags, "lr", 0.2)


def test_command_line_overrides_are_parsed():
    parse = recipe_overrides.parse_override
    assert parse("mixer.lr=0.0001") == ("mixer.lr", "0.0001")
    assert parse("mixer.mixer-baseline-bias-scale=null") == (
        "mixer.mixer-baseline-bias-scale",
        None,
    )
    assert parse("xent.no-save") == ("xent.no-save", True)
    assert parse("evaluate.batch_size=256") == ("evaluate.batch_size", 256)
    assert parse("evaluate.beams=[1,5]") == ("evaluate.beams", [1, 5])
    assert parse("finetune_from=checkpoint_last.pt") == ("finetune_from", "checkpoint_last.pt")
    with pytest.raises(recipe_overrides.RecipeError, match="KEY=VALUE"):
        parse("evaluate.batch_size")


def test_a_recipe_names_its_base_and_changes_it(tmp_path):
    fake_recipe(tmp_path)
    (tmp_path / "variants").mkdir()
    middle = {"base": "../fake.json", "set": {"mixer.max-epoch": "3", "xent_more.max-epoch": "3"}}
    (tmp_path / "variants" / "middle.json").write_text(json.dumps(middle))
    top = {
        "base": "middle.json", "description": "two changes on top of one",
        "model": ["--arch", "transformer"],
        "set": {"mixer.lr": "0.5", "train.optimizer": None, "evaluate.beams": [1, 5]},
    }  # fmt: skip
    (tmp_path / "variants" / "top.json").write_text(json.dumps(top))
    recipe = run_recipe.load_recipe(tmp_path / "variants" / "top.json", tmp_path / "w")
    whole = json.loads((tmp_path / "fake.json").read_text())
    assert recipe["mixer"] == ["--max-epoch", "3", "--lr", "0.5"]
    assert recipe["xent_more"] == ["--max-epoch", "3"]
    assert recipe["train"] == []
    assert recipe["model"] == ["--arch", "transformer"]
    assert recipe["evaluate"] == {**whole["evaluate"], "beams": [1, 5]}
    assert recipe["description"] == "two changes on top of one"
    assert "base" not in recipe and "set" not in recipe
    command_line = [("mixer.lr", "0.25"), ("evaluate.references", {"test": "{workdir}/ref.txt"})]
    recipe = run_recipe.load_recipe(
        tmp_path / "variants" / "top.json", tmp_path / "w", command_line
    )
    assert recipe["mixer"] == ["--max-epoch", "3", "--lr", "0.25"]
    assert recipe["evaluate"]["references"] == {"test": f"{tmp_path / 'w'}/ref.txt"}


def test_recipe_override_errors(tmp_path):
    fake = fake_recipe(tmp_path)
    with pytest.raises(run_recipe.RecipeError, match="--max-epoch is 9 for mixer but 1"):
        run_recipe.load_recipe(fake, tmp_path, [("mixer.max-epoch", "9")])
    with pytest.raises(run_recipe.RecipeError, match="no object 'nothing'"):
        run_recipe.load_recipe(fake, tmp_path, [("nothing.here", 1)])
    (tmp_path / "a.json").write_text(json.dumps({"base": "b.json"}))
    (tmp_path / "b.json").write_text(json.dumps({"base": "a.json"}))
    with pytest.raises(run_recipe.RecipeError, match="cycle"):
        run_recipe.load_recipe(tmp_path / "a.json", tmp_path)


def test_show_prints_the_resolved_recipe_and_runs_nothing(tmp_path, capsys):
    workdir = tmp_path / "work"
    args = [str(fake_recipe(tmp_path)), "--workdir", str(workdir), "--show", "--seed", "5"]
    run_recipe.main([*args, "--set", "mixer.lr=0.3", "--set", "evaluate.batch_size=8"])
    shown = json.loads(capsys.readouterr().out)
    assert shown["mixer"] == ["--max-epoch", "1", "--lr", "0.3", "--seed", "5"]
    assert shown["evaluate"]["batch_size"] == 8
    assert shown["data"]["bin"] == f"{workdir}/data/bin"
    assert not workdir.exists()


def test_commands_are_the_same_whatever_the_order_of_their_flags():
    command = ["fairseq-train", "bin", "--lr", "0.1", "--eval-bleu", "--seed", "1", "--seed", "2"]
    reordered = ["fairseq-train", "bin", "--seed", "1", "--eval-bleu", "--seed", "2", "--lr", "0.1"]
    assert run_recipe.same_commands([command], [reordered])
    last_seed_first = [
        "fairseq-train",
        "bin",
        "--lr",
        "0.1",
        "--eval-bleu",
        "--seed",
        "2",
        "--seed",
        "1",
    ]
    assert not run_recipe.same_commands([command], [last_seed_first])
    assert not run_recipe.same_commands([command], [["fairseq-train", "other", *command[2:]]])
    assert not run_recipe.same_commands([command], [command, command])


@pytest.mark.slow
@pytest.mark.skipif(
    not (Path(sys.executable).parent / "fairseq-train").exists(),
    reason="fairseq-train is not installed next to this interpreter",
)
def test_demo_tiny_recipe_end_to_end(tmp_path, monkeypatch):
    """The tiny recipe through the real CLIs (about 40 s on 2 cores): data, XENT, MIXER with
    validation BLEU, and evaluation of both checkpoints; beam 1 only, to keep it short."""
    recipe = json.loads((SCRIPTS / "recipes" / "demo_tiny.json").read_text())
    recipe["evaluate"]["beams"] = [1]
    (tmp_path / "tiny.json").write_text(json.dumps(recipe))
    workdir = tmp_path / "work"
    args = [str(tmp_path / "tiny.json"), "--workdir", str(workdir), "--cpu"]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # tiny models: a second thread only contends
    run_recipe.main([*args, "--steps", "data,xent,mixer,evaluate"])
    rows = evaluate.load_rows(workdir / "results.json")
    assert [(r["name"], r["beam"], r["sentences"]) for r in rows] == [
        ("XENT", 1, 40),
        ("MIXER", 1, 40),
    ]
    assert "| MIXER | test | 1 |" in (workdir / "results.md").read_text()
    assert '"mixer_s"' in (workdir / "mixer.log").read_text()


def test_seed_option_reseeds_the_fine_tuning_steps_only(tmp_path):
    workdir = tmp_path / "work"
    recipe = run_recipe.with_seed(run_recipe.load_recipe(fake_recipe(tmp_path), workdir), 7)
    for step in ("mixer", "xent_more"):
        command = run_recipe.train_command(recipe, step, workdir, cpu=False)
        assert command[command.index("--seed") :][:2] == ["--seed", "7"]
    assert "--seed" not in run_recipe.train_command(recipe, "xent", workdir, cpu=False)


@pytest.mark.slow
@pytest.mark.skipif(
    not (Path(sys.executable).parent / "fairseq-train").exists(),
    reason="fairseq-train is not installed next to this interpreter",
)
def test_release_sgd_script_carries_xent_into_mixer_stages(synthetic_bin, tmp_path):
    """scripts/release_sgd.sh through the real CLIs, 2 + 2 epochs: MIXER and its control
    continue the XENT phase's last checkpoint with its lr (epochs 3 and 4), MIXER in its first
    two stages, and the evaluation scores the best epoch of each."""
    data = tmp_path / "data"
    shutil.copytree(synthetic_bin, data / "bin")
    (data / "text").mkdir()
    shutil.copy(synthetic_bin.parent / "text" / "test.tgt", data / "text" / "test.en")
    work = tmp_path / "work"
    env = {**os.environ, "PY": sys.executable, "XENT_EPOCHS": "2", "MIXER_EPOCHS": "2"}
    env.update(SUBSETS="test", OMP_NUM_THREADS="1")
    env["MODEL"] = "--arch mixer_paper --embed-dim 32 --hidden-size 32 --dropout 0.2"
    for phase in ("xent", "mixer", "control", "evaluate"):
        done = subprocess.run(
            ["bash", str(SCRIPTS / "release_sgd.sh"), str(data / "bin"), str(work), phase],
            cwd=REPO, env=env, capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == 0, (phase, done.stderr[-2000:])

    def train_rows(log: str) -> list[dict]:
        lines = (work / log).read_text().split("\n")
        return [json.loads(line.split("| train | ")[1]) for line in lines if "| train | " in line]

    assert [row["epoch"] for row in train_rows("xent.log")] == [1, 2]
    mixer, control = train_rows("mixer.log"), train_rows("control.log")
    assert [(row["epoch"], row["train_mixer_s"]) for row in mixer] == [(3, "22"), (4, "22")]
    assert [row["epoch"] for row in control] == [3, 4] and "train_reward" not in control[0]
    assert "Loaded checkpoint" in (work / "mixer.log").read_text()
    table = (work / "results.md").read_text()
    for name in ("XENT (SGD)", "MIXER (SGD)", "XENT control (SGD)"):
        assert f"| {name} | test | 1 |" in table and f"| {name} | test | 5 |" in table
    assert "`xent/checkpoint_last.pt`" in table
    assert re.search(r"MIXER \(SGD\) `mixer/checkpoint[34]\.pt`", table)
    bash = subprocess.run(
        ["bash", str(SCRIPTS / "release_sgd.sh"), str(data / "bin"), str(work), "train"],
        cwd=REPO, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert bash.returncode == 2 and "unknown phase train" in bash.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["only-one"], "usage: bash scripts/release_sgd.sh DATA_BIN WORKDIR"),
        (["{tmp}/nothing", "{tmp}/work", "xent"], "is not a binarised data folder"),
        (["{bin}", "{tmp}/work", "mixer"], "run the xent phase first"),
        (["{bin}", "{tmp}/work", "evaluate"], "run the xent phase first"),
    ],
)
def test_release_sgd_script_errors(synthetic_bin, tmp_path, args, message):
    """Bad arguments stop the script before any training, with a message that names them."""
    args = [arg.format(tmp=tmp_path, bin=synthetic_bin) for arg in args]
    done = subprocess.run(
        ["bash", str(SCRIPTS / "release_sgd.sh"), *args],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 2 and message in done.stderr
    assert not (tmp_path / "work").exists()
