"""The `gguf-engine` command line."""

from __future__ import annotations

import argparse
import sys

from . import __version__


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _cmd_inspect(args):
    from .gguf_file import GGUFFile
    from .inspect_file import describe

    print(describe(GGUFFile(args.file)))


def _cmd_bench(args):
    if args.kernels:
        from .gguf_file import GGUFFile
        from .kernel_bench import run_kernel_bench

        lm_head = None
        if args.model:
            f = GGUFFile(args.model)
            lm_head = f.tensors.get("output.weight") or f.tensor("token_embd.weight")
        else:
            from .default_model import DefaultModelMissing, default_model_path

            try:
                lm_head = GGUFFile(default_model_path()).tensor("token_embd.weight")
            except DefaultModelMissing as e:
                print(f"gguf-engine: {e}; skipping the LM-head row", file=sys.stderr)
        run_kernel_bench(lm_head=lm_head, repeats=args.repetitions)
        return
    raise CLIError("bench: only --kernels is available in this version")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gguf-engine", description=__doc__)
    p.add_argument("--version", action="version", version=f"gguf-engine {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    ins = sub.add_parser(
        "inspect", help="show a GGUF file's architecture, hyperparameters and tensors"
    )
    ins.add_argument("file")
    ins.set_defaults(func=_cmd_inspect)

    b = sub.add_parser("bench", help="benchmarks (llama-bench style); --kernels for the kernels")
    b.add_argument("-m", "--model", help="GGUF file (default: the embedded Gemma 3 270M)")
    b.add_argument("--kernels", action="store_true", help="run the kernel benchmark")
    b.add_argument("-r", "--repetitions", type=int, default=5)
    b.set_defaults(func=_cmd_bench)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .gguf_file import GGUFError
    from .kernels import UnsupportedTypeError

    try:
        args.func(args)
    except (CLIError, GGUFError, UnsupportedTypeError) as e:
        parser.print_usage(sys.stderr)
        print(f"gguf-engine: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
