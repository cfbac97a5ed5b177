"""A loopback Gemini server: POST .../models/{model}:generateContent (Gemini API and Vertex AI paths).

Answers in the REST wire format (camelCase, usageMetadata, modelVersion,
responseId) with the same switchable faults as the OpenAI fake: 429 with
Retry-After, 500, slow, malformed, refusal (a SAFETY stop), content_filter (a
blocked prompt), empty, insufficient_quota (a per-day quota 429), 400, 401.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sys

from fakes.openai_server import LoopbackServer

ROUTE = re.compile(r"^/(?P<version>[^/]+)/(?:projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/"
                   r"publishers/google/)?models/(?P<model>[^/:]+):generateContent")


class FakeGemini(LoopbackServer):
    def __init__(self, model_version: str = "gemini-fake-001", **kwargs):
        super().__init__(**kwargs)
        self.model_version = model_version

    def route(self, path: str) -> bool:
        return ROUTE.match(path.split("?")[0]) is not None

    def request_text(self, body: dict) -> str:
        return " ".join(part.get("text", "") for content in body.get("contents", [])
                        for part in content.get("parts", []))

    def answer(self, path: str, body: dict, fault: str | None):
        serial = next(self.ids)
        if fault == "429":
            return 429, {"retry-after": "0.05"}, _error(429, "Resource has been exhausted (e.g. check quota).",
                                                        "RESOURCE_EXHAUSTED"), False
        if fault == "insufficient_quota":
            return 429, {}, _error(429, "You exceeded your current quota, please check your plan and billing "
                                   "details.", "RESOURCE_EXHAUSTED", [{
                                       "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                                       "violations": [{"quotaId": "GenerateRequestsPerDayPerProjectPerModel"}]}]), False
        if fault in ("500", "400", "401"):
            status = {"500": "INTERNAL", "400": "INVALID_ARGUMENT", "401": "UNAUTHENTICATED"}[fault]
            return int(fault), {}, _error(int(fault), f"fake {fault}", status), False
        if fault == "malformed":
            return 200, {}, b'{"candidates": [{"content": {"par', False
        images = [_b64(part["inlineData"]["data"]) for content in body.get("contents", [])
                  for part in content.get("parts", []) if "inlineData" in part]
        digest = hashlib.sha256(b"".join(images)).hexdigest()[:8]
        text = (f"a small test image {digest}, plain studio backdrop, flat illustration, centered, "
                f"muted palette, soft light, calm, simple shapes, 50mm, clean, no text")
        candidate = {"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP", "index": 0}
        payload = {"candidates": [candidate]}
        if fault == "refusal":
            payload = {"candidates": [{"finishReason": "SAFETY", "index": 0}]}
        elif fault == "content_filter":
            payload = {"promptFeedback": {"blockReason": "SAFETY"}}
        elif fault == "empty":
            candidate["content"]["parts"] = [{"text": "  "}]
        prompt_tokens = 258 * len(images) + len(self.request_text(body)) // 4
        out_tokens = len(text) // 4
        payload.update({
            "usageMetadata": {"promptTokenCount": prompt_tokens, "candidatesTokenCount": out_tokens,
                              "thoughtsTokenCount": 7, "totalTokenCount": prompt_tokens + out_tokens + 7},
            "modelVersion": self.model_version, "responseId": f"resp-fake-{serial}"})
        return 200, {}, json.dumps(payload).encode(), True


def _b64(data: str) -> bytes:
    """The SDK sends URL-safe base64, possibly unpadded; the REST API takes either alphabet."""
    data = data.replace("-", "+").replace("_", "/")
    return base64.b64decode(data + "=" * (-len(data) % 4))


def _error(code: int, message: str, status: str, details: list | None = None) -> bytes:
    error = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return json.dumps({"error": error}).encode()


if __name__ == "__main__":
    server = FakeGemini()
    print(server.url, flush=True)
    server.httpd.serve_forever()
    sys.exit(0)
