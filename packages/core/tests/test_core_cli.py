"""`ffnet` console script."""
import json

from ffnet.cli import main


def test_info_json_reports_train_and_fused_counts(capsys):
    assert main(["info", "ffnet_test", "--img-size", "64", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["model"] == "ffnet_test" and row["img_size"] == 64
    assert row["params_fused"] < row["params_train"] and row["macs_fused"] <= row["macs_train"]


def test_info_table(capsys):
    assert main(["info", "ffnet_test", "--img-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "fused" in out and "GMACs" in out


def test_bad_input_exits_2_with_one_line(capsys):
    assert main(["info", "ffnet_99"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown model" in err[0]
    assert main(["info", "ffnet_1", "--img-size", "100"]) == 2


def test_list(capsys):
    assert main(["list"]) == 0
    assert capsys.readouterr().out.split() == ["ffnet_1", "ffnet_2", "ffnet_3", "ffnet_4"]
