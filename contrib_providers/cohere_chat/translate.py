"""OpenAI chat-completions <-> Cohere Chat API v2, as pure functions (no I/O).

Kept apart from the HTTP code so every mapping can be read (and tested) on its
own. The rules, in short:

* **Request.** ``messages`` keep their roles (``developer`` becomes ``system``);
  an assistant's ``tool_calls`` keep their shape, and the text next to them
  travels as Cohere's ``tool_plan``; ``tool`` results keep ``tool_call_id``.
  ``top_p`` becomes ``p``, ``top_k`` ``k``, ``stop`` ``stop_sequences``,
  ``max_completion_tokens``/``max_tokens`` ``max_tokens``; ``response_format``
  ``json_object`` stays, ``json_schema`` becomes ``json_object`` with the schema.
  Cohere's ranges are narrower than OpenAI's for ``p`` (0.01-0.99) and the two
  penalties (0-1), so those are clamped: OpenAI SDKs routinely send ``top_p: 1``,
  which Cohere would reject.
* **Response.** Text content is joined, ``tool_plan`` is the text beside tool
  calls, ``finish_reason`` is mapped (:data:`FINISH_REASONS`) and ``usage``
  comes from ``usage.tokens``, else ``usage.billed_units``.
* **Stream.** :class:`StreamTranslator` turns Cohere's typed SSE events into
  ``chat.completion.chunk`` dicts; the chunk for ``message-end`` carries
  ``finish_reason`` and ``usage``.

Ignored OpenAI fields (no Cohere equivalent, harmless to drop): ``user``,
``logit_bias``, ``logprobs``, ``top_logprobs``, ``parallel_tool_calls``,
``stream_options`` (usage is always reported), ``metadata``, ``store``,
``service_tier``. Fields that would change the answer in a way Cohere cannot
honour (``n`` > 1, audio, legacy ``functions``) raise :class:`UnsupportedRequest`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

#: Cohere's ``finish_reason`` -> OpenAI's. ``ERROR`` is deliberately absent: it
#: means the generation failed inside Cohere, which is reported as a (retryable)
#: failure rather than passed off as a finished answer.
FINISH_REASONS: dict[str, str] = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "MAX_TOKENS": "length",
    "TOOL_CALL": "tool_calls",
}

P_RANGE = (0.01, 0.99)
PENALTY_RANGE = (0.0, 1.0)

class UnsupportedRequest(ValueError):
    """The OpenAI request asks for something Cohere's Chat API cannot express."""


class UpstreamFailure(RuntimeError):
    """Cohere answered 200 but reported that the generation itself failed (``finish_reason: ERROR``)."""


# --------------------------------------------------------------------------- request


def to_cohere_request(
    body: Mapping[str, Any],
    *,
    stream: bool,
    safety_mode: str | None = None,
    strict_tools: bool | None = None,
) -> dict[str, Any]:
    """The Cohere v2 ``/v2/chat`` body for an OpenAI chat-completions ``body``.

    ``safety_mode`` (already Cohere's upper-case spelling) and ``strict_tools``
    come from the provider's config; ``strict_tools=None`` follows the request
    (any tool declared with ``strict: true`` turns it on).
    """
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise UnsupportedRequest("the request has no model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise UnsupportedRequest("messages must be a non-empty list")
    n = body.get("n")
    if n not in (None, 1):
        raise UnsupportedRequest("Cohere returns one choice per request; n must be 1")
    if body.get("functions") or body.get("function_call"):
        raise UnsupportedRequest("the legacy 'functions' parameter is not supported; use 'tools'")
    if body.get("audio") or body.get("modalities") not in (None, ["text"]):
        raise UnsupportedRequest("Cohere's chat models answer in text only")

    out: dict[str, Any] = {"model": model, "messages": [_message(m, i) for i, m in enumerate(messages)],
                           "stream": stream}

    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        out["max_tokens"] = max_tokens
    if body.get("temperature") is not None:
        out["temperature"] = body["temperature"]
    if body.get("top_p") is not None:
        out["p"] = _clamp(body["top_p"], *P_RANGE)
    if body.get("top_k") is not None:
        out["k"] = body["top_k"]
    if body.get("seed") is not None:
        out["seed"] = body["seed"]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    for name in ("frequency_penalty", "presence_penalty"):
        if body.get(name) is not None:
            out[name] = _clamp(body[name], *PENALTY_RANGE)

    response_format = _response_format(body.get("response_format"))
    if response_format is not None:
        out["response_format"] = response_format

    tools, tool_choice, strict_requested = _tools(body.get("tools"), body.get("tool_choice"))
    if tools:
        out["tools"] = tools
        strict = strict_requested if strict_tools is None else strict_tools
        if strict:
            out["strict_tools"] = True
    if tool_choice is not None:
        out["tool_choice"] = tool_choice
    if safety_mode is not None:
        out["safety_mode"] = safety_mode
    return out


def _clamp(value: Any, low: float, high: float) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return min(max(float(value), low), high)
    return value  # not a number: let Cohere reject it with its own message


def _text_of(content: Any, where: str) -> str:
    """Plain text of an OpenAI ``content`` that may only hold text (system, assistant)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") not in ("text", "refusal"):
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise UnsupportedRequest(f"{where}: content part of type {kind!r} is not supported here")
            texts.append(str(part.get("text", part.get("refusal", ""))))
        return "".join(texts)
    raise UnsupportedRequest(f"{where}: content must be a string or a list of parts")


def _user_content(content: Any, where: str) -> Any:
    """User content: a string stays a string; parts become Cohere's text/image_url parts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise UnsupportedRequest(f"{where}: content must be a string or a list of parts")
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text":
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "image_url":
            # Cohere's vision models take the same image_url part (URL or data: URI).
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, Mapping) else image
            item: dict[str, Any] = {"url": url}
            if isinstance(image, Mapping) and image.get("detail"):
                item["detail"] = image["detail"]
            parts.append({"type": "image_url", "image_url": item})
        else:
            raise UnsupportedRequest(f"{where}: content part of type {kind!r} is not supported by Cohere")
    return parts


