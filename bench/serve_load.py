"""Load on `gguf-engine serve`: C concurrent clients, each streaming R chat requests of T tokens;
requests per second, aggregate generated tokens per second, and time to first token (median,
p95).

    python bench/serve_load.py [-m MODEL] [--parallel 8] [-c 512] [--clients 16] [--requests 4]
                               [--tokens 32] [--url http://127.0.0.1:8080]

Without --url it starts a server on 127.0.0.1 in this process (the model loaded with
--parallel slots) and stops it at the end. Needs the 'server' and 'test' extras (openai).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def start_server(model_path, parallel: int, n_ctx: int):
    import uvicorn

    import gguf_engine
    from gguf_engine.server import create_app, uvicorn_config

    model = gguf_engine.load(model_path, n_ctx=n_ctx, n_seq=parallel)
    srv = uvicorn.Server(uvicorn_config(create_app(model, "model"), port=0, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not (srv.started and srv.servers):
        time.sleep(0.05)
    port = srv.servers[0].sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}", srv, thread


def one_request(client, i: int, tokens: int) -> tuple[float, float, int]:
    """(time to first token, total time, tokens) of one streamed chat request."""
    t0 = time.perf_counter()
    first, n = None, 0
    stream = client.chat.completions.create(
        model="model", messages=[{"role": "user", "content": f"Tell me fact number {i}."}],
        max_tokens=tokens, temperature=0.7, seed=i, stream=True,
        stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content and first is None:
            first = time.perf_counter() - t0
        if chunk.usage is not None:
            n = chunk.usage.completion_tokens
    return first if first is not None else float("nan"), time.perf_counter() - t0, n


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", help="GGUF file (default: the embedded Gemma 3 270M)")
    ap.add_argument("--url", help="an already running server (else one is started here)")
    ap.add_argument("--parallel", type=int, default=8, help="slots of the started server")
    ap.add_argument("-c", "--ctx-size", type=int, default=512, help="context per slot")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=4, help="requests per client")
    ap.add_argument("--tokens", type=int, default=32, help="max_tokens per request")
    args = ap.parse_args(argv)
    import openai

    srv = thread = None
    url = args.url
    if url is None:
        from gguf_engine.default_model import default_model_path

        url, srv, thread = start_server(args.model or default_model_path(), args.parallel,
                                        args.ctx_size)
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=600)
    one_request(client, 0, 4)  # warm-up: compile what the first request needs
    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as pool:
        results = list(pool.map(lambda i: one_request(client, i, args.tokens),
                                range(args.clients * args.requests)))
    wall = time.perf_counter() - t0
    ttft = sorted(r[0] for r in results)
    n_tokens = sum(r[2] for r in results)
    print(f"{len(results)} requests from {args.clients} clients in {wall:.1f} s: "
          f"{len(results) / wall:.2f} req/s, {n_tokens / wall:.1f} generated tok/s; "
          f"time to first token median {statistics.median(ttft):.2f} s, "
          f"p95 {ttft[min(len(ttft) - 1, int(0.95 * len(ttft)))]:.2f} s")
    if srv is not None:
        srv.should_exit = True
        thread.join(timeout=30)


if __name__ == "__main__":
    main()
