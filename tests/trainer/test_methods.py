"""The method table: one entry per method.name choice, unknown names named in one line."""

from __future__ import annotations

import typing

import pytest

from trainer.config import ConfigError, Method
from trainer.methods import METHODS, get_method


def test_table_has_every_configurable_method():
    choices = typing.get_args(typing.get_type_hints(Method)["name"])
    assert set(METHODS) == set(choices)
    assert all(METHODS[name].name == name for name in METHODS)


def test_unknown_method_names_the_known_ones():
    with pytest.raises(ConfigError) as err:
        get_method("dora")
    message = str(err.value)
    assert message.startswith("method.name: unknown method 'dora'")
    assert all(name in message for name in METHODS)
    assert "\n" not in message
