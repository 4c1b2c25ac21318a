"""The `gguf-engine` command line: generate, chat, bench, inspect, download."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from . import __version__
from .defaults import DEFAULT_N_CTX, SAMPLING
from .text_split import THINK_CLOSE, THINK_OPEN, ReasoningText


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


_ESCAPES = {ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t", ord("'"): b"'", ord('"'): b'"',
            ord("\\"): b"\\"}
_HEX = b"0123456789abcdefABCDEF"


def process_escapes(text: str) -> str:
    """llama.cpp's string_process_escapes: \\n \\r \\t \\' \\" \\\\ and \\xHH (a byte); any
    other backslash sequence is kept as written."""
    if "\\" not in text:
        return text
    src = text.encode("utf-8", "surrogatepass")
    out = bytearray()
    i = 0
    while i < len(src):
        c = src[i]
        if c == 0x5C and i + 1 < len(src):
            nxt = src[i + 1]
            if nxt in _ESCAPES:
                out += _ESCAPES[nxt]
                i += 2
                continue
            if nxt == ord("x") and i + 3 < len(src) and src[i + 2] in _HEX and \
                    src[i + 3] in _HEX:
                out.append(int(src[i + 2:i + 4], 16))
                i += 4
                continue
        out.append(c)
        i += 1
    return out.decode("utf-8", errors="replace")


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}")
    return v


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except the unset ones (None, False, [])."""

    def _get_help_string(self, action):
        if action.default in (None, False, []) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def _add_model_args(p):
    p.add_argument("-m", "--model",
                   help="GGUF file or hf://owner/repo/file.gguf (default: the embedded Gemma 3 "
                        "270M Q4_K_M)")
    p.add_argument("--hf-repo", help="Hugging Face repository, owner/name")
    p.add_argument("--hf-file", help="file in --hf-repo; a glob such as '*Q4_K_M.gguf' works")
    p.add_argument("-c", "--ctx-size", type=_positive_int, help="context size (default: "
                   f"min({DEFAULT_N_CTX}, the model's); more than the model's is capped to it "
                   "unless --extend-context)")
    p.add_argument("--extend-context", action="store_true",
                   help="keep a --ctx-size larger than the model was trained for")
    p.add_argument("-t", "--threads", type=_positive_int, help="CPU threads (default: all cores)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"],
                   help="where to run")
    route = p.add_mutually_exclusive_group()
    route.add_argument("--exact", dest="exact", action="store_const", const=True,
                       help="float math on the dequantized weights")
    route.add_argument("--integer", dest="exact", action="store_const", const=False,
                       help="the integer route: int8 activations, as llama.cpp computes (the "
                            "default where the CPU has AVX2 or AVX-512 VNNI)")


def _add_sampling_args(p):
    p.add_argument("-n", "--n-predict", type=int, default=SAMPLING["max_tokens"],
                   help="tokens to generate (-1: until the context is full)")
    p.add_argument("--temp", type=float, default=SAMPLING["temperature"],
                   help="temperature (0: greedy)")
    p.add_argument("--top-k", type=int, default=SAMPLING["top_k"],
                   help="keep the k likeliest tokens (0: all)")
    p.add_argument("--top-p", type=float, default=SAMPLING["top_p"],
                   help="nucleus sampling threshold")
    p.add_argument("--min-p", type=float, default=SAMPLING["min_p"],
                   help="drop tokens below this fraction of the likeliest one's probability")
    p.add_argument("--repeat-penalty", type=float, default=SAMPLING["repeat_penalty"],
                   help="penalty on the last 64 tokens (1: off)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default: random)")
    p.add_argument("--stop", action="append", default=[],
                   help="stop string, repeatable; escapes such as \\n are processed")
    p.add_argument("--ignore-eos", action="store_true",
                   help="keep generating past end-of-generation tokens")
    p.add_argument("--no-escape", action="store_true",
                   help="take --stop and the prompt literally (no \\n, \\t, \\xHH escapes)")
    p.add_argument("--verbose", action="store_true", help="print timings to stderr")
    g = p.add_mutually_exclusive_group()
    g.add_argument("-j", "--json-schema", metavar="FILE|JSON",
                   help="the output is JSON valid under this schema (a file, or the schema "
                        "itself when it starts with '{'; '{}' for any JSON object)")
    g.add_argument("--grammar-file", metavar="FILE",
                   help="the output follows this GBNF grammar (llama.cpp's format)")
    g.add_argument("--regex", help="the output matches this regular expression")


