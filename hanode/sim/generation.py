"""Simulated generations over time: queueing, TTFT/TPOT timing, streaming, stream death.

No task per request: a job is a chain of ``loop.call_at`` timers. With zero delays and a free
slot the answer is written synchronously, so the simulator stays a cheap benchmark floor.
"""

from __future__ import annotations

import asyncio
import time

from hanode.http.responder import Responder
from hanode.sim.engine_state import EngineState
from hanode.sim.faults import FaultDecision
from hanode.sim.metrics_page import SimMetrics
from hanode.sim.shapes import DONE, ChunkWriter, IdMaker, completion_body
from hanode.sim.textgen import join_tokens, next_words, random_words, token_deltas
from hanode.sim.validate import GenRequest

STREAM_DEATH_AFTER = 3  # chunks a dying stream delivers (fewer when the answer is shorter)


def _lead(req: GenRequest, choice: int) -> bool:
    """Does choice ``choice`` start with a space (its prompt ends in a word)?"""
    k = choice // max(req.n, 1)
    return req.leads[k] if k < len(req.leads) else False


class Timing:
    """Mutable at run time through /admin/config."""

    __slots__ = ("slow_factor", "tpot_s", "ttft_s")

    def __init__(self, ttft_ms: float, tpot_ms: float, slow_factor: float) -> None:
        self.ttft_s = ttft_ms / 1000.0
        self.tpot_s = tpot_ms / 1000.0
        self.slow_factor = slow_factor


class Generator:
    """Runs generation requests against the simulated engine."""

    __slots__ = ("engine", "ids", "jobs", "loop", "metrics", "model", "timing")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        model: str,
        engine: EngineState[Job],
        metrics: SimMetrics,
        timing: Timing,
    ) -> None:
        self.loop = loop
        self.model = model
        self.engine = engine
        self.metrics = metrics
        self.timing = timing
        self.ids = IdMaker()
        self.jobs: set[Job] = set()

    def texts(self, req: GenRequest, empty: bool) -> list[list[str]]:
        """Words of every choice, prompt-major (choice index = prompt * n + i)."""
        if empty:
            return [[] for _ in range(len(req.prompts) * req.n)]
        out: list[list[str]] = []
        for context in req.contexts:
            for i in range(req.n):
                if req.deterministic:
                    out.append(next_words(req.seed or 0, i, context, req.max_tokens))
                else:
                    out.append(random_words(req.max_tokens))
        return out

    def submit(self, req: GenRequest, responder: Responder, fault: FaultDecision) -> None:
        timing = self.timing
        ttft_s, tpot_s = timing.ttft_s, timing.tpot_s
        if fault.slow:
            ttft_s *= timing.slow_factor
            tpot_s *= timing.slow_factor
        words = self.texts(req, fault.empty)
        now = self.loop.time()
        # A stall is a stream's fault only (an engine that hangs mid-stream); death cuts any.
        cut = fault.stream_death or (fault.stream_stall and req.stream)
        if ttft_s == 0.0 and tpot_s == 0.0 and not cut and self.engine.has_room:
            self._answer_now(req, responder, words, now)
            return
        stall = fault.stream_stall and req.stream and not fault.stream_death
        job = Job(self, req, responder, words, now, ttft_s, tpot_s, cut, stall)
        self.jobs.add(job)
        responder.on_abort(job.client_gone)
        if req.stream:
            responder.start(200, b"text/event-stream")
        if self.engine.submit(job):
            job.start()

    def _answer_now(
        self, req: GenRequest, responder: Responder, words: list[list[str]], now: float
    ) -> None:
        rid = self.ids.next("chatcmpl" if req.chat else "cmpl")
        created = int(time.time())
        generated = sum(len(w) for w in words)
        prompt = sum(req.prompt_tokens)
        reason = "length" if generated else "stop"
        if req.stream:
            writer = ChunkWriter(rid, created, self.model, req.chat)
            parts = [writer.role()] if req.chat else []
            deltas = token_deltas(words[0], _lead(req, 0))
            parts.extend(writer.token(d) for d in deltas)
            parts.append(writer.token("", reason))
            if req.include_usage:
                parts.append(writer.usage(prompt, generated))
            parts.append(DONE)
            responder.start(200, b"text/event-stream")
            responder.write(b"".join(parts))
            responder.end()
        else:
            texts = [join_tokens(w, _lead(req, i)) for i, w in enumerate(words)]
            responder.send(
                200,
                completion_body(
                    rid, created, self.model, texts, reason, prompt, generated, req.chat
                ),
            )
        m = self.metrics
        m.request_done(prompt, generated, reason)
        m.ttft.observe(0.0)
        if generated > 1:
            m.tpot.observe(0.0)
        m.e2e.observe(self.loop.time() - now)

    def finished(self, job: Job) -> None:
        """A running job is over (answered, aborted or its client left): free its slot."""
        self.jobs.discard(job)
        for nxt in self.engine.release():
            nxt.start()

    def shutdown(self) -> None:
        for job in list(self.jobs):
            job.cancel()
        self.jobs.clear()


