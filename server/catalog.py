"""What loaded cassettes hold, in the terms a user thinks in: provider, model, streamed or not,
the last thing the user said, and which interactions were served (or never were).

Read by the admin API (as JSON) and by ``cassette-server list`` (as a table). Only runs on
admin calls and commands, never per replayed request, so it may parse recorded bodies again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .matching.index import Index
from .matching.keys import is_json, parse_json
from .models import BodyKind, Cassette, Interaction

MESSAGE_WIDTH = 80  # characters of the last user message shown in a summary

# Host (or host suffix) → provider, for the APIs cassette-server is used with most.
_PROVIDER_HOSTS = (
    ("api.openai.com", "openai"),
    ("openai.azure.com", "azure-openai"),
    ("api.anthropic.com", "anthropic"),
    ("generativelanguage.googleapis.com", "gemini"),
    ("aiplatform.googleapis.com", "vertex-ai"),
    ("api.mistral.ai", "mistral"),
    ("api.groq.com", "groq"),
    ("openrouter.ai", "openrouter"),
    ("api.deepseek.com", "deepseek"),
    ("api.x.ai", "xai"),
    ("api.cohere.com", "cohere"),
    ("api.together.xyz", "together"),
)
# Bedrock `/model/ID/invoke` (IDs may hold ':'), Gemini/Vertex `…/models/NAME:generateContent`.
_MODEL_IN_PATH = re.compile(r"/model/([^/]+)|/models/([^/:]+)")


@dataclass(frozen=True)
class InteractionSummary:
    """One interaction as a person reads it in a listing."""

    cassette: str
    id: int
    method: str
    path: str
    provider: str | None
    model: str | None
    stream: bool
    last_user_message: str | None
    status: int
    reason: str  # the recorded reason phrase (the status line sent carries the standard one)
    content_type: str
    events: int | None  # streamed pieces (SSE events, event-stream frames); None for whole bodies
    duration: float  # recorded seconds to the response headers

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "method": self.method,
            "path": self.path,
            "request": {"provider": self.provider, "model": self.model, "stream": self.stream,
                        "last_user_message": self.last_user_message},
            "status": self.status,
            "reason": self.reason,
            "content_type": self.content_type,
            "events": self.events,
            "duration": round(self.duration, 6),
        }


def summarise(interaction: Interaction, width: int = MESSAGE_WIDTH) -> InteractionSummary:
    request, response = interaction.request, interaction.response
    body = parse_json(request.body)
    body = body if is_json(body) and isinstance(body, dict) else {}
    streamed = response.kind is not BodyKind.WHOLE
    stream_flag = body.get("stream")
    message = last_user_message(body)
    return InteractionSummary(
        cassette=interaction.cassette,
        id=interaction.id,
        method=request.method,
        path=request.path,
        provider=provider_of(request.url),
        model=model_of(body, request.path),
        stream=stream_flag if isinstance(stream_flag, bool) else streamed,
        last_user_message=shorten(message, width) if message is not None else None,
        status=response.status,
        reason=response.reason,
        content_type=response.content_type,
        events=len(response.chunks) if streamed else None,
        duration=response.duration,
    )


def provider_of(url: str) -> str | None:
    """The API a recorded URL went to: a known provider's name, else the host itself."""
    host = (urlsplit(url).hostname or "").lower()
    if not host:
        return None
    if host.startswith("bedrock-runtime.") and host.endswith(".amazonaws.com"):
        return "bedrock"
    for suffix, provider in _PROVIDER_HOSTS:
        # `-` for regional hosts such as us-east5-aiplatform.googleapis.com
        if host == suffix or host.endswith(("." + suffix, "-" + suffix)):
            return provider
    return host


def model_of(body: Mapping[str, Any], path: str) -> str | None:
    """The model a request asked for: the body's ``model``, else the one named in the path."""
    model = body.get("model")
    if isinstance(model, str) and model:
        return model
    found = _MODEL_IN_PATH.search(path)
    return (found.group(1) or found.group(2)) if found else None


def last_user_message(body: Mapping[str, Any]) -> str | None:
    """The text of the last user turn, for the request shapes of OpenAI (chat and responses),
    Anthropic, Gemini and legacy completions; non-text parts show as ``[type]``."""
    for key in ("messages", "input", "contents"):
        turns = body.get(key)
        if isinstance(turns, str):
            return turns
        if isinstance(turns, list):
            for turn in reversed(turns):
                if not isinstance(turn, dict):
                    continue
                content = turn.get("content", turn.get("parts"))
                # Gemini may leave out the role of user turns; tool-call items have no content.
                if turn.get("role") == "user" or ("role" not in turn and content is not None):
                    return _text_of(content)
    prompt = body.get("prompt")
    return prompt if isinstance(prompt, str) else None


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict):
            text = part.get("text")
            kind = part.get("type") or next(iter(part), "part")
            texts.append(text if isinstance(text, str) else f"[{kind}]")
    return " ".join(texts)


def shorten(text: str, width: int) -> str:
    """One line of at most ``width`` characters (whitespace runs collapsed)."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def providers_and_models(cassette: Cassette) -> tuple[list[str], list[str]]:
    """The distinct providers and models a cassette's requests went to, in first-seen order."""
    providers: dict[str, None] = {}
    models: dict[str, None] = {}
    for interaction in cassette.interactions:
        summary = summarise(interaction)
        if summary.provider:
            providers.setdefault(summary.provider, None)
        if summary.model:
            models.setdefault(summary.model, None)
    return list(providers), list(models)


def unused(
    index: Index, usage: Mapping[Interaction, Mapping[str, int]], *, session: str | None = None, cassette: str | None = None,
) -> list[Interaction]:
    """Interactions not served yet (in ``session``, or in any session), in recorded order;
    ``usage`` is ``index.usage()``.

    ``cassette`` must be a loaded cassette's name (the caller checks).
    """
    pool: Iterable[Interaction] = index.by_name[cassette].interactions if cassette else index.interactions
    return [interaction for interaction in pool
            if not (times := usage.get(interaction)) or (session is not None and session not in times)]
