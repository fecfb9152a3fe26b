"""Mid-stream continuation, the pure part: what a client was sent, whether a cut stream may be
continued on another replica, the request that continues it, and the rewrite of its events.

A streamed answer that breaks after its first byte (the replica died, stalled, or sent an error
event) is continued by asking another replica for the rest: ``/v1/completions`` with the prompt
plus what was already emitted (token ids where the engine gives them), ``/v1/chat/completions``
with the partial assistant message to be continued. The continuation's events are rewritten
into the first stream: its id, ``created`` and ``model``, no second role delta, usage that adds
up, one ``[DONE]`` (after a comment saying the stream was continued).

It refuses where continuing could be wrong: more than one choice, tool calls already sent,
structured output, ``echo``, a token-id prompt whose emitted ids are unknown, an engine that
cannot continue a final assistant message, or the configured number of continuations reached.

No I/O and no clock: :class:`StreamFollower` is fed bytes and asked questions; the relay
(:mod:`hanode.router.relay`) does the sending.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

DONE_EVENT = b"data: [DONE]\n\n"
# The SSE comment before [DONE] of a continued stream (clients ignore comments).
CONTINUED_COMMENT = b": hanode-continued %d\n\n"

# Engines whose chat endpoint continues a final assistant message when asked with
# ``continue_final_message: true, add_generation_prompt: false`` (vLLM, SGLang, the simulator),
# or by default (llama.cpp's server "prefills" it, and echoes it at the start of its answer).
_CHAT_CONTINUES = frozenset({"vllm", "sglang", "sim", "llamacpp"})
# Engines whose /v1/completions stream gives the id of each token when asked for logprobs
# (llama.cpp: ``logprobs.content[].id``) and that take a prompt of text and ids mixed.
_TOKEN_IDS = frozenset({"llamacpp"})
# Engines that repeat a continued final assistant message at the start of their answer.
_ECHOES_PREFILL = frozenset({"llamacpp"})

# Request fields that ask for structured output (OpenAI's, and vLLM's / SGLang's guided decoding).
_STRUCTURED = (
    "guided_json",
    "guided_regex",
    "guided_choice",
    "guided_grammar",
    "structured_outputs",
    "json_schema",
    "regex",
    "ebnf",
    "grammar",
)

# OpenAI's default max_tokens of /v1/completions (vLLM and llama.cpp follow it).
COMPLETIONS_DEFAULT_MAX_TOKENS = 16

# A stream whose unfinished event grows past this is relayed as it comes and no longer
# followed (it cannot be continued): memory stays bounded whatever a replica sends.
MAX_EVENT_BYTES = 4 * 1024 * 1024
# Events relayed unread (the hot path) are read once they pass this size, or on a break.
MAX_UNREAD_BYTES = 64 * 1024
# What every error event holds: an ``"error"`` key (OpenAI, vLLM, SGLang, llama.cpp) or the
# value of ``"object": "error"`` (vLLM). Quoted, so generated text that says error (its quotes
# escaped inside a JSON string) keeps its events on the hot path, relayed unread.
_ERROR_KEY = b'"error"'


@dataclass(frozen=True, slots=True)
class ContinuationSettings:
    """``[router] stream_continuation`` and ``stream_continuation_limit``."""

    enabled: bool = True
    limit: int = 2


class StreamFollower:
    """One streamed request, across its tries: splits the upstream bytes into events, records
    what the client got, and rewrites the events of a continuation into the first stream."""

    __slots__ = (
        "_buf",
        "_echo",
        "_engine",
        "_inject_ids",
        "_raw",
        "_rewrite",
        "_tokens_before",
        "body",
        "chat",
        "continued",
        "created",
        "done",
        "error",
        "finished",
        "id",
        "model",
        "multi",
        "opaque",
        "role_sent",
        "text",
        "token_ids",
        "tokens",
        "tool_calls",
    )

    def __init__(self, body: dict[str, Any], chat: bool) -> None:
        self.body = body
        self.chat = chat
        self._buf = b""
        # Whole events relayed as they came, not parsed yet, back to back in one buffer (not
        # one object kept per read).
        self._raw = bytearray()
        self._engine = ""
        self._inject_ids = False  # this try's request asked for logprobs the client did not
        self._rewrite = False  # this try is a continuation: rewrite its events
        self._echo = ""  # prefill the engine will repeat, still to strip
        self._tokens_before = 0  # tokens emitted before this try began
        self.continued = 0  # continuations started
        self.id: Any = None
        self.created: Any = None
        self.model: Any = None
        self.text: list[str] = []  # choice 0's emitted text, in pieces
        self.token_ids: list[int] | None = [] if not chat else None  # None: unknown
        self.tokens = 0  # completion tokens emitted (ids if known, else content chunks)
        self.tool_calls = False
        self.multi = False  # a choice index other than 0 was seen
        self.role_sent = False  # the client got the assistant's role delta
        self.finished = False  # a finish_reason was sent
        self.done = False  # [DONE] was sent
        self.error: str | None = None  # the current try sent an error event
        self.opaque = False  # the stream is relayed as it comes, unfollowed (MAX_EVENT_BYTES)

    # -- the request of each try ------------------------------------------------------------
    def request(self, engine: str, raw: bytes | None = None) -> bytes:
        """The body of the next try on an ``engine`` replica: the client's body for the first
        try (``raw``, its bytes as the front door passes them on, when given and nothing is
        to be added), the continuation after a break."""
        self.sync()
        self._engine = engine
        self._buf = b""
        self.error = None
        self._tokens_before = self.tokens
        inject = not self.chat and engine in _TOKEN_IDS and self.body.get("logprobs") is None
        self._inject_ids = inject
        out = raw if raw is not None and self.continued == 0 and not inject else None
        if out is None:
            body = dict(self.body) if self.continued == 0 else self._continuation(engine)
            if inject:
                body["logprobs"] = 1  # the ids come with logprobs; stripped before the client
            out = orjson.dumps(body)
        self._rewrite = self.continued > 0
        self._echo = (
            "".join(self.text) if self._rewrite and self.chat and engine in _ECHOES_PREFILL else ""
        )
        if engine not in _TOKEN_IDS and not self.chat:
            self.token_ids = None  # this engine's tokens are not known: text from here on
        return out

    def refusal(self, limit: int, engine: str | None = None) -> str | None:
        """Why this stream must not be continued (``engine``: of the replica that would), or
        None when it may."""
        self.sync()
        body = self.body
        if self.opaque:
            return f"an event of the stream was larger than {MAX_EVENT_BYTES} bytes"
        if self.continued >= limit:
            return (
                f"the stream was continued {self.continued} times already "
                f"([router].stream_continuation_limit = {limit})"
            )
        n = body.get("n")
        if self.multi or (isinstance(n, int) and n > 1):
            return "the request asked for more than one choice (n > 1)"
        if self.tool_calls:
            return "tool calls were already sent"
        fmt = body.get("response_format")
        if (isinstance(fmt, dict) and fmt.get("type") not in (None, "text")) or any(
            body.get(k) is not None for k in _STRUCTURED
        ):
            return "the request asks for structured output (response_format / guided decoding)"
        if body.get("echo") is True:
            return "the request asks for the prompt to be echoed"
        if self.chat:
            if engine is not None and engine not in _CHAT_CONTINUES:
                return f"engine '{engine}' cannot continue a partial assistant message"
            return None
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if isinstance(prompt, str):
            return None
        if (
            _token_list(prompt)
            and self.token_ids is not None
            and (engine is None or engine in _TOKEN_IDS)
        ):
            return None
        return "the prompt is not one text, and the emitted token ids are unknown"

    def remaining(self) -> int | None:
        """Tokens the continuation may still generate (None: the client set no limit)."""
        self.sync()
        body = self.body
        limit = body.get("max_completion_tokens") if self.chat else None
        if limit is None:
            limit = body.get("max_tokens")
        if limit is None and not self.chat:
            limit = COMPLETIONS_DEFAULT_MAX_TOKENS
        if not isinstance(limit, int):
            return None
        return limit - self.tokens

    def _continuation(self, engine: str) -> dict[str, Any]:
        body = dict(self.body)
        emitted = "".join(self.text)
        left = self.remaining()
        if left is not None:
            key = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
            body[key] = max(left, 1)
        if self.chat:
            messages = list(body.get("messages") or [])
            messages.append({"role": "assistant", "content": emitted})
            body["messages"] = messages
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
            return body
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        ids = self.token_ids
        if engine in _TOKEN_IDS and ids is not None:
            # Text and ids mixed (llama.cpp): nothing emitted is tokenized again.
            head: list[Any] = list(prompt) if isinstance(prompt, list) else [prompt]
            body["prompt"] = [*head, *ids]
        else:
            body["prompt"] = f"{prompt}{emitted}"
        return body

    def ended_in_full(self) -> bool:
        """Everything the client asked for was sent but the end: no continuation is needed,
        only the end of the stream (see :meth:`closing`)."""
        self.sync()
        if self.finished:
            return True
        left = self.remaining()
        return left is not None and left <= 0

    def closing(self) -> bytes:
        """The end of a stream whose text is complete: a finish chunk if none was sent, the
        continued comment and [DONE]. (No usage chunk: the prompt's count is not known.)"""
        self.sync()
        out = b""
        if not self.finished:
            choice: dict[str, Any] = {"index": 0, "finish_reason": "length"}
            if self.chat:
                choice["delta"] = {}
            else:
                choice["text"] = ""
            out = self._event(
                {
                    "id": self.id,
                    "object": "chat.completion.chunk" if self.chat else "text_completion",
                    "created": self.created,
                    "model": self.model,
                    "choices": [choice],
                }
            )
            self.finished = True
        self.done = True
        return out + (CONTINUED_COMMENT % self.continued if self.continued else b"") + DONE_EVENT

    # -- the events ----------------------------------------------------------------------------
    def feed(self, data: bytes) -> bytes:
        """Upstream body bytes in, bytes for the client out: whole events only (a half event
        waits for its end), rewritten where needed. Nothing after an error event."""
        if self.error is not None:
            return b""
        if self.opaque:
            return data
        if b"\r" in data:  # CRLF line ends (allowed by SSE): one form for the splitting
            data = data.replace(b"\r\n", b"\n")
        buf = self._buf + data if self._buf else data
        end = buf.rfind(b"\n\n")
        if end < 0:
            if len(buf) > MAX_EVENT_BYTES:
                self.opaque = True
                self._buf = b""
                return buf
            self._buf = buf
            return b""
        self._buf = buf[end + 2 :]
        region = buf[: end + 2]
        if not self._rewrite and not self._inject_ids and _ERROR_KEY not in region:
            # The hot path (a first try): relayed as it came, read only if the stream breaks.
            raw = self._raw
            raw += region
            if len(raw) > MAX_UNREAD_BYTES:
                self.sync()  # bounded memory: a long stream is read in batches
            if not self.done and b"[DONE]" in region:
                self.done = True
            return region
        self.sync()
        out: list[bytes] = []
        for event in region.split(b"\n\n")[:-1]:
            piece = self._event_out(event)
            if piece:
                out.append(piece)
            elif self.broken:
                break
        return b"".join(out)

    def sync(self) -> None:
        """Read the events relayed unread so far (what the client got is known from here).

        What :meth:`_event_out` records of a first try's events, without building output
        (they went to the client as they came): a long stream passes here every
        ``MAX_UNREAD_BYTES``, so each event costs one JSON parse and a few lookups."""
        if not self._raw:
            return
        raw = bytes(self._raw)  # whole events, back to back
        self._raw.clear()
        loads, invalid = orjson.loads, orjson.JSONDecodeError
        for event in raw.split(b"\n\n")[:-1]:
            if event.startswith(b"data:") and b"\n" not in event:
                data = event[5:].strip()  # one line: as _data_of reads it
            else:
                lines = _data_of(event)
                if lines is None:
                    continue
                data = lines
            if data == b"[DONE]":
                self.done = True
                continue
            try:
                doc = loads(data)
            except invalid:
                continue
            if not isinstance(doc, dict):
                continue
            if doc.get("error") or doc.get("object") == "error":
                self._error_event(doc)
                continue
            self._choices(doc)
            if self.id is None:
                self.id, self.created = doc.get("id"), doc.get("created")
                self.model = doc.get("model")

    @property
    def broken(self) -> bool:
        """The current try sent an error event (its message is in :attr:`error`)."""
        return self.error is not None

    def _event_out(self, event: bytes) -> bytes:
        raw = event + b"\n\n"
        data = _data_of(event)
        if data is None:  # a comment or another field: as it came (first try only)
            return b"" if self._rewrite or not event.strip() else raw
        if data == b"[DONE]":
            self.done = True
            return (CONTINUED_COMMENT % self.continued if self.continued else b"") + DONE_EVENT
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            return b"" if self._rewrite else raw
        if not isinstance(doc, dict):
            return b"" if self._rewrite else raw
        if doc.get("error") or doc.get("object") == "error":
            self._error_event(doc)
            return b""
        changed = self._choices(doc)
        if self.id is None:  # the first event the client gets: its id is the stream's
            self.id, self.created, self.model = doc.get("id"), doc.get("created"), doc.get("model")
        if self._rewrite:
            doc["id"], doc["created"], doc["model"] = self.id, self.created, self.model
            usage = doc.get("usage")
            if isinstance(usage, dict):
                doc["usage"] = self._usage(usage)
            if changed is None:
                return b""
            return self._event(doc)
        if changed is None:
            return b""
        return self._event(doc) if changed else raw

    def _error_event(self, doc: dict[str, Any]) -> None:
        err = doc.get("error")
        message = err.get("message") if isinstance(err, dict) else err or doc.get("message")
        self.error = str(message or "the replica sent an error event")

    def _choices(self, doc: dict[str, Any]) -> bool | None:
        """Record the choices of one chunk and strip what the client must not see. True: the
        chunk changed; None: nothing is left of it for the client."""
        choices = doc.get("choices")
        if not isinstance(choices, list):
            return False
        changed = False
        kept: list[Any] = []
        want_ids = not self.chat and self._engine in _TOKEN_IDS  # as _ids and _piece decide
        rewrite_chat = self._rewrite and self.chat
        for choice in choices:
            if not isinstance(choice, dict):
                kept.append(choice)
                continue
            if choice.get("index", 0) != 0:
                self.multi = True
            if choice.get("finish_reason") is not None:
                self.finished = True
            delta = choice.get("delta")
            if isinstance(delta, dict) and delta.get("tool_calls"):
                self.tool_calls = True
            ids = self._ids(choice) if want_ids else None
            piece = self._piece(choice) if rewrite_chat else True
            if ids is not None or piece is not True:
                changed = True
            if piece is None:  # nothing left of it for the client
                continue
            if isinstance(delta, dict) and "role" in delta:
                self.role_sent = True
            text = _text_of(choice, self.chat)
            if text:
                self.text.append(text)
            if ids is not None and self.token_ids is not None:
                self.token_ids.extend(ids)
                self.tokens += len(ids)
            elif text:
                self.tokens += 1  # engines stream one token per chunk
                if not self.chat:
                    self.token_ids = None  # a token without its id: ids unknown from here
            kept.append(choice)
        if changed:
            if not kept and choices:
                return None
            doc["choices"] = kept
        return changed

    def _ids(self, choice: dict[str, Any]) -> list[int] | None:
        """The token ids of a llama.cpp completions chunk (from its logprobs); strips logprobs
        the client did not ask for. None when the chunk has none."""
        if self.chat or self._engine not in _TOKEN_IDS:
            return None
        logprobs = choice.get("logprobs")
        content = logprobs.get("content") if isinstance(logprobs, dict) else None
        if not isinstance(content, list):
            return None
        ids = [t["id"] for t in content if isinstance(t, dict) and isinstance(t.get("id"), int)]
        if self._inject_ids:
            choice["logprobs"] = None
        return ids

    def _piece(self, choice: dict[str, Any]) -> bool | None:
        """In a continuation: drop the second role delta and the engine's echo of the prefill.
        True: untouched; False: changed; None: drop the choice."""
        if not (self._rewrite and self.chat):
            return True
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return True
        changed = False
        if "role" in delta and self.role_sent:
            delta.pop("role")
            changed = True
        content = delta.get("content")
        if self._echo and isinstance(content, str) and content:
            echo = self._echo
            if echo.startswith(content):  # all of it is echo
                self._echo = echo[len(content) :]
                delta["content"] = ""
            elif content.startswith(echo):  # the echo's end and new text
                delta["content"] = content[len(echo) :]
                self._echo = ""
            else:  # not an echo after all: keep it
                self._echo = ""
            changed = True
        content = delta.get("content")
        if (
            changed
            and not content
            and not delta.get("tool_calls")
            and choice.get("finish_reason") is None
            and not delta.get("reasoning_content")
        ):
            return None
        return not changed

    def _usage(self, usage: dict[str, Any]) -> dict[str, Any]:
        """The continuation's usage as the whole stream's: its prompt held the emitted tokens,
        which are completion tokens of the stream (the total stays the continuation's)."""
        before = self._tokens_before
        prompt = usage.get("prompt_tokens")
        completion = usage.get("completion_tokens")
        if not isinstance(prompt, int) or not isinstance(completion, int):
            return usage
        out = dict(usage)
        out["prompt_tokens"] = max(prompt - before, 0)
        out["completion_tokens"] = completion + before
        out["total_tokens"] = out["prompt_tokens"] + out["completion_tokens"]
        return out

    @staticmethod
    def _event(doc: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps(doc) + b"\n\n"


def _data_of(event: bytes) -> bytes | None:
    """The data of one SSE event (its ``data:`` lines joined), or None if it has none."""
    lines = [line for line in event.split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None
    parts = [line[5:].lstrip(b" ").rstrip(b"\r") for line in lines]
    return b"\n".join(parts).strip()


def _text_of(choice: dict[str, Any], chat: bool) -> str:
    if chat:
        delta = choice.get("delta")
        content = delta.get("content") if isinstance(delta, dict) else None
        if isinstance(delta, dict) and delta.get("tool_calls"):
            return ""
        return content if isinstance(content, str) else ""
    text = choice.get("text")
    return text if isinstance(text, str) else ""


def _token_list(prompt: object) -> bool:
    return (
        isinstance(prompt, list)
        and bool(prompt)
        and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt)
    )
