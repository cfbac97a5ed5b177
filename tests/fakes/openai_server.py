"""A loopback OpenAI-compatible server: POST /v1/chat/completions with usage, and switchable faults.

Runs in a thread of the test process (``with FakeOpenAI() as server``) or as its own
process (``python tests/fakes/openai_server.py --port 0`` prints its URL), so it
outlives a labeller that is SIGKILLed. It counts the successful billable responses
it sent; ``GET /_stats`` returns the counts as JSON.

Faults are rules: ``server.fail("429", times=2, match="fox")`` makes the next two
requests whose last user message contains "fox" answer 429 with ``retry-after-ms``.
Known faults: 429, 500, 400, 401, slow (answers after ``slow_seconds``), malformed
(a 200 whose body is not JSON), refusal, content_filter, empty (a 200 whose answer
is blank), insufficient_quota.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import random
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = ("429", "500", "400", "401", "slow", "malformed", "refusal", "content_filter", "empty",
          "insufficient_quota")


class QuietHTTPServer(ThreadingHTTPServer):
    """A client that hangs up (a killed labeller, a timeout) is normal here, not worth a traceback."""

    daemon_threads = True
    request_queue_size = 256  # many clients connect at once; a short backlog drops their SYNs for a second

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class LoopbackServer:
    """A threaded HTTP server with fault rules and counters; subclasses answer the protocol."""

    def __init__(self, latency: float = 0.0, slow_seconds: float = 2.0, retry_after_ms: int = 50,
                 port: int = 0):
        self.latency = latency
        self.slow_seconds = slow_seconds
        self.retry_after_ms = retry_after_ms
        self.rules: list[dict] = []
        self.lock = threading.Lock()
        self.billable = 0
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.seen: list[dict] = []
        self.ids = itertools.count(1)
        self.httpd = QuietHTTPServer(("127.0.0.1", port), self._handler())
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def fail(self, fault: str, times: int = 1, match: str | None = None):
        assert fault in FAULTS, fault
        with self.lock:
            self.rules.append({"fault": fault, "times": times, "match": match})

    def stats(self) -> dict:
        with self.lock:
            return {"billable": self.billable, "requests": self.requests, "in_flight": self.in_flight,
                    "max_in_flight": self.max_in_flight}

    def start(self):
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _pick_fault(self, text: str) -> str | None:
        with self.lock:
            for rule in self.rules:
                if rule["times"] > 0 and (rule["match"] is None or rule["match"] in text):
                    rule["times"] -= 1
                    return rule["fault"]
        return None

    # subclasses: route(path) -> bool, request_text(body) -> str, answer(...) -> (status, headers, body bytes, billable)
    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status: int, payload: bytes, headers: dict | None = None):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):
                if self.path == "/_stats":
                    self._send(200, json.dumps(server.stats()).encode())
                else:
                    self._send(404, b'{"error": {"message": "not found"}}')

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if not server.route(self.path):
                    self._send(404, b'{"error": {"message": "no such route", "code": "not_found"}}')
                    return
                body = json.loads(raw or b"{}")
                with server.lock:
                    server.requests += 1
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    server.seen.append({"path": self.path, "body": body, "headers": {k.lower(): v for k, v in self.headers.items()}})
                try:
                    fault = server._pick_fault(server.request_text(body))
                    if server.latency:
                        time.sleep(server.latency)
                    if fault == "slow":
                        time.sleep(server.slow_seconds)
                    status, headers, payload, billable = server.answer(self.path, body, fault)
                    try:
                        self._send(status, payload, headers)
                    except OSError:
                        return
                    if billable:
                        with server.lock:
                            server.billable += 1
                finally:
                    with server.lock:
                        server.in_flight -= 1

        return Handler


def describe_answer(text: str) -> str:
    """A deterministic labeller: `_no_object` for subject-less prompts, else the first words."""
    if "no subject" in text or not re.search(r"[a-z]{3}", text):
        return "_no_object"
    return "a plain view of " + " ".join(text.split()[:4]).lower()


WORDS = ("amber", "basalt", "cedar", "dune", "ember", "fjord", "glacier", "harbor", "iris", "juniper", "kelp",
         "lantern", "meadow", "nebula", "orchard", "prism", "quartz", "reef", "saffron", "tundra", "umber",
         "velvet", "willow", "yarrow", "zephyr", "copper", "marble", "thistle", "cobalt", "lichen", "opal",
         "heron", "badger", "falcon", "otter", "lynx", "walrus", "gecko", "ibis", "marten", "newt", "puffin")


def augment_answer(text: str, as_json: bool = False) -> str:
    """N new prompts, N read from 'Write N new prompts'; the same request always gets the same answer."""
    match = re.search(r"Write (\d+) new prompts", text)
    count = int(match.group(1)) if match else 3
    rng = random.Random(hashlib.sha256(text.encode()).hexdigest())
    prompts = [f"a {' '.join(rng.sample(WORDS, 3))} {rng.choice(WORDS)} standing by the {' '.join(rng.sample(WORDS, 3))}"
               f", oil painting" for _ in range(count)]
    if as_json:
        return json.dumps({"prompts": prompts})
    return "Here are the prompts:\n" + "\n".join(f"{i + 1}. {prompt}" for i, prompt in enumerate(prompts))


class FakeOpenAI(LoopbackServer):
    """Chat completions in OpenAI's wire format, with usage, model and request id."""

    def __init__(self, model: str = "fake-model-2025-01-01", answer=None, **kwargs):
        super().__init__(**kwargs)
        self.model = model
        self.answer_text = answer

    def route(self, path: str) -> bool:
        return path.rstrip("/").endswith("/chat/completions")

    def request_text(self, body: dict) -> str:
        messages = body.get("messages") or [{}]
        content = messages[-1].get("content") or ""
        if isinstance(content, list):
            content = " ".join(part.get("text", "") for part in content if isinstance(part, dict))
        return content

    def answer(self, path: str, body: dict, fault: str | None):
        serial = next(self.ids)
        if fault == "429":
            return 429, {"retry-after-ms": str(self.retry_after_ms), "retry-after": "0"}, _error(
                "Rate limit reached, please try again later.", "rate_limit_exceeded", "requests"), False
        if fault == "insufficient_quota":
            return 429, {}, _error("You exceeded your current quota, please check your plan and billing details.",
                                   "insufficient_quota", "insufficient_quota"), False
        if fault in ("500", "400", "401"):
            return int(fault), {}, _error(f"fake {fault}", None, "server_error" if fault == "500"
                                          else "invalid_request_error"), False
        if fault == "malformed":
            return 200, {}, b'{"id": "chatcmpl-broken", "choices": [{"mess', False
        text = self.request_text(body)
        content: str | None
        refusal = None
        finish = "stop"
        if fault == "refusal":
            content, refusal = None, "I'm sorry, I can't help with that."
        elif fault == "content_filter":
            content, finish = "", "content_filter"
        elif fault == "empty":
            content = "   "
        elif self.answer_text is not None:
            content = self.answer_text(text, serial)
        elif "Write" in text and "new prompts" in text:
            content = augment_answer(text, as_json="response_format" in body)
        else:
            content = describe_answer(text)
        prompt_tokens = sum(len(json.dumps(m.get("content"))) // 4 + 4 for m in body.get("messages", []))
        completion_tokens = len(content or refusal or "") // 4 + 1
        payload = {
            "id": f"chatcmpl-fake-{serial}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "finish_reason": finish,
                         "message": {"role": "assistant", "content": content, "refusal": refusal}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens,
                      "prompt_tokens_details": {"cached_tokens": 0},
                      "completion_tokens_details": {"reasoning_tokens": 0}},
        }
        return 200, {"x-request-id": f"req_fake_{serial}"}, json.dumps(payload).encode(), True


def _error(message: str, code: str | None, kind: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()
    server = FakeOpenAI(latency=args.latency, port=args.port)
    print(server.url, flush=True)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
