"""Chat completions on OpenAI or any OpenAI-compatible server (vLLM, Ollama), as a CallRunner provider.

The SDK's own retries are off (``max_retries=0``): the runner decides. Errors
become the runner's classes: 429 (with Retry-After), 408, 409, 5xx, timeouts,
connection errors and garbled bodies are transient; OpenAI's
``insufficient_quota`` 429 stops the run; other 4xx, refusals and content
filters are permanent.
"""

from __future__ import annotations

import email.utils
import json
import os
import time
from collections.abc import Callable

from promptmill.core.errors import BadInput
from promptmill.llm.runner import Job, Permanent, QuotaExhausted, Reply, Transient, parse_answer

DEFAULT_TIMEOUT = 120.0


def require_endpoint(base_url: str | None):
    """A bad command, not a bad item: without a key or a server there is nothing to call."""
    if not base_url and not os.environ.get("OPENAI_API_KEY"):
        raise BadInput("no OpenAI endpoint configured: set OPENAI_API_KEY in the environment, "
                       "or pass --base-url of an OpenAI-compatible server (vLLM, Ollama)")


def retry_after_seconds(headers) -> float | None:
    """The wait a 429/503 asks for: `retry-after-ms`, else `retry-after` in seconds or as an HTTP date."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return float(value) / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time()) if when else None


class OpenAIChat:
    """`send` posts a job's chat-completions body; `parse` judges a stored or fresh response."""

    name = "openai"

    def __init__(self, model: str, parse_text: Callable[[str, Job], object], base_url: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT):
        from openai import AsyncOpenAI

        self.model = model
        self.parse_text = parse_text
        self.client = AsyncOpenAI(api_key=os.environ.get("OPENAI_API_KEY") or "not-needed", base_url=base_url,
                                  timeout=timeout, max_retries=0)

    async def aclose(self):
        await self.client.close()

    async def send(self, job: Job) -> Reply:
        import openai

        body = job.payload() if callable(job.payload) else job.request
        try:
            # The body is plain JSON already: posting it skips the SDK's typed transform of every
            # message, which costs more CPU than the rest of the call; auth, timeouts and error
            # classes are still the SDK's.
            raw = await self.client.post("/chat/completions", body=body, cast_to=_http_response_class())
        except openai.APIStatusError as exc:
            raise _status_error(exc) from exc
        except openai.APITimeoutError as exc:
            raise Transient("request timed out", error_class="timeout") from exc
        except openai.APIConnectionError as exc:
            raise Transient(f"connection error: {exc}", error_class="connection_error") from exc
        text = raw.text
        try:
            response = json.loads(text)
        except ValueError as exc:
            raise Transient(f"malformed JSON in the response: {text[:200]!r}", http_status=raw.status_code,
                            error_class="malformed_response") from exc
        if not isinstance(response, dict) or not isinstance(response.get("choices"), list):
            raise Transient(f"unexpected response shape: {text[:200]!r}", http_status=raw.status_code,
                            error_class="malformed_response")
        return reply_from_response(response, raw.status_code, raw.headers.get("x-request-id"))

    def parse(self, response: dict, job: Job):
        choice = (response.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        reply = reply_from_response(response)
        if message.get("refusal"):
            raise Permanent(f"refused: {message['refusal']}", reply=reply, error_class="refusal")
        if choice.get("finish_reason") == "content_filter":
            raise Permanent("stopped by the content filter", reply=reply, error_class="content_filter")
        return parse_answer(message.get("content"), job, reply, self.parse_text)


def _http_response_class():
    """The Response class of the SDK's HTTP library (httpx2, which openai 3 is built on)."""
    from httpx2 import Response

    return Response


def reply_from_response(response: dict, http_status: int = 200, request_id: str | None = None) -> Reply:
    usage = response.get("usage") or {}
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return Reply(
        response=response, http_status=http_status, tokens_in=usage.get("prompt_tokens"),
        tokens_out=usage.get("completion_tokens"), tokens_cached=prompt_details.get("cached_tokens"),
        tokens_reasoning=completion_details.get("reasoning_tokens"), resolved_model=response.get("model"),
        request_id=request_id or response.get("id"))


def _status_error(exc) -> Exception:
    status = exc.status_code
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error") if isinstance(body.get("error"), dict) else body
    code = error.get("code") or error.get("type")
    message = f"HTTP {status}: {error.get('message') or exc.message}"
    kwargs = {"http_status": status, "response": body or None, "error_class": code or f"http_{status}"}
    if status == 429 and code == "insufficient_quota":
        return QuotaExhausted("the OpenAI account has no quota left (insufficient_quota); "
                              "add credit or raise the limit, then run again", **kwargs)
    if status in (408, 409, 429) or status >= 500:
        return Transient(message, retry_after=retry_after_seconds(exc.response.headers), **kwargs)
    return Permanent(message, **kwargs)
