"""The demo server's chat-completion endpoint and its two provider-style limits."""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time

from opero.demo._endpoints import unit
from opero.demo._http import Request, Response, error, format_seconds


def chat_prompt_tokens(text: str) -> int:
    """The prompt tokens ``/v1/chat/completions`` counts for ``text``: one per 4 characters."""
    return max(1, math.ceil(len(text) / 4))


def _go_duration(seconds: float) -> str:
    """A duration as OpenAI writes it: ``"20ms"``, ``"1.5s"``, ``"6m0s"``."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60.0)
    return f"{int(minutes)}m{rest:.0f}s" if minutes else f"{rest:.3g}s"


class ChatLimits:
    """The chat endpoint's two limits: requests and tokens per window, continuously refilled.

    Each bucket holds one window's worth and refills at ``limit / window`` per second (a
    provider's per-minute limit, scaled to ``window`` seconds). A request needs one request
    and its total tokens; when either bucket cannot cover it, it is refused (429) with a
    ``Retry-After`` of the time until both can. Every answer carries ``x-ratelimit-limit-*``,
    ``-remaining-*`` and ``-reset-*`` (time until the bucket is full again) for requests and
    tokens.

    Attributes:
        accepted / tokens / throttled: requests served, tokens they used, requests refused.
        first / last: ``time.monotonic()`` of the first and last served request.
    """

    def __init__(self, requests: float, tokens: float, window: float) -> None:
        if requests <= 0 or tokens <= 0 or window <= 0:
            raise ValueError("llm_requests, llm_tokens and llm_window must be > 0")
        self.limits = {"requests": float(requests), "tokens": float(tokens)}
        self.window = float(window)
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Full buckets, zero counters."""
        self._level = dict(self.limits)
        self._at = time.monotonic()
        self.accepted = self.tokens = self.throttled = 0
        self.first = self.last = 0.0

    def take(self, cost: int) -> tuple[bool, dict[str, str]]:
        """Serve a request of ``cost`` tokens if both buckets allow it; ``(granted, headers)``."""
        with self._lock:
            now = time.monotonic()
            for kind, limit in self.limits.items():
                self._level[kind] = min(limit, self._level[kind] + (now - self._at) * limit / self.window)
            self._at = now
            need = {"requests": 1.0, "tokens": float(cost)}
            short = {k: need[k] - self._level[k] for k in need if self._level[k] < need[k]}
            granted = not short
            if granted:
                for kind in need:
                    self._level[kind] -= need[kind]
                self.accepted += 1
                self.tokens += cost
                self.first = self.first or now
                self.last = now
            else:
                self.throttled += 1
            headers = self._headers()
        if short:
            wait = max(v * self.window / self.limits[k] for k, v in short.items())
            headers["Retry-After"] = format_seconds(wait)
        return granted, headers

    def _headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for kind, limit in self.limits.items():
            level = self._level[kind]
            out[f"x-ratelimit-limit-{kind}"] = f"{limit:g}"
            out[f"x-ratelimit-remaining-{kind}"] = str(max(0, math.floor(level)))
            out[f"x-ratelimit-reset-{kind}"] = _go_duration((limit - level) * self.window / limit)
        return out

    def usage(self) -> dict[str, float]:
        """Served tokens as a share of what the token limit allowed over the busy span."""
        span = self.last - self.first
        allowed = self.limits["tokens"] * (span / self.window) if span > 0 else 0.0
        return {
            "accepted": self.accepted,
            "tokens": self.tokens,
            "throttled": self.throttled,
            "seconds": span,
            "token_use": self.tokens / allowed if allowed else 0.0,
        }


def chat(request: Request, limits: ChatLimits) -> Response:
    """``POST /v1/chat/completions``: a chat-completion-shaped answer within ``limits``."""
    try:
        payload = json.loads(request.body.decode("utf-8") or "{}")
        messages = payload.get("messages") or []
        text = " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
        max_tokens = int(payload.get("max_tokens", 256))
    except (ValueError, AttributeError, TypeError):
        return error(400, "invalid request: JSON with messages and max_tokens expected")
    if max_tokens < 1:
        return error(400, "max_tokens must be >= 1")
    prompt = chat_prompt_tokens(text)
    completion = 1 + int(unit("completion", text) * max_tokens)
    granted, headers = limits.take(prompt + completion)
    if not granted:
        return Response(429, {"error": {"type": "rate_limit_exceeded"}}, headers=headers)
    reply = {
        "id": "chatcmpl-" + hashlib.sha256(text.encode()).hexdigest()[:12],
        "object": "chat.completion",
        "model": str(payload.get("model", "demo")),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok " * min(completion, 20)}}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }
    return Response(200, reply, headers=headers)