class Job:
    """One generation request in the queue or in the running batch."""

    __slots__ = (
        "_gen",
        "_next_token",
        "_timer",
        "_writer",
        "arrival",
        "death_after",
        "done",
        "first_at",
        "req",
        "responder",
        "stall",
        "started_at",
        "tpot_s",
        "ttft_s",
        "words",
    )

    def __init__(
        self,
        gen: Generator,
        req: GenRequest,
        responder: Responder,
        words: list[list[str]],
        arrival: float,
        ttft_s: float,
        tpot_s: float,
        stream_death: bool,
        stall: bool = False,
    ) -> None:
        """``stream_death``: the answer stops after STREAM_DEATH_AFTER chunks: the connection
        is reset there, or with ``stall`` it stays open and silent (a hung engine)."""
        self._gen = gen
        self.req = req
        self.responder = responder
        self.words = words
        self.arrival = arrival
        self.ttft_s = ttft_s
        self.tpot_s = tpot_s
        n = len(words[0])
        self.death_after = (min(STREAM_DEATH_AFTER, n - 1) if n >= 2 else 0) if stream_death else -1
        self.stall = stall
        self.started_at = 0.0
        self.first_at = 0.0
        self.done = False
        self._timer: asyncio.TimerHandle | None = None
        self._writer: ChunkWriter | None = None
        self._next_token = 0

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Called once the job has a slot in the running batch."""
        if self.done:
            self._gen.finished(self)
            return
        loop = self._gen.loop
        self.started_at = now = loop.time()
        self.first_at = now + self.ttft_s
        if self.req.stream:
            gen = self._gen
            rid = gen.ids.next("chatcmpl" if self.req.chat else "cmpl")
            self._writer = ChunkWriter(rid, int(time.time()), gen.model, self.req.chat)
            self._timer = loop.call_at(self.first_at, self._stream_step)
        elif self.death_after >= 0:
            self._timer = loop.call_at(self.first_at, self._die)
        else:
            n = max((len(w) for w in self.words), default=0)
            at = self.first_at + self.tpot_s * max(0, n - 1)
            self._timer = loop.call_at(at, self._answer)

    def client_gone(self) -> None:
        """The client closed the connection: stop generating, free the slot or queue place."""
        if self.done:
            return
        self.cancel()
        if self.started_at == 0.0:
            self._gen.engine.cancel_waiting(self)
            self._gen.jobs.discard(self)
        else:
            self._gen.finished(self)

    def cancel(self) -> None:
        self.done = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _complete(self, generated: int, reason: str) -> None:
        self.done = True
        self._timer = None
        gen = self._gen
        m = gen.metrics
        m.request_done(sum(self.req.prompt_tokens), generated, reason)
        m.ttft.observe(self.first_at - self.arrival)
        if generated > 1:  # vLLM: the mean gap between a request's tokens after the first
            tokens = max(len(w) for w in self.words)
            m.tpot.observe(max(0.0, gen.loop.time() - self.first_at) / max(1, tokens - 1))
        m.e2e.observe(gen.loop.time() - self.arrival)
        gen.finished(self)

    def _die(self) -> None:
        if self.stall:  # silent from here on; the slot is held until the client leaves
            self._timer = None
            return
        self.done = True
        self._timer = None
        self.responder.abort()
        self._gen.finished(self)

    # -- non-streamed ------------------------------------------------------------------------
    def _answer(self) -> None:
        req, gen = self.req, self._gen
        generated = sum(len(w) for w in self.words)
        reason = "length" if generated else "stop"
        prompt = sum(req.prompt_tokens)
        body = completion_body(
            gen.ids.next("chatcmpl" if req.chat else "cmpl"),
            int(time.time()),
            gen.model,
            [join_tokens(w, _lead(req, i)) for i, w in enumerate(self.words)],
            reason,
            prompt,
            generated,
            req.chat,
        )
        self.responder.send(200, body)
        self._complete(generated, reason)

    # -- streamed ----------------------------------------------------------------------------
    def _stream_step(self) -> None:
        """Write every token that is due by now, then sleep until the next one."""
        writer = self._writer
        assert writer is not None
        words = self.words[0]
        total = len(words)
        death = self.death_after
        if death == 0:
            self._die()
            return
        limit = total if death < 0 else death
        loop = self._gen.loop
        due_by = loop.time() + 1e-4
        first_at, tpot_s = self.first_at, self.tpot_s
        i = self._next_token
        parts: list[bytes] = []
        if i == 0 and self.req.chat:
            parts.append(writer.role())
        lead = _lead(self.req, 0)
        while i < limit and first_at + tpot_s * i <= due_by:
            parts.append(writer.token(words[i] if i == 0 and not lead else " " + words[i]))
            i += 1
        self._next_token = i
        if i >= total:
            reason = "length" if total else "stop"
            parts.append(writer.token("", reason))
            if self.req.include_usage:
                parts.append(writer.usage(sum(self.req.prompt_tokens), total))
            parts.append(DONE)
            self.responder.write(b"".join(parts))
            self.responder.end()
            self._complete(total, reason)
            return
        self.responder.write(b"".join(parts))
        step = self._die if i == death else self._stream_step
        self._timer = loop.call_at(first_at + tpot_s * i, step)
