"""Every option a user meets in --help says what it does."""

import pytest
from click.testing import CliRunner

from ase_moireh.cli import moireh


@pytest.mark.parametrize("command", ["bands", "chern", "ribbon"])
def test_model_option_is_explained(command):
    result = CliRunner().invoke(moireh, [command, "--help"])
    assert result.exit_code == 0
    assert "bundled MoTe2 model" in result.output


@pytest.mark.parametrize("command", ["bands", "ribbon"])
def test_sigma_is_relative_to_the_mid_gap(command):
    result = CliRunner().invoke(moireh, [command, "--help"])
    assert "relative to the mid-gap" in " ".join(result.output.split())
    assert "--absolute-sigma" in result.output


def test_every_option_has_help_text():
    """No bare options in the band commands (the user report found --model without)."""
    for name in ("bands", "chern", "ribbon"):
        command = moireh.commands[name]
        bare = [p.name for p in command.params if p.param_type_name == "option" and not p.help]
        assert not bare, (name, bare)
