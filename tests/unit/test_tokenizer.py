"""Tokenizer: end ids, chat template rendering and overrides, prompt encoding, validation."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tokenizers import Tokenizer as RustTokenizer
from tokenizers import processors

from lmdeploy_sdk.messages import ChatTemplateConfig
from lmdeploy_sdk.tokenizer import Tokenizer

IM_START, IM_END = 1, 2  # SmolLM2's <|im_start|> (its BOS) and <|im_end|> (its EOS)


@pytest.fixture(scope="module")
def tok(tokenizer_dir: Path) -> Tokenizer:
    return Tokenizer(tokenizer_dir)


def _copy_dir(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_basic_attributes(tok: Tokenizer):
    assert tok.vocab_size == len(tok.hf) == 49152
    assert tok.bos_token_id == IM_START
    assert tok.eos_token_ids == [IM_END]


def test_eos_ids_are_the_union_of_tokenizer_generation_config_and_config(tokenizer_dir, tmp_path):
    d = _copy_dir(tokenizer_dir, tmp_path / "m")
    (d / "generation_config.json").write_text(json.dumps({"eos_token_id": [IM_END, 0]}))
    (d / "config.json").write_text(json.dumps({"eos_token_id": 7, "bos_token_id": 1}))
    assert Tokenizer(d).eos_token_ids == [IM_END, 0, 7]


def test_eos_id_nested_in_text_config(tokenizer_dir, tmp_path):
    d = _copy_dir(tokenizer_dir, tmp_path / "m")
    (d / "config.json").write_text(json.dumps({"text_config": {"eos_token_id": [5, IM_END]}}))
    assert Tokenizer(d).eos_token_ids == [IM_END, 5]


def test_missing_directory_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        Tokenizer(tmp_path / "nowhere")


def test_directory_without_tokenizer_files(tmp_path):
    with pytest.raises(ValueError, match="cannot load a tokenizer from"):
        Tokenizer(tmp_path)


def test_encode_decode_roundtrip(tok: Tokenizer):
    text = "Hello, 世界! 🎉"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.decode([IM_START] + ids + [IM_END]) == text
    assert tok.decode([IM_START] + ids + [IM_END], skip_special_tokens=False) == f"<|im_start|>{text}<|im_end|>"


def test_chat_template_renders_chatml(tok: Tokenizer):
    text = tok.apply_chat_template([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}])
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    no_prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=False)
    assert no_prompt.endswith("<|im_start|>user\nhi<|im_end|>\n")


def test_content_parts_are_joined(tok: Tokenizer):
    parts = [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]
    assert tok.apply_chat_template([{"role": "user", "content": parts}]) == tok.apply_chat_template(
        [{"role": "user", "content": "Hello there"}]
    )


def test_assistant_tool_call_without_content_is_accepted(tok: Tokenizer):
    msgs = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {"name": "w"}}]},
        {"role": "tool", "content": "sunny"},
    ]
    assert "<|im_start|>tool\nsunny<|im_end|>" in tok.apply_chat_template(msgs)


def test_default_system_is_prepended_only_when_missing(tokenizer_dir):
    tok = Tokenizer(tokenizer_dir, ChatTemplateConfig(meta_instruction="You are terse."))
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}])
    assert text.startswith("<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nhi")
    own = tok.apply_chat_template([{"role": "system", "content": "Mine."}, {"role": "user", "content": "hi"}])
    assert "You are terse." not in own and "Mine." in own
    assert Tokenizer(tokenizer_dir, ChatTemplateConfig(system="Alias.")).apply_chat_template(
        [{"role": "user", "content": "x"}]
    ).startswith("<|im_start|>system\nAlias.")


def test_chat_template_override(tokenizer_dir):
    template = "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}{% if add_generation_prompt %}[bot]{% endif %}"
    tok = Tokenizer(tokenizer_dir, ChatTemplateConfig(chat_template=template))
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}]) == "[user]hi[bot]"


def test_missing_template_says_how_to_pass_one(tokenizer_dir, tmp_path):
    d = _copy_dir(tokenizer_dir, tmp_path / "m")
    (d / "chat_template.jinja").unlink()
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    tok = Tokenizer(d)
    with pytest.raises(ValueError, match=r"ChatTemplateConfig\(chat_template="):
        tok.encode_prompt("hi")
    assert tok.encode_prompt("hi", do_preprocess=False) == tok.encode("hi")


@pytest.mark.parametrize(
    "messages, match",
    [
        ("hello", "messages must be a list"),
        ([{"role": "user", "content": "a"}, "b"], "message 1 must be a dict"),
        ([{"role": "robot", "content": "a"}], "message 0: 'role' .* 'robot'"),
        ([{"content": "a"}], "message 0: 'role'"),
        ([{"role": "user"}], "message 0: 'content' is missing"),
        ([{"role": "user", "content": 3}], "message 0: 'content' must be"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], r"message 0: content\[0\]"),
    ],
)
def test_invalid_messages_name_index_and_field(tok: Tokenizer, messages, match):
    with pytest.raises(ValueError, match=match):
        tok.apply_chat_template(messages)


def test_null_content_is_empty_text(tok: Tokenizer):
    # OpenAI's schema lets content be null; it reads as an empty turn, not an error.
    assert tok.apply_chat_template([{"role": "user", "content": None}]) == tok.apply_chat_template(
        [{"role": "user", "content": ""}]
    )


def test_encode_prompt_forms(tok: Tokenizer):
    templated = tok.encode_prompt("hi")
    assert templated == tok.encode_prompt([{"role": "user", "content": "hi"}])
    assert tok.decode(templated, skip_special_tokens=False) == tok.apply_chat_template(
        [{"role": "user", "content": "hi"}]
    )
    assert tok.encode_prompt("hi", do_preprocess=False) == tok.encode("hi")


@pytest.mark.parametrize("prompt", ["", []])
def test_empty_prompt(tok: Tokenizer, prompt):
    with pytest.raises(ValueError, match="empty prompt"):
        tok.encode_prompt(prompt)


def test_wrong_prompt_type(tok: Tokenizer):
    with pytest.raises(ValueError, match="int"):
        tok.encode_prompt(42)


def test_templated_prompt_does_not_double_bos(tokenizer_dir, tmp_path):
    """A tokenizer that adds BOS when encoding and a template that writes BOS itself: one BOS."""
    d = _copy_dir(tokenizer_dir, tmp_path / "m")
    rust = RustTokenizer.from_file(str(d / "tokenizer.json"))
    rust.post_processor = processors.TemplateProcessing(
        single="<|im_start|> $A", special_tokens=[("<|im_start|>", IM_START)]
    )
    rust.save(str(d / "tokenizer.json"))
    template = "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}"
    tok = Tokenizer(d, ChatTemplateConfig(chat_template=template))
    raw = tok.encode_prompt("hi", do_preprocess=False)
    assert raw[0] == IM_START and raw.count(IM_START) == 1
    templated = tok.encode_prompt("hi")
    assert templated[0] == IM_START and templated.count(IM_START) == 1


def test_bad_word_sequences(tok: Tokenizer):
    seqs = tok.bad_word_sequences(["hello", " world", "你好"])
    assert [tok.decode(s) for s in seqs] == ["hello", " world", "你好"]
    assert all(IM_START not in s for s in seqs)
    with pytest.raises(ValueError, match="''"):
        tok.bad_word_sequences(["ok", ""])


def test_detokenizer_factory_honours_skip_special_tokens(tok: Tokenizer):
    ids = tok.encode("Hi") + [IM_END]
    for skip, expected in ((True, "Hi"), (False, "Hi<|im_end|>")):
        detok = tok.detokenizer(skip_special_tokens=skip)
        assert detok.step(ids) + detok.flush() == expected
