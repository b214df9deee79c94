"""`adaret train` and `adaret export` flags are generated from TrainConfig and ExportConfig: defaults cannot drift."""

import argparse
import dataclasses
import subprocess
import sys
from dataclasses import dataclass, field

import pytest

from adaret.cli import build_parser
from adaret.core.cli_args import add_dataclass_arguments, dataclass_values, flag, flag_fields
from adaret.core.errors import AdaretError
from adaret.export.config import ExportConfig
from adaret.training.config import TrainConfig, gates_see_positions

# The flags of the hand-written parsers these replaced: scripts and the README use them.
TRAIN_FLAGS = {"--batch-size", "--budget", "--budget-slack", "--data", "--distill-weight", "--epochs", "--eval-every",
               "--fine-tune-backbone", "--freeze-backbone", "--gate-first-layer", "--label-column", "--lr",
               "--lr-backbone", "--lr-dual", "--max-eval-samples", "--max-length", "--max-steps",
               "--max-train-samples", "--min-steps", "--model", "--no-refit-head", "--out", "--overwrite", "--rho",
               "--scorer", "--seed", "--text-column", "--tune-head"}
EXPORT_FLAGS = {"--batch", "--budget", "--checkpoint", "--data", "--debug", "--engine", "--engine-precision",
                "--label-column", "--max-examples", "--max-latency-ms", "--min-accuracy", "--no-optimize", "--opset",
                "--out", "--overwrite", "--scorer", "--seq-len", "--static", "--target", "--text-column",
                "--tolerance", "--with-positions"}
CASES = [("train", TrainConfig, ["--out", "x"]), ("export", ExportConfig, ["--budget", "0.4"])]


def _subparser(command: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def _by_dest(parser: argparse.ArgumentParser) -> dict[str, list[argparse.Action]]:
    actions: dict[str, list[argparse.Action]] = {}
    for action in parser._actions:
        actions.setdefault(action.dest, []).append(action)
    return actions


@pytest.mark.parametrize(("command", "cls", "_"), CASES)
def test_every_config_field_is_a_flag_with_the_config_default(command, cls, _):
    actions = _by_dest(_subparser(command))
    flags = {f.name for f, _spec in flag_fields(cls)}
    assert flags, cls
    for f in dataclasses.fields(cls):
        if f.name not in flags:
            assert f.metadata["why_not_a_flag"], f.name  # a field that is no flag says why
            continue
        assert f.name in actions, f"{cls.__name__}.{f.name} has no flag"
        if f.default is not dataclasses.MISSING and not any(a.required for a in actions[f.name]):
            assert {a.default for a in actions[f.name]} == {f.default}, f.name
        assert all(a.help for a in actions[f.name]), f.name


def test_parsed_defaults_build_the_library_config():
    parse = build_parser().parse_args
    assert TrainConfig(**dataclass_values(TrainConfig, parse(["train", "--out", "x"]))) == TrainConfig(out="x")
    export_args = parse(["export", "--budget", "0.4"])
    assert ExportConfig(**dataclass_values(ExportConfig, export_args)) == ExportConfig(budget=0.4)


@pytest.mark.parametrize(("command", "cls", "required"), CASES)
def test_a_changed_config_default_is_the_new_flag_default(command, cls, required, monkeypatch):
    name = {"train": "rho", "export": "tolerance"}[command]
    monkeypatch.setattr(next(f for f in dataclasses.fields(cls) if f.name == name), "default", 0.123)
    assert getattr(build_parser().parse_args([command, *required]), name) == 0.123
    assert "(default: 0.123)" in " ".join(_subparser(command).format_help().split())


def test_existing_flag_names_are_kept():
    for command, flags in (("train", TRAIN_FLAGS), ("export", EXPORT_FLAGS)):
        options = {o for a in _subparser(command)._actions for o in a.option_strings}
        assert flags <= options, (command, flags - options)


def test_switches_renamed_flags_and_special_values():
    parse = build_parser().parse_args
    args = parse(["train", "--out", "x", "--no-refit-head", "--fine-tune-backbone", "--lr", "0.5",
                  "--budget-slack", "-1", "--gate-first-layer"])
    config = TrainConfig(**dataclass_values(TrainConfig, args))
    assert (config.refit_head, config.freeze_backbone, config.lr_primal, config.budget_slack,
            config.gate_first_layer) == (False, False, 0.5, None, True)
    assert parse(["export", "--budget", "auto", "--seq-len", "64,128"]).seq_lens == (64, 128)
    with pytest.raises(SystemExit):
        parse(["train", "--out", "x", "--freeze-backbone", "--fine-tune-backbone"])


def test_a_new_field_with_metadata_is_all_a_new_flag_takes():
    @dataclass
    class WithTask(TrainConfig):
        task: str = field(default="classification", metadata=flag("what the head predicts",
                                                                  choices=("classification", "question-answering")))

    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, WithTask)
    args = parser.parse_args(["--out", "x", "--task", "question-answering"])
    assert WithTask(**dataclass_values(WithTask, args)).task == "question-answering"


def test_a_field_that_says_nothing_of_the_command_line_is_refused():
    @dataclass
    class Silent:
        budget: float = 0.4

    with pytest.raises(TypeError, match=r"Silent\.budget"):
        add_dataclass_arguments(argparse.ArgumentParser(), Silent)


def test_export_choices_mirror_the_stages_that_define_them():
    from adaret.export import config
    from adaret.graph_passes.cli import TARGETS
    from adaret.modeling.scorers import SCORERS

    assert config.GRAPH_PASS_TARGETS == TARGETS and config.SCORERS == SCORERS


def test_help_loads_neither_torch_nor_onnx():
    code = ("import sys\n"
            "from adaret.cli import build_parser\n"
            "for command in ('train', 'export'):\n"
            "    try:\n"
            "        build_parser().parse_args([command, '--help'])\n"
            "    except SystemExit:\n"
            "        pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx', 'transformers')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("task", ["sequence-classification", "summarization"])
def test_gate_question_is_refused_outside_question_answering(task):
    args = build_parser().parse_args(["train", "--out", "x", "--task", task, "--gate-question"])
    with pytest.raises(AdaretError, match="--gate-question applies to question answering only"):
        TrainConfig(**dataclass_values(TrainConfig, args)).validate()
    TrainConfig(out="x", task="question-answering", gate_question=True).validate()


def test_the_position_prior_is_on_by_default_for_summarization_only():
    parse = build_parser().parse_args
    resolved = {task: gates_see_positions(TrainConfig(**dataclass_values(TrainConfig, parse(
        ["train", "--out", "x", "--task", task]))))
        for task in ("sequence-classification", "question-answering", "summarization")}
    assert resolved == {"sequence-classification": False, "question-answering": False, "summarization": True}
    for task, flags, wanted in (("summarization", ["--no-gate-positions"], False),
                                ("sequence-classification", ["--gate-positions"], True)):
        config = TrainConfig(**dataclass_values(TrainConfig, parse(["train", "--out", "x", "--task", task, *flags])))
        assert gates_see_positions(config) is wanted
