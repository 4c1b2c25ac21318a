"""The `gguf-engine` command line: generate, chat, bench, inspect, download."""

from __future__ import annotations

import argparse
import os
import sys
import time

from . import __version__


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}")
    return v


def _add_model_args(p):
    p.add_argument("-m", "--model",
                   help="GGUF file or hf://owner/repo/file.gguf (default: the embedded Gemma 3 "
                        "270M Q4_K_M)")
    p.add_argument("--hf-repo", help="Hugging Face repository, owner/name")
    p.add_argument("--hf-file", help="file in --hf-repo; a glob such as '*Q4_K_M.gguf' works")
    p.add_argument("-c", "--ctx-size", type=_positive_int, help="context size (default: "
                   "min(4096, the model's))")
    p.add_argument("-t", "--threads", type=_positive_int, help="CPU threads")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])


def _add_sampling_args(p):
    p.add_argument("-n", "--n-predict", type=int, default=256,
                   help="tokens to generate (-1: until the context is full)")
    p.add_argument("--temp", type=float, default=0.8, help="temperature (0: greedy)")
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--min-p", type=float, default=0.05)
    p.add_argument("--repeat-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--ignore-eos", action="store_true",
                   help="keep generating past end-of-generation tokens")
    p.add_argument("--verbose", action="store_true", help="print timings to stderr")


def _load(args):
    from . import load

    return load(args.model, n_ctx=args.ctx_size, n_threads=args.threads, device=args.device,
                hf_repo=args.hf_repo, hf_file=args.hf_file)


def _sampling(args) -> dict:
    return dict(max_tokens=args.n_predict, temperature=args.temp, top_k=args.top_k,
                top_p=args.top_p, min_p=args.min_p, repeat_penalty=args.repeat_penalty,
                seed=args.seed, stop=args.stop, ignore_eos=args.ignore_eos)


def _stream_out(stream, verbose: bool):
    """Print a Stream as it comes; returns its result."""
    for piece in stream:
        sys.stdout.write(piece)
        sys.stdout.flush()
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
        try:
            if args.file == "-":
                prompt = sys.stdin.read()
            else:
                with open(args.file, encoding="utf-8") as fh:
                    prompt = fh.read()
        except OSError as e:
            raise CLIError(f"cannot read prompt file {args.file}: {e.strerror}") from None
    elif args.prompt is not None:
        prompt = args.prompt
    else:
        raise CLIError("no prompt: give one as an argument or with -f FILE (- for stdin)")
    t0 = time.perf_counter()
    model = _load(args)
    if args.verbose:
        print(f"[loaded {model.file.path.name} in {time.perf_counter() - t0:.2f} s]",
              file=sys.stderr)
    _stream_out(model.generate(prompt, stream=True, **_sampling(args)), args.verbose)
    print()


def _cmd_chat(args):
    model = _load(args)
    messages = []
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print("> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line or not line.strip():
            break
        messages.append({"role": "user", "content": line.rstrip("\n")})
        res = _stream_out(model.chat(messages, stream=True, **_sampling(args)), args.verbose)
        print()
        messages.append({"role": "assistant", "content": res.text})


def _cmd_bench(args):
    from .gguf_file import GGUFFile

    if args.kernels:
        from .kernel_bench import run_kernel_bench

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
    model = _load(args)
    load_s = time.perf_counter() - t0
    records = run_bench(model, load_s, args.n_prompt, args.n_gen, args.repetitions)
    print(header(), file=sys.stdout if args.output == "md" else sys.stderr)
    print(format_records(records, args.output))


def _cmd_inspect(args):
    from .gguf_file import GGUFFile
    from .hub import resolve_model
    from .inspect_file import describe

    print(describe(GGUFFile(resolve_model(args.file))))


def _cmd_download(args):
    from .hub import HF_PREFIX, parse_ref, resolve_model

    ref = args.ref
    if not ref.startswith(HF_PREFIX) and not (args.hf_repo and args.hf_file):
        raise CLIError(f"download takes hf://owner/repo/file.gguf, got {ref!r}")
    if ref.startswith(HF_PREFIX):
        parse_ref(ref)
    print(resolve_model(ref, args.hf_repo, args.hf_file))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gguf-engine",
                                description="Run GGUF language models on the CPU with Numba.")
    p.add_argument("--version", action="version", version=f"gguf-engine {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="continue a prompt, streaming the text")
    g.add_argument("prompt", nargs="?", help="the prompt text")
    g.add_argument("-f", "--file", help="read the prompt from a file (- for stdin)")
    _add_model_args(g)
    _add_sampling_args(g)
    g.set_defaults(func=_cmd_generate)

    c = sub.add_parser("chat", help="interactive chat with the model's chat template")
    _add_model_args(c)
    _add_sampling_args(c)
    c.set_defaults(func=_cmd_chat)

    b = sub.add_parser("bench", help="llama-bench style benchmark (pp, tg); --kernels for the "
                                     "kernel benchmark")
    _add_model_args(b)
    b.add_argument("-p", "--n-prompt", type=int, default=512, help="prompt tokens (0: skip pp)")
    b.add_argument("-n", "--n-gen", type=int, default=128, help="generated tokens (0: skip tg)")
    b.add_argument("-r", "--repetitions", type=_positive_int, default=5)
    b.add_argument("-o", "--output", choices=["md", "json", "csv"], default="md")
    b.add_argument("--kernels", action="store_true", help="run the kernel benchmark instead")
    b.set_defaults(func=_cmd_bench)

    i = sub.add_parser("inspect", help="show a GGUF file's architecture, hyperparameters and "
                                       "tensors")
    i.add_argument("file")
    i.set_defaults(func=_cmd_inspect)

    d = sub.add_parser("download", help="fetch hf://owner/repo/file.gguf into the cache")
    d.add_argument("ref", nargs="?", default="")
    d.add_argument("--hf-repo")
    d.add_argument("--hf-file")
    d.set_defaults(func=_cmd_download)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "n_prompt", 0) < 0 or getattr(args, "n_gen", 0) < 0:
        parser.error("-p and -n must be >= 0")
    from .default_model import DefaultModelMissing

    try:
        args.func(args)
    except KeyboardInterrupt:
        sys.stdout.flush()
        print(file=sys.stderr)
        return 130
    except (CLIError, ValueError, OSError, RuntimeError, DefaultModelMissing) as e:
        sys.stdout.flush()
        parser.print_usage(sys.stderr)
        print(f"gguf-engine: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
