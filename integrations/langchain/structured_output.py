"""`with_structured_output` for LMDeployChat: bind the request that makes the model answer in a
schema, and the parser that reads the answer back.

function_calling forces one call of a tool made from the schema (the server's grammar keeps
the arguments valid); json_schema and json_mode send it as a JSON-schema response_format.
"""
from __future__ import annotations

from operator import itemgetter
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import JsonOutputKeyToolsParser, PydanticToolsParser
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass

Method = Literal["function_calling", "json_mode", "json_schema"]


def _is_pydantic(schema: Any) -> bool:
    return isinstance(schema, type) and is_basemodel_subclass(schema)


def _json_schema_format(schema: Any, strict: bool | None) -> dict[str, Any]:
    json_schema = convert_to_json_schema(schema)
    name = json_schema.get("title") or convert_to_openai_tool(schema)["function"]["name"]
    spec: dict[str, Any] = {"name": name, "schema": json_schema}
    if strict is not None:
        spec["strict"] = strict
    return {"type": "json_schema", "json_schema": spec}


def structured_output_runnable(
    model: BaseChatModel, schema: Any, method: Method, include_raw: bool, strict: bool | None
) -> Runnable:
    trace = {"kwargs": {"method": method, "strict": strict}, "schema": schema}
    if method == "function_calling":
        tool_name = convert_to_openai_tool(schema)["function"]["name"]
        llm = model.bind_tools([schema], tool_choice=tool_name, strict=strict, ls_structured_output_format=trace)
        parser: Runnable = (PydanticToolsParser(tools=[schema], first_tool_only=True) if _is_pydantic(schema)
                            else JsonOutputKeyToolsParser(key_name=tool_name, first_tool_only=True))
    elif method in ("json_mode", "json_schema"):
        # json_mode: the schema is not sent to the model as a requirement (OpenAI's JSON mode), yet
        # the answer is parsed with it; decoding follows it too (not strictly), so the parse holds.
        strictness = False if method == "json_mode" else strict
        response_format = _json_schema_format(schema, strictness)
        llm = model.bind(response_format=response_format, ls_structured_output_format=trace)
        parser = PydanticOutputParser(pydantic_object=schema) if _is_pydantic(schema) else JsonOutputParser()
    else:
        raise ValueError(f"method must be 'function_calling', 'json_mode' or 'json_schema', got {method!r}")
    if not include_raw:
        return llm | parser
    parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
    unparsed = RunnablePassthrough.assign(parsed=lambda _: None)
    return RunnableMap(raw=llm) | parsed.with_fallbacks([unparsed], exception_key="parsing_error")
