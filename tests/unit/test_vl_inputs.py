"""The prompt forms that carry images, and load_image's errors (no model needed)."""
from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from lmdeploy_sdk import prompts
from lmdeploy_sdk.vl import VisionConfig, load_image
from lmdeploy_sdk.vl.image_io import image_key
from lmdeploy_sdk.vl.inputs import from_messages, vision_prompt


def png(color=(255, 0, 0), size=(4, 3)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def test_load_image_takes_every_form(tmp_path):
    raw = png()
    path = tmp_path / "red.png"
    path.write_bytes(raw)
    url = "data:image/png;base64," + base64.b64encode(raw).decode()
    images = [load_image(path), load_image(str(path)), load_image(url), load_image(raw),
              load_image(Image.new("RGBA", (4, 3), (255, 0, 0, 255)))]
    assert all(i.mode == "RGB" and i.size == (4, 3) for i in images)
    assert len({image_key(i) for i in images}) == 1  # same pixels, same key
    assert image_key(load_image(png((0, 255, 0)))) != image_key(images[0])


@pytest.mark.parametrize("src, named", [
    ("/no/such/cat.jpg", "/no/such/cat.jpg: no such file"),
    ("data:image/png;base64,@@@", "base64 data is not valid"),
    ("data:image/png,abc", "must be 'data:image/...;base64,<data>'"),
    (png()[:20], "cannot read image of 20 bytes"),
    (3.5, "got float"),
])
def test_bad_images_say_what_is_wrong(src, named):
    with pytest.raises(ValueError, match=named.replace("(", r"\(").replace(".", r"\.").replace("*", r"\*")):
        load_image(src)


def test_prompt_forms():
    red = Image.new("RGB", (4, 3))
    one = vision_prompt(("describe", red))
    assert one.messages == [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "describe"}]}]
    two = vision_prompt(("compare", [red, red]))
    assert len(two.images) == 2 and two.messages[0]["content"][:2] == [{"type": "image"}] * 2
    assert vision_prompt("plain text") is None and vision_prompt([{"role": "user", "content": "hi"}]) is None
    url = "data:image/png;base64," + base64.b64encode(png()).decode()
    messages = [{"role": "user", "content": [{"type": "text", "text": "see"},
                                             {"type": "image_url", "image_url": {"url": url}}]}]
    parsed = from_messages(messages)
    assert parsed.messages[0]["content"] == [{"type": "text", "text": "see"}, {"type": "image"}]
    assert len(parsed.images) == 1


def test_a_bad_image_part_is_named():
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "/nope.png"}}]}]
    with pytest.raises(ValueError, match="message 0 content part 0: image /nope.png: no such file"):
        from_messages(messages)


def test_batches_and_the_images_keyword():
    red = Image.new("RGB", (4, 3))
    assert prompts.split_batch(("describe", "x.jpg")) == ([("describe", "x.jpg")], True)  # LMDeploy's (prompt, image)
    assert prompts.split_batch([("a", red), "b"]) == ([("a", red), "b"], False)
    assert prompts.with_images("describe", red) == ("describe", red)
    with pytest.raises(ValueError, match="images= goes with one text prompt"):
        prompts.with_images(["a", "b"], red)


def test_a_text_only_model_refuses_images_by_name():
    with pytest.raises(ValueError, match="the model is text-only"):
        prompts.encode_inputs(None, None, ("describe", "x.jpg"))


def test_vision_config_checks_its_value():
    assert VisionConfig(max_batch_size=8).max_batch_size == 8
    with pytest.raises(ValueError, match="max_batch_size=0"):
        VisionConfig(max_batch_size=0)
