"""Every ``hotswap`` command explains itself: ``--help`` ends with a runnable example."""

from __future__ import annotations

import pytest

from service.cli import COMMANDS, main


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_of_every_command_shows_an_example_of_it(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert "example:" in text
    example = text.split("example:", 1)[1]
    assert f"hotswap {command}" in example, example


def test_top_level_help_lists_every_command_with_examples(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "examples:" in text
    for command in COMMANDS:
        assert command in text
