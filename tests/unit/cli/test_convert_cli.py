"""`lmdeploy-sdk convert SRC --dst-path DIR`."""
from __future__ import annotations

import pytest

from lmdeploy_sdk.cli.main import main
from lmdeploy_sdk.convert import is_complete


@pytest.mark.parametrize("flag", ["--dst-path", "--dst_path"])
def test_converts_a_hf_directory(tiny_llama, tmp_path, capsys, flag):
    dst = tmp_path / "out"
    assert main(["convert", str(tiny_llama), flag, str(dst), "--dtype", "float16"]) == 0
    assert str(dst) in capsys.readouterr().out
    assert is_complete(dst, tiny_llama, "float16")


def test_errors_exit_1_with_a_message(tiny_llama, tmp_path, capsys):
    assert main(["convert", str(tmp_path / "missing"), "--dst-path", str(tmp_path / "x")]) == 1
    assert "missing" in capsys.readouterr().err
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "f").write_text("x")
    assert main(["convert", str(tiny_llama), "--dst-path", str(taken)]) == 1
    assert "not empty" in capsys.readouterr().err


def test_missing_dst_path_and_bad_dtype_are_usage_errors(tiny_llama, tmp_path):
    with pytest.raises(SystemExit) as err:
        main(["convert", str(tiny_llama)])
    assert err.value.code == 2
    with pytest.raises(SystemExit) as err:
        main(["convert", str(tiny_llama), "--dst-path", str(tmp_path / "y"), "--dtype", "int3"])
    assert err.value.code == 2
