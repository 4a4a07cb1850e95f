# Copyright (c) monai_sre contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at http://www.apache.org/licenses/LICENSE-2.0
"""The ``monai-sre`` command table: every command parses to its own run function; help and errors are one place."""

from __future__ import annotations

import pytest

from monai_sre import cli


def test_each_command_of_the_table_parses_to_its_run_function(capsys):
    names = [c.name for c in cli._COMMANDS]
    assert len(set(names)) == len(names) and {"evaluate-rotation", "prepare-data", "predict", "promote"} <= set(names)
    parser = cli.build_parser()
    argv = {
        "evaluate-rotation": ["--bundle", "b", "--checkpoint", "c.pt", "--out", "o"],
        "prepare-data": ["--flag", "breastmnist", "--out", "o"],
        "predict": ["scan.nii.gz", "--bundle", "b"],
        "promote": ["--bundle", "b", "--run", "r"],
    }
    for command in cli._COMMANDS:
        args = parser.parse_args([command.name, *argv.get(command.name, [])])
        assert args.command == command.name and args.run is command.run
    assert cli.main([]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in names)  # the help lists every command of the table


def test_an_error_is_one_line_naming_the_command(tmp_path, capsys):
    out = tmp_path / "o"
    assert cli.main(["prepare-data", "--flag", "breastmnist", "--out", str(out), "--limit", "0", "--no-download"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("monai-sre prepare-data: error: ") and "\n" not in err and "limit" in err
    assert not out.exists()
    with pytest.raises(SystemExit):  # argparse: an unknown command
        cli.main(["no-such-command"])
