"""Acceptance 3: LangChain chains on the embedded SmolLM2, in-process and remote; sessions
reuse the KV cache without changing answers."""
from __future__ import annotations

import asyncio

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, PromptTemplate

from lmdeploy_sdk import GenerationConfig
from lmdeploy_sdk.integrations.langchain import LMDeploy, LMDeployChat

pytestmark = pytest.mark.slow

PROMPT = ChatPromptTemplate.from_messages([
    ("system", "You are a geography teacher. Answer in one sentence."),
    ("human", "What is the capital of {country}?"),
])


@pytest.fixture(scope="module")
def chat(smol_pipe):
    model = LMDeployChat(pipeline=smol_pipe, temperature=0, max_tokens=24)
    yield model
    model.close()


@pytest.fixture(scope="module")
def llm(smol_pipe):
    model = LMDeploy(pipeline=smol_pipe, temperature=0, max_tokens=12)
    yield model
    model.close()


def test_chat_chain_invokes_and_streams(chat):
    chain = PROMPT | chat | StrOutputParser()
    answer = chain.invoke({"country": "France"})
    assert "Paris" in answer
    pieces = list(chain.stream({"country": "France"}))
    assert len([p for p in pieces if p]) > 3 and "".join(pieces) == answer  # token by token, same text


def test_chat_chain_async_and_batch(chat):
    chain = PROMPT | chat | StrOutputParser()
    countries = [{"country": "France"}, {"country": "Italy"}]

    async def run() -> tuple[list[str], str]:
        batch = await chain.abatch(countries)
        streamed = "".join([p async for p in chain.astream(countries[1])])
        return batch, streamed

    batch, streamed = asyncio.run(run())
    assert batch == chain.batch(countries)
    assert "Paris" in batch[0] and streamed == batch[1]


def test_remote_chat_chain_equals_in_process(chat, smol_server):
    remote = LMDeployChat(base_url=smol_server, temperature=0, max_tokens=24)
    try:
        assert (PROMPT | remote | StrOutputParser()).invoke({"country": "Japan"}) == \
            (PROMPT | chat | StrOutputParser()).invoke({"country": "Japan"})
    finally:
        remote.close()


def test_session_reuses_kv_and_keeps_answers(chat):
    history = [HumanMessage("My name is Ada. Say hello to me.")]
    first = chat.invoke(history, session_id=501)
    history += [first, HumanMessage("What is my name?")]
    try:
        second = chat.invoke(history, session_id=501)
    finally:
        chat.end_session(501)
    assert first.usage_metadata["input_token_details"]["cache_read"] == 0
    # The second turn reuses everything up to the new message: prompt and first answer.
    assert second.usage_metadata["input_token_details"]["cache_read"] >= first.usage_metadata["input_tokens"]
    without_session = chat.invoke(history)
    assert without_session.usage_metadata["input_token_details"]["cache_read"] == 0
    assert second.content == without_session.content


def test_stop_sequences(chat):
    answer = chat.invoke("What is the capital of France?")
    stopped = chat.invoke("What is the capital of France?", stop=["capital"])
    assert "capital" in answer.content and "capital" not in stopped.content
    assert answer.content.startswith(stopped.content)


def test_llm_in_a_prompt_chain_equals_the_pipeline(llm, smol_pipe):
    prompt = PromptTemplate.from_template("The capital of {country} is")
    chain = prompt | llm
    texts = chain.batch([{"country": "France"}, {"country": "Germany"}])
    expected = smol_pipe(["The capital of France is", "The capital of Germany is"],
                         gen_config=GenerationConfig(max_new_tokens=12), do_preprocess=False)
    assert texts == [r.text for r in expected]
    assert "".join(chain.stream({"country": "France"})) == texts[0]
    assert asyncio.run(chain.ainvoke({"country": "Germany"})) == texts[1]


def test_remote_llm_equals_in_process(llm, smol_server):
    remote = LMDeploy(base_url=smol_server, temperature=0, max_tokens=12)
    try:
        assert remote.invoke("Once upon a time") == llm.invoke("Once upon a time")
    finally:
        remote.close()


def test_llm_result_carries_usage(llm):
    result = llm.generate(["The sea is"])
    usage = result.llm_output["token_usage"]
    assert usage["completion_tokens"] == 12 and usage["prompt_tokens"] > 0
    assert result.generations[0][0].generation_info["finish_reason"] == "length"


def test_tool_calls_in_history_are_sent(chat):
    """A conversation with a tool call and its result goes through the chat template."""
    history = [
        HumanMessage("What is 1 + 2?"),
        AIMessage("", tool_calls=[{"name": "add", "args": {"a": 1, "b": 2}, "id": "c1", "type": "tool_call"}]),
        {"role": "tool", "content": "3", "tool_call_id": "c1"},
    ]
    assert chat.invoke(history).content
