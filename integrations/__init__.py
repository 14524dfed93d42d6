"""Drop-in adapters over the in-process engine: an `openai`-shaped client and LangChain models.

`lmdeploy_sdk.integrations.openai` needs the `openai` package and
`lmdeploy_sdk.integrations.langchain` needs `langchain-core`
(`pip install "lmdeploy-sdk[integrations]"`); neither is imported until used.
"""
