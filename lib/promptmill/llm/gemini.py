"""Gemini `generateContent` through google-genai, on Vertex AI or with an API key, as a CallRunner provider.

Vertex AI mode (``--project``, ``--location``) authenticates with Google
Application Default Credentials; API-key mode reads ``GOOGLE_API_KEY`` (or
``GEMINI_API_KEY``). The SDK's retries are off (one attempt): the runner
decides. A 429 whose quota is per day or asks for billing stops the run; other
429s, 408, 409, 5xx and transport errors are transient; blocked prompts and
safety stops are permanent.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from promptmill.core.errors import BadInput
from promptmill.llm.openai_chat import retry_after_seconds
from promptmill.llm.runner import Job, Permanent, QuotaExhausted, Reply, Transient, Unparseable, parse_answer

DEFAULT_MODEL = "gemini-2.5-flash"
DEFAULT_LOCATION = "us-central1"
BLOCKING_FINISH = {"SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "RECITATION", "IMAGE_SAFETY"}


def api_key_from_env() -> str | None:
    return os.environ.get("GOOGLE_API_KEY") or os.environ.get("GEMINI_API_KEY")


def make_client(project: str | None, location: str | None, base_url: str | None, timeout: float,
                credentials=None):
    """A genai.Client: Vertex AI when a project is given, else the Gemini API with a key from the environment."""
    from google import genai
    from google.genai import types

    options = types.HttpOptions(base_url=base_url, timeout=int(timeout * 1000),
                                retry_options=types.HttpRetryOptions(attempts=1))
    if project:
        return genai.Client(vertexai=True, project=project, location=location or DEFAULT_LOCATION,
                            credentials=credentials, http_options=options)
    key = api_key_from_env()
    if not key:
        raise BadInput("no Gemini endpoint configured: pass --project (Vertex AI, with Application Default "
                       "Credentials) or set GOOGLE_API_KEY in the environment")
    return genai.Client(api_key=key, http_options=options)


class GeminiGenerate:
    """`send` posts an image and an instruction; `parse` judges a stored or fresh response."""

    name = "gemini"

    def __init__(self, model: str, client, parse_text: Callable[[str, Job], object], config: dict):
        self.model = model
        self.client = client
        self.parse_text = parse_text
        self.config = config

    async def aclose(self):
        close = getattr(self.client.aio, "aclose", None)
        if close:
            await close()

    async def send(self, job: Job) -> Reply:
        from google.genai import errors, types

        image = job.payload()
        contents = [types.Part.from_bytes(data=image["image"], mime_type=image["mime_type"]),
                    job.request["instruction"]]
        try:
            response = await self.client.aio.models.generate_content(
                model=self.model, contents=contents, config=types.GenerateContentConfig(**self.config))
        except errors.APIError as exc:
            raise _status_error(exc) from exc
        except ValueError as exc:  # a body that is not JSON
            raise Transient(f"malformed response: {exc}", error_class="malformed_response") from exc
        except Exception as exc:
            if _is_transport_error(exc):
                raise Transient(f"{type(exc).__name__}: {exc}", error_class="timeout" if "Timeout" in
                                type(exc).__name__ else "connection_error") from exc
            raise
        body = response.model_dump(mode="json", by_alias=True, exclude_none=True,
                                   exclude={"sdk_http_response", "automatic_function_calling_history"})
        return reply_from_response(body)

    def parse(self, response: dict, job: Job):
        reply = reply_from_response(response)
        blocked = (response.get("promptFeedback") or {}).get("blockReason")
        if blocked:
            raise Permanent(f"prompt blocked: {blocked}", reply=reply, error_class="content_filter")
        candidates = response.get("candidates") or []
        if not candidates:
            raise Unparseable("no candidates", reply=reply)
        finish = candidates[0].get("finishReason")
        if finish in BLOCKING_FINISH:
            raise Permanent(f"stopped by the safety filter ({finish})", reply=reply, error_class="content_filter")
        parts = (candidates[0].get("content") or {}).get("parts") or []
        text = "".join(part.get("text", "") for part in parts if not part.get("thought"))
        return parse_answer(text, job, reply, self.parse_text)


def reply_from_response(response: dict) -> Reply:
    usage = response.get("usageMetadata") or {}
    thoughts = usage.get("thoughtsTokenCount")
    out = usage.get("candidatesTokenCount")
    return Reply(
        response=response, tokens_in=usage.get("promptTokenCount"),
        tokens_out=None if out is None and thoughts is None else (out or 0) + (thoughts or 0),
        tokens_cached=usage.get("cachedContentTokenCount"), tokens_reasoning=thoughts,
        resolved_model=response.get("modelVersion"), request_id=response.get("responseId"))


def _is_transport_error(exc: Exception) -> bool:
    """Timeouts and dropped connections of whichever httpx flavour the SDK runs on."""
    return isinstance(exc, (TimeoutError, ConnectionError)) or any(
        cls.__name__ in ("TransportError", "TimeoutException") for cls in type(exc).__mro__)


def _status_error(exc) -> Exception:
    status = exc.code
    details = exc.details if isinstance(exc.details, dict) else {}
    error = details.get("error") if isinstance(details.get("error"), dict) else details
    message = f"HTTP {status}: {exc.message or exc.status}"
    headers = getattr(exc.response, "headers", None)
    kwargs = {"http_status": status, "response": details or None, "error_class": exc.status or f"http_{status}"}
    if status == 429 and _quota_is_exhausted(error):
        return QuotaExhausted(f"the Gemini quota is used up ({exc.message}); wait for it to reset or "
                              "enable billing, then run again", **kwargs)
    if status in (408, 409, 429) or (status or 0) >= 500:
        return Transient(message, retry_after=retry_after_seconds(headers), **kwargs)
    return Permanent(message, **kwargs)


def _quota_is_exhausted(error: dict) -> bool:
    """A daily or billing quota won't come back by waiting a few seconds; a per-minute one will."""
    text = json.dumps(error).lower()
    return "perday" in text or "billing" in text
