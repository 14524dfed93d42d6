"""`lmdeploy-sdk lite auto_awq`: flags in both spellings, help, one-line errors with exit 2, a run."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lmdeploy_sdk.cli.main import build_parser, main


def test_flags_parse_in_both_spellings_with_lmdeploy_defaults():
    parser = build_parser()
    dashed = parser.parse_args(["lite", "auto_awq", "m", "--work-dir", "w", "--calib-samples", "8",
                                "--calib-seqlen", "64", "--w-group-size", "64", "--w-sym", "--search-scale"])
    underscored = parser.parse_args(["lite", "auto_awq", "m", "--work_dir", "w", "--calib_samples", "8",
                                     "--calib_seqlen", "64", "--w_group_size", "64", "--w_sym", "--search_scale"])
    assert vars(dashed) == vars(underscored)
    default = parser.parse_args(["lite", "auto_awq", "m"])
    assert (default.work_dir, default.calib_dataset, default.calib_samples, default.calib_seqlen, default.batch_size,
            default.w_bits, default.w_group_size, default.w_sym, default.search_scale, default.device) == (
        "./work_dir", "moby-dick", 128, 2048, 1, 4, 128, False, False, None)


def test_help_names_the_flags(capsys):
    with pytest.raises(SystemExit) as err:
        main(["lite", "auto_awq", "--help"])
    assert err.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--work-dir", "--calib-dataset", "--calib-samples", "--calib-seqlen", "--batch-size", "--w-bits",
                 "--w-sym", "--w-group-size", "--search-scale", "--device", "moby-dick"):
        assert flag in text
    assert main(["lite"]) == 2  # no subcommand: its help, usage error


@pytest.mark.parametrize("extra, words", [
    (["--w-bits", "8"], "w_bits=8 is not supported"),
    (["--calib-dataset", "wikitext2"], "'wikitext2' must be downloaded"),
    (["--w-group-size", "128"], "does not divide the 64 inputs of model.layers.0.self_attn.q_proj"),
    (["--calib-samples", "0"], "calib_samples must be >= 1"),
])
def test_bad_input_is_one_line_and_exit_2(tiny_llama, tmp_path, capsys, extra, words):
    assert main(["lite", "auto_awq", str(tiny_llama), "--work-dir", str(tmp_path / "w"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lmdeploy-sdk lite auto_awq: error: ") and words in err
    assert not (tmp_path / "w").exists()


def test_missing_model_and_taken_work_dir(tiny_llama, tmp_path, capsys):
    assert main(["lite", "auto_awq", str(tmp_path / "nope"), "--work-dir", str(tmp_path / "w")]) == 2
    assert "nope" in capsys.readouterr().err
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("x")
    assert main(["lite", "auto_awq", str(tiny_llama), "--work-dir", str(taken)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_no_traceback_from_the_console_script(tmp_path):
    out = subprocess.run([sys.executable, "-m", "lmdeploy_sdk", "lite", "auto_awq", str(tmp_path / "nope"),
                          "--work-dir", str(tmp_path / "w")], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


def test_quantizes_a_tiny_model(tiny_llama, tmp_path, capsys):
    work = tmp_path / "w"
    assert main(["lite", "auto_awq", str(tiny_llama), "--work-dir", str(work), "--calib-samples", "2",
                 "--calib-seqlen", "32", "--w-group-size", "32", "--device", "cpu"]) == 0
    assert str(work) in capsys.readouterr().out
    assert json.loads((work / "config.json").read_text())["quantization_config"]["group_size"] == 32
