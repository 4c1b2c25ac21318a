"""Chat templates rendered where they cannot hurt the process: Jinja2's immutable sandbox, in a
separate, long-lived worker process with a deadline and a memory cap.

A template is untrusted input (people download model files). The sandbox refuses attribute
tricks, but not work: `10 ** (10 ** 10)` runs for ever in C code that no signal interrupts in a
thread, `'a' * 10**9` builds a gigabyte, nested `range` loops spin. Operators that build big
values are intercepted here with clear errors; whatever else a template does runs in the worker,
which is killed at the deadline and cannot take more than `MEMORY_LIMIT` bytes.

This file runs as a script (the worker: one JSON request per line on stdin, one JSON reply per
line on stdout) and is imported by the engine (the client, `render`). As a script it imports
nothing of the engine, so a worker starts in about 0.1 s.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import re
import select
import subprocess
import sys
import threading

RENDER_TIMEOUT_S = 5.0  # a template that renders longer than this is stopped
MEMORY_LIMIT = 1 << 30  # the worker's address space (RLIMIT_AS)
MAX_BUILT = 1 << 24  # characters / items one operator may build (a 32k-token prompt is ~1M)
MAX_POWER_BITS = 4096  # bits of an integer that `**` may build
MAX_LIPSUM = 1000  # paragraphs, and words per paragraph, of lipsum()
_PRINTF_WIDTH = re.compile(r"(?<=%)[-+ #0]*(\d+)|(?<=\.)(\d+)(?=[a-zA-Z])")


class TemplateRenderError(Exception):
    """A template failed, was refused or was stopped; the message says which and why."""


class RenderedTooLong(TemplateRenderError):
    """The rendered text is longer than the caller's max_chars."""