def _read(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError as e:
        raise CLIError(f"cannot read {what} {path}: {e.strerror}") from None


def _constraint(args) -> dict:
    """generate's constraint keyword from --json-schema / --grammar-file / --regex."""
    if args.json_schema is not None:
        text = args.json_schema
        if not text.lstrip().startswith("{"):
            text = _read(text, "JSON schema file")
        try:
            schema = json.loads(text)
        except json.JSONDecodeError as e:
            raise CLIError(f"--json-schema is not valid JSON: {e}") from None
        return {"response_format": {"type": "json_schema", "json_schema": {"schema": schema}}}
    if args.grammar_file is not None:
        return {"grammar": _read(args.grammar_file, "grammar file")}
    if args.regex is not None:
        return {"regex": args.regex}
    return {}


def _load(args, n_seq: int = 1):
    from . import load

    return load(args.model, n_ctx=args.ctx_size, n_threads=args.threads, device=args.device,
                hf_repo=args.hf_repo, hf_file=args.hf_file, extend_context=args.extend_context,
                n_seq=n_seq, exact=args.exact)


def _text_arg(args, text: str) -> str:
    return text if args.no_escape else process_escapes(text)


def _sampling(args) -> dict:
    return dict(max_tokens=args.n_predict, temperature=args.temp, top_k=args.top_k,
                top_p=args.top_p, min_p=args.min_p, repeat_penalty=args.repeat_penalty,
                seed=args.seed, stop=[_text_arg(args, s) for s in args.stop],
                ignore_eos=args.ignore_eos, **_constraint(args))


def _stream_out(stream, verbose: bool):
    """Print a Stream as it comes; returns its result."""
    if _NOTICE is not None:
        _NOTICE.close()  # compiling is over once text comes: end the bar before it
    tty = sys.stdout.isatty()
    # a chat reply's reasoning (ReasoningText pieces): dim on a terminal, else in its tags
    marks = ("\x1b[2m", "\x1b[0m") if tty else (THINK_OPEN, THINK_CLOSE + "\n")
    thinking = False
    for piece in stream:
        if isinstance(piece, ReasoningText) != thinking:
            thinking = not thinking
            sys.stdout.write(marks[0] if thinking else marks[1])
        sys.stdout.write(piece)
        sys.stdout.flush()
    if thinking:
        sys.stdout.write(marks[1])
    res = stream.result
    if verbose and res is not None:
        t = res.timings
        print(f"\n[prompt: {t.prompt_tokens} tokens, {t.prompt_tps:.1f} tok/s | generated: "
              f"{t.generated_tokens} tokens, {t.generation_tps:.1f} tok/s | "
              f"finish: {res.finish_reason}]", file=sys.stderr)
    return res


def _cmd_generate(args):
    if args.file is not None:
        if args.prompt is not None:
            raise CLIError("give the prompt either as an argument or with -f, not both")
        prompt = sys.stdin.read() if args.file == "-" else _read(args.file, "prompt file")
    elif args.prompt is not None:
        prompt = args.prompt
    else:
        raise CLIError("no prompt: give one as an argument or with -f FILE (- for stdin)")
    prompt = _text_arg(args, prompt)
    t0 = time.perf_counter()
    model = _load(args)
    if args.verbose:
        print(f"[loaded {model.file.path.name} in {time.perf_counter() - t0:.2f} s]",
              file=sys.stderr)
    _stream_out(model.generate(prompt, stream=True, **_sampling(args)), args.verbose)
    print()


_INSTRUCT_WORDS = ("it", "instruct", "chat", "sft", "dpo", "rlhf", "assistant")


def _looks_like_base_model(f) -> bool:
    """No word of an instruction-tuned model's name in general.name / finetune / basename."""
    import re

    names = " ".join(str(f.get(k) or "") for k in ("general.name", "general.finetune",
                                                   "general.basename")).lower()
    return not any(w in _INSTRUCT_WORDS for w in re.split(r"[^a-z0-9]+", names))


def _chat_template(args, model) -> str | None:
    """--chat-template / --chat-template-file, else None (the file's own). Says when the file
    has none and what that means."""
    if args.chat_template is not None and args.chat_template_file is not None:
        raise CLIError("give --chat-template or --chat-template-file, not both")
    if args.chat_template_file is not None:
        return _read(args.chat_template_file, "chat template file")
    if args.chat_template is not None:
        return args.chat_template
    f = model.file
    if f.get("tokenizer.chat_template") is not None:
        return None
    name = f.get("general.name") or f.path.name
    if not model.config.spec.name.startswith("gemma"):
        raise CLIError(f"{f.path.name} has no chat template: pass one with --chat-template "
                       "TEXT or --chat-template-file FILE (a Jinja2 template)")
    base = " and looks like a base model, which continues text instead of answering" \
        if _looks_like_base_model(f) else ""
    print(f"gguf-engine: note: {name!r} has no chat template{base}; using Gemma's turn format. "
          "For real answers use an instruction-tuned model, or pass --chat-template.",
          file=sys.stderr)
    return None


def _cmd_chat(args):
    model = _load(args)
    template = _chat_template(args, model)
    messages = []
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print("> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line or not line.strip():
            break
        text = line.rstrip("\n")
        if not interactive:  # a transcript: each turn's input, then its reply, then a blank line
            print(f"> {text}", flush=True)
        messages.append({"role": "user", "content": text})
        res = _stream_out(model.chat(messages, chat_template=template, stream=True,
                                     **_sampling(args)), args.verbose)
        print("\n" if not interactive else "", flush=True)
        messages.append({"role": "assistant", "content": res.text})


def _cmd_bench(args):
    from .gguf_file import GGUFFile

    if args.kernels:
        from .bench import run_kernel_bench

        lm_head = None
        path = None
        if args.model:
            from .hub import resolve_model

            path = resolve_model(args.model)
        else:
            from .default_model import DefaultModelMissing, default_model_path

            try:
                path = default_model_path()
            except DefaultModelMissing as e:
                print(f"gguf-engine: {e}; skipping the LM-head row", file=sys.stderr)
        if path is not None:
            f = GGUFFile(path)
            lm_head = f.tensors.get("output.weight") or f.tensor("token_embd.weight")
        run_kernel_bench(lm_head=lm_head, repeats=args.repetitions)
        return
    from .bench import format_records, header, run_bench

    t0 = time.perf_counter()
    model = _load(args, n_seq=max(args.parallel))
    load_s = time.perf_counter() - t0
    records = run_bench(model, load_s, args.n_prompt, args.n_gen, args.repetitions,
                        args.parallel)
    print(header(model), file=sys.stdout if args.output == "md" else sys.stderr)
    print(format_records(records, args.output))


def _cmd_inspect(args):
    from .gguf_file import GGUFFile
    from .hub import resolve_model
    from .inspect_file import describe

    print(describe(GGUFFile(resolve_model(args.file))))


def _cmd_models(args):
    from .default_model import cache_dir, default_model_path
    from .hub import cached_gguf_files

    try:
        print(f"default model: {default_model_path()}")
    except Exception as e:
        print(f"default model: not available ({e}); it would be assembled into "
              f"{cache_dir()}")
    for repo, path in cached_gguf_files():
        print(f"hf://{repo}/{path.name}: {path}")


def _cmd_download(args):
    from .hub import HF_PREFIX, parse_ref, resolve_model

    ref = args.ref
    if not ref.startswith(HF_PREFIX) and not (args.hf_repo and args.hf_file):
        raise CLIError(f"download takes hf://owner/repo/file.gguf, got {ref!r}")
    if ref.startswith(HF_PREFIX):
        parse_ref(ref)
    print(resolve_model(ref, args.hf_repo, args.hf_file))


def _parallel_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or any(not 1 <= v <= 16 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of counts "
                                         "from 1 to 16")
    return values


def _cmd_batch(args):
    from .batch import run

    if args.ray is None:
        model = _load(args, n_seq=args.parallel)
    else:  # each actor loads it from this path
        from . import model_path

        model = str(model_path(args.model, args.hf_repo, args.hf_file))
    if _NOTICE is not None:
        _NOTICE.close()
    sampling = _sampling(args)
    sampling.pop("seed")
    counts = run(model, args.input, args.output, chat=args.chat, strict=args.strict,
                 ray=args.ray, actors=args.actors, n_ctx=args.ctx_size, n_seq=args.parallel,
                 n_threads=args.threads, seed=args.seed, **sampling)
    print(f"gguf-engine: {counts['done']} rows written ({counts['failed']} with an error), "
          f"{counts['skipped']} already done, {counts['bad_lines']} bad input lines",
          file=sys.stderr)
    if counts["bad_lines"] or counts["failed"]:
        raise SystemExit(1)


def _cmd_perplexity(args):
    from pathlib import Path

    from . import perplexity as pp

    text = _read(args.file, "text file")
    model = _load(args)
    n_ctx = model.n_ctx
    tokens = model.tokenize(text) if text else []
    scored = pp.targets(tokens, n_ctx)
    base = Path(args.kl_base) if args.kl_base else None
    base_ids = base_logp = None
    if base is not None and base.exists():
        base_ids, base_logp = pp.load_base(base, scored, n_ctx, model.n_vocab)
    if _NOTICE is not None:
        _NOTICE.close()
    print(f"gguf-engine: {len(tokens)} tokens, {len(tokens) // n_ctx} windows of {n_ctx}, "
          f"{len(scored)} scored", file=sys.stderr)

    def report(w, n, ppl):
        print(f"[{w}/{n}] {ppl:.4f}", file=sys.stderr, flush=True)

    s = pp.score(model, tokens, n_ctx, args.top_k, base_ids, report)
    out = {**pp.summary(s), "route": model.route}
    if base_ids is not None:
        out.update(pp.compare(base_ids, base_logp, s))
    elif base is not None:
        pp.save_base(base, s, scored, n_ctx)
    if args.output == "json":
        print(json.dumps(out))
        return
    print(f"PPL = {out['ppl']:.4f} +/- {out['ppl_stderr']:.5f} over {out['n_tokens']} tokens "
          f"({out['route']} route)")
    if "kl_mean" in out:
        print(f"KL divergence from {base}: mean {out['kl_mean']:.6f}, p99 {out['kl_p99']:.6f}; "
              f"top-1 agreement {100 * out['top1_agreement']:.2f}%")
    elif base is not None:
        print(f"saved the top-{args.top_k} log-probabilities to {base}")


def _cmd_serve(args):
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn", "sse_starlette")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise CLIError(f"serving needs the 'server' extra ({missing[0]} is missing): "
                       "pip install 'gguf-engine[server]'")
    from .server import serve

    model = _load(args, n_seq=args.parallel)
    alias = args.alias or model.file.path.stem
    if _NOTICE is not None:
        _NOTICE.close()
    print(f"gguf-engine: serving {alias!r} on http://{args.host}:{args.port}/v1 "
          f"({args.parallel} sequences of {model.n_ctx} tokens)", file=sys.stderr)
    serve(model, host=args.host, port=args.port, alias=alias, api_key=args.api_key,
          max_queue=args.queue)


def build_parser() -> argparse.ArgumentParser:
    fmt = _HelpFormatter
    p = argparse.ArgumentParser(prog="gguf-engine", formatter_class=fmt,
                                description="Run GGUF language models on the CPU with Numba.")
    p.add_argument("--version", action="version", version=f"gguf-engine {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    _parser = sub.add_parser

    def add_parser(*a, **kw):
        return _parser(*a, formatter_class=fmt, **kw)

    sub.add_parser = add_parser

    g = sub.add_parser("generate", help="continue a prompt, streaming the text")
    g.add_argument("prompt", nargs="?", help="the prompt text")
    g.add_argument("-f", "--file", help="read the prompt from a file (- for stdin)")
    _add_model_args(g)
    _add_sampling_args(g)
    g.set_defaults(func=_cmd_generate)

    c = sub.add_parser("chat", help="interactive chat with the model's chat template")
    _add_model_args(c)
    _add_sampling_args(c)
    c.add_argument("--chat-template", help="a Jinja2 chat template to use instead of the file's")
    c.add_argument("--chat-template-file", help="read the chat template from this file")
    c.set_defaults(func=_cmd_chat)

    b = sub.add_parser("bench", help="llama-bench style benchmark (pp, tg); --kernels for the "
                                     "kernel benchmark")
    _add_model_args(b)
    b.add_argument("-p", "--n-prompt", type=int, default=512, help="prompt tokens (0: skip pp)")
    b.add_argument("-n", "--n-gen", type=int, default=128, help="generated tokens (0: skip tg)")
    b.add_argument("-r", "--repetitions", type=_positive_int, default=5,
                   help="timed runs of each test")
    b.add_argument("-o", "--output", choices=["md", "json", "csv"], default="md",
                   help="output format")
    b.add_argument("--parallel", type=_parallel_list, default=(1,),
                   help="decode this many sequences at once in tg, e.g. 1,4,8,16 (aggregate "
                        "tok/s)")
    b.add_argument("--kernels", action="store_true", help="run the kernel benchmark instead")
    b.set_defaults(func=_cmd_bench)

    bt = sub.add_parser("batch", help="a JSONL file of prompts through the model, resumable; "
                                      "--ray to run it on a Ray cluster")
    _add_model_args(bt)
    _add_sampling_args(bt)
    bt.add_argument("-i", "--input", required=True,
                    help='JSONL: {"id": ..., "prompt": ...} or {"id": ..., "messages": [...]}, '
                         "with optional per-row sampling fields")
    bt.add_argument("-o", "--output", required=True,
                    help="JSONL results, appended as rows finish; ids already there are skipped")
    bt.add_argument("--chat", action="store_true",
                    help="render prompts with the chat template (as one user message)")
    bt.add_argument("--strict", action="store_true", help="stop at the first bad input line")
    bt.add_argument("--parallel", "-np", type=_positive_int, default=8,
                    help="sequences decoded together (per process or actor)")
    bt.add_argument("--ray", metavar="ADDRESS|auto|local",
                    help="run on Ray: a cluster address, auto, or local (a new instance here)")
    bt.add_argument("--actors", type=_positive_int, default=2,
                    help="Ray actors, each with the model and an equal share of the CPUs")
    bt.set_defaults(func=_cmd_batch)

    sv = sub.add_parser("serve", help="an OpenAI-compatible HTTP server (/v1/chat/completions, "
                                      "/v1/completions, /v1/models, /health)")
    _add_model_args(sv)
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on")
    sv.add_argument("--port", type=_positive_int, default=8080, help="port to listen on")
    sv.add_argument("--parallel", "-np", type=_positive_int, default=4,
                    help="sequences decoded together (KV-cache slots of -c tokens each)")
    sv.add_argument("--alias", help="the model's name in the API (default: the file's stem)")
    sv.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1 routes")
    sv.add_argument("--queue", type=_positive_int, default=64,
                    help="requests that may wait for a slot before the server answers 503")
    sv.set_defaults(func=_cmd_serve)

    pp = sub.add_parser("perplexity", help="llama-perplexity's perplexity of a text; "
                                           "--kl-base compares two runs")
    _add_model_args(pp)
    pp.set_defaults(ctx_size=512)
    pp.add_argument("-f", "--file", required=True, help="the text (UTF-8)")
    pp.add_argument("--kl-base", metavar="FILE",
                    help="save each scored position's top-k log-probabilities here, or, if "
                         "FILE exists, compare with them (KL divergence, top-1 agreement)")
    pp.add_argument("--top-k", type=_positive_int, default=32,
                    help="log-probabilities kept per position for --kl-base")
    pp.add_argument("-o", "--output", choices=["text", "json"], default="text")
    pp.set_defaults(func=_cmd_perplexity)

    i = sub.add_parser("inspect", help="show a GGUF file's architecture, hyperparameters and "
                                       "tensors")
    i.add_argument("file", help="GGUF file or hf:// reference")
    i.set_defaults(func=_cmd_inspect)

    ms = sub.add_parser("models", help="where the default model and cached hub models are")
    ms.set_defaults(func=_cmd_models)

    d = sub.add_parser("download", help="fetch hf://owner/repo/file.gguf into the cache")
    d.add_argument("ref", nargs="?", default="", help="hf://owner/repo/file.gguf")
    d.add_argument("--hf-repo", help="Hugging Face repository, owner/name")
    d.add_argument("--hf-file", help="file in --hf-repo; a glob works")
    d.set_defaults(func=_cmd_download)
    return p


_NOTICE = None  # the active CompileNotice, closed when output starts


def _warning_line(message, category, filename, lineno, file=None, line=None):
    print(f"gguf-engine: warning: {message}", file=sys.stderr)


def main(argv=None) -> int:
    global _NOTICE
    import warnings

    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "n_prompt", 0) < 0 or getattr(args, "n_gen", 0) < 0:
        parser.error("-p and -n must be >= 0")
    from .default_model import DefaultModelMissing
    from .progress import CompileNotice

    warnings.showwarning = _warning_line
    try:
        with CompileNotice() as _NOTICE:
            args.func(args)
    except KeyboardInterrupt:
        sys.stdout.flush()
        print(file=sys.stderr)
        return 130
    except (CLIError, ValueError, OSError, RuntimeError, DefaultModelMissing, MemoryError,
            RecursionError) as e:
        sys.stdout.flush()
        parser.print_usage(sys.stderr)
        print(f"gguf-engine: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
