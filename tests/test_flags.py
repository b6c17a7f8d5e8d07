"""The shared flag rules: every CLI's --help says each default once; one mapping of errors to exit statuses; the
inference flags shared by test and predict."""

import re

import pytest
import torch

import predict_dlv3p
import test_dlv3p
import train_dlv3p
from cityscapes import cache, check, generate_gt, synthetic
from deeplabv3plus import cli, convert, export
from segdata.flags import report_error

PARSERS = {"train_dlv3p": train_dlv3p, "test_dlv3p": test_dlv3p, "predict_dlv3p": predict_dlv3p, "export": export,
           "convert": convert, "cache": cache, "check": check, "generate_gt": generate_gt, "synthetic": synthetic}


@pytest.mark.parametrize("name", list(PARSERS))
def test_help_says_each_default_once(name):
    parser = PARSERS[name].get_args_parser()
    text = re.sub(r"\s+", " ", parser.format_help())
    assert "(default: None)" not in text and "(default: False)" not in text
    for action in parser._actions:  # argparse keeps them here; the flags themselves are what is checked
        help_text = re.sub(r"\s+", " ", parser._get_formatter()._expand_help(action)) if action.help else ""
        assert help_text.count("default") <= 1, (action.option_strings, help_text)


def test_train_help_names_the_recipe_default_and_the_resumed_run():
    text = re.sub(r"\s+", " ", train_dlv3p.get_args_parser().format_help())
    assert "(default: [768, 768], or the resumed run's)" in text and "(default: 4)" in text


@pytest.mark.parametrize(("error", "status", "line"), [
    (KeyboardInterrupt(), 130, "interrupted: the previous output is kept"),
    (OSError(28, "No space left on device", "out/a.png"), 1,
     "error: cannot write out/a.png: No space left on device; free space (or fix permissions) and run again; the "
     "previous output is kept"),
    (FloatingPointError("loss is nan at iteration 3"), 1,
     "error: loss is nan at iteration 3; the previous output is kept"),
    (FileNotFoundError("data/x.png: image not found"), 2,
     "error: data/x.png: image not found; the previous output is kept"),
    (ValueError("worker traceback\nValueError: x.png: damaged"), 2,
     "error: x.png: damaged; the previous output is kept"),
])
def test_every_cli_maps_an_error_to_one_line_and_one_exit_status(error, status, line, capsys):
    assert report_error(error, "the previous output is kept") == status
    assert capsys.readouterr().err.strip() == line


def test_test_and_predict_share_the_inference_flags():
    def inference_flags(parser):
        group = next(group for group in parser._action_groups if group.title == "Inference")
        return {action.dest: (action.default, action.choices) for action in group._group_actions}

    assert inference_flags(test_dlv3p.get_args_parser()) == inference_flags(predict_dlv3p.get_args_parser())
    args = predict_dlv3p.get_args_parser().parse_args(["x.png", "--model-weights-path", "m.pth", "--mode", "slide",
                                                       "--crop", "64", "64", "--stride", "32", "48", "--flip"])
    options = cli.inference_options(args)
    assert (options.flip, options.scales, options.amp_dtype, options.mode, options.crop, options.stride) == (
        True, (1.0,), None, "slide", (64, 64), (32, 48))
    with pytest.raises(ValueError, match=r"argument --stride: \[96, 48\] leaves gaps between --crop"):
        cli.inference_options(predict_dlv3p.get_args_parser().parse_args(["x.png", "--model-weights-path", "m.pth",
                                                                           "--mode", "slide", "--crop", "64", "64",
                                                                           "--stride", "96", "48"]))
    with pytest.raises(cli.FlagError, match="argument --amp-dtype: bfloat16 takes effect only with autocast; drop "
                                            "--no-amp"):
        cli.inference_options(test_dlv3p.get_args_parser().parse_args(
            ["--model-weights-path", "m.pth", "--no-amp", "--amp-dtype", "bfloat16"]))
    implied = cli.inference_options(test_dlv3p.get_args_parser().parse_args(
        ["--model-weights-path", "m.pth", "--amp-dtype", "bfloat16", "--device", "cpu"]))
    assert implied.amp_dtype == torch.bfloat16 and not implied.channels_last


@pytest.mark.parametrize("name", list(PARSERS))
def test_every_command_refuses_an_abbreviated_flag_and_names_the_closest(name, capsys):
    parser = PARSERS[name].get_args_parser()
    assert parser.allow_abbrev is False  # --iter is no flag of its own, so it is not taken for --iters
    flag = max((flag for flag in parser._option_string_actions if flag.startswith("--")), key=len)
    with pytest.raises(SystemExit) as exit_:
        parser.error(f"unrecognized arguments: {flag[:-1]} 1")
    assert exit_.value.code == 2 and f"(did you mean {flag}?)" in capsys.readouterr().err


def test_a_mistyped_training_flag_is_named_with_the_flag_meant(capsys):
    with pytest.raises(SystemExit) as exit_:
        train_dlv3p.get_args_parser().parse_args(["--iter", "5"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == ("train_dlv3p.py: error: unrecognized arguments: --iter 5 (did you mean "
                                               "--iters?)")


def test_a_command_logs_its_own_lines_and_not_other_packages_chatter(capsys):
    import logging

    from segdata.flags import log_to_terminal

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    root.handlers = []
    try:
        log_to_terminal("train_dlv3p")
        logging.getLogger("onnxscript.optimizer").info("Removed 560 unused nodes")
        logging.getLogger("deeplabv3plus.training").info("class weights: ...")
        logging.getLogger("train_dlv3p").info("run saved/x: 2 iterations")
        logging.getLogger("onnxscript.optimizer").warning("a third-party warning")
        for handler in root.handlers:
            handler.flush()
    finally:
        root.handlers, root.level = handlers, level
    err = capsys.readouterr().err
    assert err.splitlines() == ["class weights: ...", "run saved/x: 2 iterations", "a third-party warning"]


def test_the_offline_imagenet_error_names_the_flags(monkeypatch):
    from urllib.error import URLError

    from deeplabv3plus.backbone import BACKBONES
    from deeplabv3plus.model import build_model

    def offline(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(type(BACKBONES["resnet50"][1]), "get_state_dict", offline)
    with pytest.raises(RuntimeError) as error:
        build_model("resnet50", 16, pretrained_backbone="imagenet")
    assert "pass a local state-dict file with --pretrained-backbone PATH (resnet50-" in str(error.value)
    assert "or start from scratch with --pretrained-backbone none" in str(error.value) and "\n" not in str(error.value)
