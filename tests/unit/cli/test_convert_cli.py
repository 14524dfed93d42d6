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


def test_dst_path_defaults_to_workspace_as_lmdeploys(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["convert", str(tiny_llama)]) == 0
    assert (tmp_path / "workspace" / "config.json").exists()


def test_bad_dtype_is_a_usage_error(tiny_llama, tmp_path):
    with pytest.raises(SystemExit) as err:
        main(["convert", str(tiny_llama), "--dst-path", str(tmp_path / "y"), "--dtype", "int3"])
    assert err.value.code == 2


def test_keep_quantized_converts_a_gguf_file(tmp_path, capsys):
    from gguf_files import Q, tiny_gguf

    src = tiny_gguf(tmp_path / "tiny.gguf", "llama", Q.Q4_1)
    dst = tmp_path / "out"
    assert main(["convert", str(src), "--dst-path", str(dst), "--keep_quantized"]) == 0
    assert "4-bit" in capsys.readouterr().out
    assert is_complete(dst, src, "auto", keep_quantized=True)


def test_keep_quantized_with_a_non_gguf_source_is_a_one_line_error(tiny_llama, tmp_path, capsys):
    assert main(["convert", str(tiny_llama), "--dst-path", str(tmp_path / "x"), "--keep-quantized"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--keep-quantized needs a .gguf file" in err and str(tiny_llama) in err
    assert not (tmp_path / "x").exists()


def test_help_says_what_keep_quantized_does(capsys):
    with pytest.raises(SystemExit) as err:
        main(["convert", "--help"])
    assert err.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--keep-quantized" in text and "Q4_0/Q4_1" in text and "stay float" in text