# -- the worker side ---------------------------------------------------------------------
def _environment():
    """Jinja2's ImmutableSandboxedEnvironment as Hugging Face's apply_chat_template sets it up
    (GGUF templates are written for it): trim_blocks, lstrip_blocks, the loopcontrols extension
    ({% break %}, {% continue %}), a `tojson` that keeps key order and non-ASCII text,
    `raise_exception` and `strftime_now`; with the size-building operators intercepted."""
    from jinja2.exceptions import SecurityError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Env(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset(["*", "**", "+", "%"])

        def call_binop(self, context, operator, left, right):
            if operator == "**":
                if isinstance(left, (int, float)) and isinstance(right, (int, float)) and \
                        abs(left) > 1 and right > 0 and right * math.log2(abs(left)) > \
                        MAX_POWER_BITS:
                    raise SecurityError(f"{left!r} ** {right!r} is too large to compute")
            elif operator == "*":
                for seq, n in ((left, right), (right, left)):
                    if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and \
                            len(seq) * n > MAX_BUILT:
                        raise SecurityError(f"a repetition would build {len(seq) * n} items "
                                            f"(at most {MAX_BUILT})")
            elif operator == "%" and isinstance(left, str):
                widths = [int(a or b) for a, b in _PRINTF_WIDTH.findall(left)]
                if widths and max(widths) > MAX_BUILT:
                    raise SecurityError(f"a format width of {max(widths)} is too large")
            elif operator == "+" and isinstance(left, (str, list, tuple)) and \
                    isinstance(right, type(left)) and len(left) + len(right) > MAX_BUILT:
                raise SecurityError(f"a concatenation would build {len(left) + len(right)} "
                                    f"items (at most {MAX_BUILT})")
            return super().call_binop(context, operator, left, right)

    env = Env(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    lipsum = env.globals["lipsum"]

    def capped_lipsum(n=5, html=True, min=20, max=100):  # noqa: A002 (Jinja's own names)
        if not all(isinstance(v, int) and 0 <= v <= MAX_LIPSUM for v in (n, min, max)):
            raise SecurityError(f"lipsum() takes at most {MAX_LIPSUM} paragraphs and words")
        return lipsum(n, html, min, max)

    env.globals["lipsum"] = capped_lipsum
    return env


def _raise_exception(message):
    from jinja2 import TemplateError

    raise TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    """Hugging Face's tojson: json.dumps as it is (Jinja's own sorts keys and escapes HTML)."""
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _strftime_now(fmt):
    from datetime import datetime

    return datetime.now().strftime(fmt)


_PARSED: dict = {}  # template text -> compiled template, in the worker (a chat reuses one)


def render_here(env, template: str, context: dict, max_chars: int) -> str:
    """Render in this process (the worker calls this); every failure a TemplateRenderError."""
    from jinja2 import TemplateError, TemplateSyntaxError
    from jinja2.exceptions import SecurityError

    try:
        tmpl = _PARSED.get(template)
        if tmpl is None:
            tmpl = env.from_string(template)
            if len(_PARSED) > 16:
                _PARSED.clear()
            _PARSED[template] = tmpl
    except TemplateSyntaxError as e:
        raise TemplateRenderError(
            f"the chat template does not parse: {e} (line {e.lineno})") from None
    except (TemplateError, RecursionError, MemoryError) as e:
        raise TemplateRenderError(f"the chat template does not parse: {e}") from None
    try:
        text = tmpl.render(**context)
    except SecurityError as e:
        raise TemplateRenderError(f"the chat template tried an unsafe operation: {e}") from None
    except TemplateError as e:
        raise TemplateRenderError(f"the chat template failed: {e}") from None
    except RecursionError:
        raise TemplateRenderError("the chat template recursed too deeply") from None
    except MemoryError:
        raise TemplateRenderError(f"the chat template needed more than {MEMORY_LIMIT >> 20} MiB "
                                  "of memory") from None
    except Exception as e:  # OverflowError, a TypeError for include/import without a loader...
        raise TemplateRenderError(f"the chat template failed: {e.__class__.__name__}: "
                                  f"{e}") from None
    if len(text) > max_chars:
        raise RenderedTooLong(f"the rendered prompt has {len(text)} characters, more than "
                                  f"the context can hold ({max_chars})")
    return text


def _worker() -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    except (ImportError, ValueError, OSError):
        pass
    env = _environment()
    for line in sys.stdin:
        try:
            req = json.loads(line)
            reply = {"ok": render_here(env, req["template"], req["context"], req["max_chars"])}
        except TemplateRenderError as e:
            reply = {"error": str(e), "too_long": isinstance(e, RenderedTooLong)}
        except MemoryError:
            reply = {"error": "the chat template needed too much memory"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


# -- the client side ---------------------------------------------------------------------
class _Worker:
    """One worker process, started on first use and again after it was stopped."""

    def __init__(self):
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__)], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True,
                env={**os.environ, "PYTHONIOENCODING": "utf-8"})
        return self._proc

    def _stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            for pipe in (self._proc.stdin, self._proc.stdout):
                pipe.close()
            self._proc = None

    def render(self, template: str, context: dict, max_chars: int, timeout: float) -> str:
        request = json.dumps({"template": template, "context": context,
                              "max_chars": max_chars}) + "\n"
        with self._lock:
            proc = self._start()
            try:
                proc.stdin.write(request.encode())
                proc.stdin.flush()
                ready, _, _ = select.select([proc.stdout], [], [], timeout)
                line = proc.stdout.readline() if ready else None
            except OSError:
                line = b""
            if line is None:
                self._stop()
                raise TemplateRenderError(f"the chat template took longer than {timeout:g} s "
                                          "to render and was stopped")
            if not line:
                code = proc.poll()
                self._stop()
                raise TemplateRenderError(f"the chat template renderer died (exit status "
                                          f"{code})")
        reply = json.loads(line)
        if "error" in reply:
            raise (RenderedTooLong if reply.get("too_long") else TemplateRenderError)(
                reply["error"])
        return reply["ok"]


_WORKER = _Worker()
atexit.register(_WORKER._stop)


def render(template: str, context: dict, *, max_chars: int = MAX_BUILT,
           timeout: float = RENDER_TIMEOUT_S) -> str:
    """`template` rendered with `context` (JSON-serializable values) in the worker process."""
    return _WORKER.render(template, context, max_chars, timeout)


if __name__ == "__main__":
    _worker()