def _message(message: Any, index: int) -> dict[str, Any]:
    where = f"messages[{index}]"
    if not isinstance(message, Mapping):
        raise UnsupportedRequest(f"{where} must be an object")
    role = message.get("role")
    if role in ("system", "developer"):
        return {"role": "system", "content": _text_of(message.get("content"), where)}
    if role == "user":
        return {"role": "user", "content": _user_content(message.get("content"), where)}
    if role == "assistant":
        text = _text_of(message.get("content"), where)
        calls = message.get("tool_calls") or []
        if not calls:
            return {"role": "assistant", "content": text}
        out: dict[str, Any] = {"role": "assistant", "tool_calls": [_tool_call(c, where) for c in calls]}
        if text:
            # Cohere keeps the words that come with tool calls as the turn's plan.
            out["tool_plan"] = text
        return out
    if role == "tool":
        call_id = message.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise UnsupportedRequest(f"{where}: a tool message needs tool_call_id")
        content = message.get("content")
        if isinstance(content, list):
            content = [{"type": "text", "text": _text_of([p], where)} for p in content]
        elif not isinstance(content, str):
            content = json.dumps(content)
        return {"role": "tool", "tool_call_id": call_id, "content": content}
    raise UnsupportedRequest(f"{where}: role {role!r} is not supported by Cohere")


def _tool_call(call: Any, where: str) -> dict[str, Any]:
    fn = call.get("function") if isinstance(call, Mapping) else None
    if not isinstance(fn, Mapping) or not fn.get("name"):
        raise UnsupportedRequest(f"{where}: each tool call needs function.name")
    arguments = fn.get("arguments", "{}")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    return {"id": call.get("id") or f"{fn['name']}_{uuid.uuid4().hex[:8]}", "type": "function",
            "function": {"name": fn["name"], "arguments": arguments}}


def _tools(tools: Any, tool_choice: Any) -> tuple[list[dict[str, Any]], str | None, bool]:
    """Cohere ``tools``, ``tool_choice`` and whether any tool asked for strict schemas."""
    out: list[dict[str, Any]] = []
    strict = False
    for i, tool in enumerate(tools or []):
        fn = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(tool, Mapping) or tool.get("type", "function") != "function" or not isinstance(fn, Mapping):
            raise UnsupportedRequest(f"tools[{i}]: only function tools are supported by Cohere")
        if not fn.get("name"):
            raise UnsupportedRequest(f"tools[{i}]: function.name is required")
        definition: dict[str, Any] = {"name": fn["name"],
                                      "parameters": fn.get("parameters") or {"type": "object", "properties": {}}}
        if fn.get("description"):
            definition["description"] = fn["description"]
        strict = strict or bool(fn.get("strict"))
        out.append({"type": "function", "function": definition})

    if tool_choice in (None, "auto"):
        return out, None, strict
    if tool_choice == "none":
        return out, ("NONE" if out else None), strict
    if tool_choice == "required":
        if not out:
            raise UnsupportedRequest("tool_choice 'required' needs tools")
        return out, "REQUIRED", strict
    if isinstance(tool_choice, Mapping) and isinstance(tool_choice.get("function"), Mapping):
        # Cohere cannot name the tool to call; offering only that tool and requiring
        # a call has the same effect.
        name = tool_choice["function"].get("name")
        chosen = [t for t in out if t["function"]["name"] == name]
        if not chosen:
            raise UnsupportedRequest(f"tool_choice names {name!r}, which is not among the tools")
        return chosen, "REQUIRED", strict
    raise UnsupportedRequest(f"tool_choice {tool_choice!r} is not supported")


def _response_format(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, Mapping) else None
    if kind == "text":
        return None  # Cohere's default
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        spec = value.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        if not isinstance(schema, Mapping):
            raise UnsupportedRequest("response_format json_schema needs json_schema.schema")
        # Cohere always enforces the schema it is given, so OpenAI's `strict` has nothing to map to.
        return {"type": "json_object", "json_schema": dict(schema)}
    raise UnsupportedRequest(f"response_format type {kind!r} is not supported by Cohere")


# --------------------------------------------------------------------------- response


