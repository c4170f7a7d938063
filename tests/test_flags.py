"""The command lines of runner.py, sweep.py and plot.py: whole flag names only, and the handout's names."""
import pytest

import plot
import sweep
from harness import config
from harness import flags


@pytest.mark.parametrize("argv, flag", [(["--total_step", "10"], "--total_step"),
                                        (["--bc_w", "10"], "--bc_w"), (["--cql_alph", "5"], "--cql_alph")])
def test_runner_refuses_an_abbreviated_flag_with_one_line(capsys, argv, flag):
    with pytest.raises(SystemExit) as exit_info:
        config.parse(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("runner.py: error: unrecognized arguments") and flag in err, err


def test_sweep_and_plot_refuse_an_abbreviated_flag(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:  # --total_step would have been sweep.py's --total_steps
        sweep.main(["--bc_weight", "1", "--total_step", "10", "--results_dir", str(tmp_path)])
    assert exit_info.value.code == 2 and "unrecognized arguments: --total_step" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # refused before the sweep folder is made
    with pytest.raises(SystemExit) as exit_info:
        plot.main([str(tmp_path), "--behaviour", "1673"])
    assert exit_info.value.code == 2 and "unrecognized arguments: --behaviour" in capsys.readouterr().err


def test_alpha_reg_the_handouts_name_is_bc_weight():
    by_alias, _, given = config.parse(["--alpha_reg", "10"])
    assert by_alias == config.parse(["--bc_weight", "10"])[0] and by_alias.td3.bc_weight == 10
    assert given == {"bc_weight": 10}  # recorded under its one name: config.json, labels and --resume agree
    assert config.config_name(by_alias) == "td3_bc_weight=10"


def test_alpha_reg_is_listed_under_bc_weight_and_an_error_names_the_name_typed(capsys):
    assert "--alpha_reg X|auto    the same as --bc_weight" in config.build_parser().format_help()
    for argv, named in ((["--alpha_reg", "x"], "--alpha_reg"), (["--alpha_reg", "1", "--bc_weight", "2"], "--bc_weight")):
        with pytest.raises(SystemExit):
            config.parse(argv)
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"runner.py: error: argument {named}: "), err


def test_the_sweep_takes_its_values_as_alpha_reg_too():
    parser = flags.Parser(prog="sweep.py")  # as sweep.main builds it
    flags.add_flags(parser, sweep.SweepConfig)
    values, rest = parser.parse_known_args(["--alpha_reg", "0.1", "1", "10"])
    assert values.bc_weight == [0.1, 1.0, 10.0] and rest == []
