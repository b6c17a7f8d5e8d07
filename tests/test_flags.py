"""The shared flag rules: every CLI's --help says each default once."""

import re

import pytest

import predict_dlv3p
import test_dlv3p
import train_dlv3p
from cityscapes import cache, check, generate_gt, synthetic
from deeplabv3plus import convert, export

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
