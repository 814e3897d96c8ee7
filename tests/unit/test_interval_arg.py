"""`--interval` below the app's minimum is refused like any bad option (exit 2, naming the minimum), for
every command that takes it, instead of being raised to 0.25 s without a word."""

from __future__ import annotations

import pytest

from gputui.cli import main


@pytest.mark.parametrize("argv", [["--interval", "0.1", "--simulate", "2"], ["serve", "--interval", "0.1"]])
def test_an_interval_below_the_minimum_is_a_usage_error_naming_it(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--interval" in err and "at least 0.25" in err and "0.1" in err


@pytest.mark.parametrize("value", ["fast", "nan"])
def test_an_interval_that_is_not_a_number_of_seconds_is_a_usage_error(value, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--interval", value])
    assert exited.value.code == 2
    assert "--interval" in capsys.readouterr().err


def test_the_help_states_the_minimum(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "min 0.25" in capsys.readouterr().out
