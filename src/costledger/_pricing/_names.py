"""Model and provider names as callers write them: prefixes, aliases and dated snapshots."""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = [
    "GENAI_PROVIDER",
    "LITELLM_PREFIX",
    "LITELLM_PROVIDER_ALIASES",
    "ModelName",
    "canonical_provider",
    "litellm_provider",
    "split_name",
    "strip_date_suffix",
]

# Provider names as LiteLLM, LangChain and the SDKs spell them -> genai-prices provider id.
GENAI_PROVIDER: dict[str, str] = {
    "openai": "openai",
    "text-completion-openai": "openai",
    "azure": "azure",
    "azure_ai": "azure",
    "azure_openai": "azure",
    "azure-openai": "azure",
    "anthropic": "anthropic",
    "bedrock": "aws",
    "bedrock_converse": "aws",
    "aws": "aws",
    "amazon_bedrock": "aws",
    "vertex_ai": "google",
    "vertex_ai_beta": "google",
    "vertexai": "google",
    "vertex": "google",
    "google": "google",
    "google_genai": "google",
    "google_vertexai": "google",
    "google_anthropic_vertex": "google",
    "gemini": "google",
    "openrouter": "openrouter",
    "groq": "groq",
    "mistral": "mistral",
    "mistralai": "mistral",
    "deepseek": "deepseek",
    "xai": "x-ai",
    "x-ai": "x-ai",
    "together_ai": "together",
    "together": "together",
    "togetherai": "together",
    "fireworks_ai": "fireworks",
    "fireworks": "fireworks",
    "cohere": "cohere",
    "cohere_chat": "cohere",
    "perplexity": "perplexity",
    "cerebras": "cerebras",
    "databricks": "databricks",
    "moonshot": "moonshotai",
    "moonshotai": "moonshotai",
    "novita": "novita",
    "voyage": "voyageai",
    "voyageai": "voyageai",
    "cloudflare": "cloudflare",
    "zai": "zai",
    "zhipuai": "zhipuai",
    "minimax": "minimax",
    "baseten": "baseten",
    "ovhcloud": "ovhcloud",
}

_KNOWN_PROVIDERS = frozenset(GENAI_PROVIDER.values())


def canonical_provider(provider: str) -> str | None:
    """The genai-prices id of a provider name, ``None`` for a provider neither table knows.

    LiteLLM's ``litellm_provider`` values such as ``vertex_ai-language-models`` map
    through their first word.
    """
    name = provider.strip().lower()
    found = GENAI_PROVIDER.get(name) or GENAI_PROVIDER.get(name.split("-")[0])
    if found is None and name in _KNOWN_PROVIDERS:
        found = name
    return found


# genai-prices provider id -> the prefix LiteLLM's price map uses for that provider's keys.
LITELLM_PREFIX: dict[str, str] = {
    "aws": "bedrock",
    "google": "vertex_ai",
    "x-ai": "xai",
    "together": "together_ai",
    "fireworks": "fireworks_ai",
    "moonshotai": "moonshot",
}


# Provider names callers use -> the ``litellm_provider`` LiteLLM's price map lists those
# providers' entries under, for providers genai-prices does not know (those it knows go
# through ``GENAI_PROVIDER``): LiteLLM's own ``custom_llm_provider`` spellings whose
# entries carry the base name, and LangChain's ``ls_provider`` where it differs.
LITELLM_PROVIDER_ALIASES: dict[str, str] = {
    "ollama_chat": "ollama",
    "sagemaker_chat": "sagemaker",
    "watsonx_text": "watsonx",
    "nvidia": "nvidia_nim",  # LangChain's ChatNVIDIA
}


def litellm_provider(provider: str) -> str:
    """``provider`` as LiteLLM's price map spells it in ``litellm_provider`` (lowercase)."""
    name = provider.strip().lower()
    return LITELLM_PROVIDER_ALIASES.get(name, name)


class ModelName(NamedTuple):
    """A model name taken apart.

    ``full`` is the name as given (stripped); ``ref`` the name without a provider
    prefix; ``provider`` the provider named by the caller or the prefix, as written
    (lowercase); ``prefixed`` whether ``ref`` lost a prefix.
    """

    full: str
    ref: str
    provider: str | None
    prefixed: bool


def split_name(model: str, provider: str | None) -> ModelName:
    """Split ``openai/gpt-4.1`` into provider ``openai`` and model ``gpt-4.1``.

    Only a known provider counts as a prefix, so ``meta-llama/Llama-3`` stays whole.
    With an explicit ``provider`` the prefix is dropped only when it names the same
    provider: ``anthropic/claude-3.5-sonnet`` on OpenRouter is OpenRouter's model id.
    Google's resource form ``models/gemini-2.5-pro`` loses its ``models/`` too.
    """
    full = model.strip()
    given = provider.strip().lower() if provider else None
    if given == "litellm":  # LiteLLM's own label carries no provider information
        given = None
    ref, named, prefixed = full, given, False
    head, sep, rest = full.partition("/")
    head = head.lower()
    if sep and rest and head in GENAI_PROVIDER:
        if given is None:
            ref, named, prefixed = rest, head, True
        elif GENAI_PROVIDER.get(given, given) == GENAI_PROVIDER[head]:
            ref, prefixed = rest, True
    if len(ref) > 7 and ref[:7].lower() == "models/":
        # Google's SDKs and REST API name models as resources: ``models/gemini-2.5-pro``
        ref, prefixed = ref[7:], True
    return ModelName(full, ref, named, prefixed)


_DATE_SUFFIX = re.compile(r"^(?P<base>.+?)[-@](?:\d{4}-\d{2}-\d{2}|\d{8})$")


def strip_date_suffix(model: str) -> str | None:
    """``gpt-5-2099-01-01`` -> ``gpt-5``; ``None`` when there is no date suffix to strip."""
    m = _DATE_SUFFIX.match(model)
    return m.group("base") if m else None