def usage_from(usage: Any) -> dict[str, int] | None:
    """OpenAI ``usage`` from Cohere's: the model's own ``tokens`` when present, else ``billed_units``."""
    if not isinstance(usage, Mapping):
        return None
    for key in ("tokens", "billed_units"):
        counts = usage.get(key)
        if isinstance(counts, Mapping) and ("input_tokens" in counts or "output_tokens" in counts):
            prompt = int(counts.get("input_tokens") or 0)
            completion = int(counts.get("output_tokens") or 0)
            return {"prompt_tokens": prompt, "completion_tokens": completion,
                    "total_tokens": prompt + completion}
    return None


def finish_reason(reason: Any, detail: Any = None) -> str:
    """OpenAI's finish_reason for Cohere's; raises :class:`UpstreamFailure` for ``ERROR``."""
    if reason == "ERROR":
        raise UpstreamFailure(f"Cohere reported that the generation failed{': ' + str(detail) if detail else ''}")
    return FINISH_REASONS.get(str(reason), "stop")


def from_cohere_response(data: Mapping[str, Any], *, model: str, created: int | None = None) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` for a non-streamed Cohere v2 chat response."""
    message = _obj(data.get("message"))
    texts, thoughts = [], []
    for item in message.get("content") or []:
        if isinstance(item, Mapping) and item.get("type") == "text":
            texts.append(str(item.get("text", "")))
        elif isinstance(item, Mapping) and item.get("type") == "thinking":
            thoughts.append(str(item.get("thinking", "")))
    calls = [
        {"id": c.get("id") or f"call_{uuid.uuid4().hex[:12]}", "type": "function",
         "function": {"name": (c.get("function") or {}).get("name", ""),
                      "arguments": _arguments((c.get("function") or {}).get("arguments"))}}
        for c in message.get("tool_calls") or [] if isinstance(c, Mapping)
    ]
    text = "".join(texts)
    if calls and not text:
        text = message.get("tool_plan") or ""
    out_message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
    if calls:
        out_message["tool_calls"] = calls
    if thoughts:
        out_message["reasoning_content"] = "".join(thoughts)
    result: dict[str, Any] = {
        "id": data.get("id") or f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": [{"index": 0, "message": out_message,
                     "finish_reason": finish_reason(data.get("finish_reason"), data.get("error")),
                     "logprobs": None}],
    }
    usage = usage_from(data.get("usage"))
    if usage is not None:
        result["usage"] = usage
    return result


def _obj(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a JSON object, else an empty one (upstream JSON is never trusted to be well-formed)."""
    return value if isinstance(value, Mapping) else {}


def _arguments(value: Any) -> str:
    if value is None:
        return "{}"
    return value if isinstance(value, str) else json.dumps(value)


# --------------------------------------------------------------------------- stream


class StreamTranslator:
    """Turns Cohere v2 stream events (parsed ``data:`` objects) into OpenAI chunks.

    Feed events in order with :meth:`feed`; each returns the chunks to send (often
    none: ``content-start``/``-end``, ``tool-call-end`` and citation events carry
    nothing an OpenAI client reads). :attr:`finished` is true once ``message-end``
    arrived; a stream that ends before it was cut short.
    """

    def __init__(self, *, model: str, created: int | None = None) -> None:
        self.model = model
        self.created = int(time.time()) if created is None else created
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.finished = False
        #: Cohere's tool-call index -> the OpenAI ``tool_calls[].index`` given to it.
        self._tool_index: dict[Any, int] = {}

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    def feed(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        delta = _obj(event.get("delta"))
        message = _obj(delta.get("message"))

        if kind == "message-start":
            if event.get("id"):
                self.id = str(event["id"])
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content-delta":
            content = _obj(message.get("content"))
            if content.get("text"):
                return [self._chunk({"content": content["text"]})]
            if content.get("thinking"):
                return [self._chunk({"reasoning_content": content["thinking"]})]
            return []
        if kind == "tool-plan-delta":
            plan = message.get("tool_plan")
            return [self._chunk({"content": plan})] if plan else []
        if kind == "tool-call-start":
            call = _obj(message.get("tool_calls"))
            fn = _obj(call.get("function"))
            index = len(self._tool_index)
            self._tool_index[event.get("index", index)] = index
            return [self._chunk({"tool_calls": [{
                "index": index, "id": call.get("id") or f"call_{uuid.uuid4().hex[:12]}", "type": "function",
                "function": {"name": fn.get("name", ""), "arguments": _arguments(fn.get("arguments") or "")},
            }]})]
        if kind == "tool-call-delta":
            call = _obj(message.get("tool_calls"))
            fn = _obj(call.get("function"))
            arguments = fn.get("arguments")
            if not arguments:
                return []
            index = self._tool_index.get(event.get("index"), max(len(self._tool_index) - 1, 0))
            return [self._chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]})]
        if kind == "message-end":
            self.finished = True
            chunk = self._chunk({}, finish_reason(delta.get("finish_reason"), delta.get("error")))
            usage = usage_from(delta.get("usage"))
            if usage is not None:
                chunk["usage"] = usage
            return [chunk]
        return []
