"""Serving benchmark: does micro-batching keep the HTTP server close to the bare Predictor?

    python -m bench.serve [--backbone mobilenet] [--size 160] [--model-dir DIR] [--clients 8]

The server runs as `cardamage.serve.server.run` in its own process (the CLI's path, access log
on); the clients are threads with one keep-alive httpx.Client each, in this process, sending one
640x640 JPEG per request over loopback. Everything shares this machine's cores, so the figures
are what one box does, clients included. The Predictor baselines do the same work end to end:
encoded JPEG bytes in, predictions for every task out.

Targets: server throughput with 8 clients >= 70 % of the Predictor's batch throughput, and one
client's p50 latency <= 2x the Predictor's single-image latency.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from bench.common import (
    durations,
    free_port,
    jpeg_photos,
    parser,
    random_model,
    start_server,
    table,
    timed,
)


def parse_args() -> argparse.Namespace:
    p = parser(__doc__)
    p.add_argument("--backbone", default="mobilenet")
    p.add_argument("--size", type=int, default=160, help="model input size")
    p.add_argument(
        "--model-dir", type=Path, help="a trained run or model (default: random weights)"
    )
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=480, help="requests in the concurrent run")
    p.add_argument("--single", type=int, default=60, help="requests in the one-client run")
    p.add_argument("--batch-size", type=int, default=32, help="the Predictor baseline's batch")
    return p.parse_args()


def predictor_figures(model_dir: Path, data: list[bytes], batch_size: int) -> dict[str, float]:
    """The Predictor alone: batch throughput and single-image latency, bytes to predictions."""
    from cardamage.inference.predictor import Predictor

    predictor = Predictor.load(model_dir)
    predictor.predict(data[:batch_size], batch_size=batch_size)  # warm-up: traces, buffers
    predictor.predict(data[:1])
    predictor.predict(data[:2])
    work = data * 4
    _, seconds = timed(lambda: predictor.predict(work, batch_size=batch_size))
    throughput = len(work) / seconds
    latencies = durations(lambda photo: predictor.predict([photo]), data)
    return {"throughput": throughput, "p50": statistics.median(latencies)}


def load(url: str, data: list[bytes], clients: int, requests: int) -> dict[str, float]:
    """``clients`` threads in a closed loop until ``requests`` are answered."""
    latencies: list[float] = []
    failures: list[int] = []
    counter = iter(range(requests))
    lock = threading.Lock()

    def client(k: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                files = [("files", (f"{i}.jpg", data[(i + k) % len(data)], "image/jpeg"))]
                started = time.perf_counter()
                response = http.post("/v1/predict", files=files)
                elapsed = time.perf_counter() - started
                with lock:
                    (latencies if response.status_code == 200 else failures).append(
                        elapsed if response.status_code == 200 else response.status_code
                    )

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    if failures:
        sys.exit(f"{len(failures)} requests failed: statuses {sorted(set(failures))}")
    q = np.quantile(latencies, [0.5, 0.99])
    return {"throughput": len(latencies) / wall, "p50": float(q[0]), "p99": float(q[1])}


def report(args: argparse.Namespace, base: dict, many: dict, one: dict) -> None:
    ratio = many["throughput"] / base["throughput"]
    slowdown = one["p50"] / base["p50"]
    ms = 1000
    rows = [
        (f"Predictor, batches of {args.batch_size}", f"{base['throughput']:.1f}", "", "", ""),
        ("Predictor, one image", f"{1 / base['p50']:.1f}", f"{base['p50'] * ms:.1f}", "", ""),
        (
            f"server, {args.clients} clients",
            f"{many['throughput']:.1f}",
            f"{many['p50'] * ms:.1f}",
            f"{many['p99'] * ms:.1f}",
            f"{ratio:.2f}x batch (target >= 0.70)",
        ),
        (
            "server, 1 client",
            f"{one['throughput']:.1f}",
            f"{one['p50'] * ms:.1f}",
            f"{one['p99'] * ms:.1f}",
            f"{slowdown:.2f}x one image (target <= 2.00)",
        ),
    ]
    print(f"\n{args.backbone} at {args.size} px, 640x640 JPEGs, {os.cpu_count()} CPU cores")
    print(table(rows, ("", "images/s", "p50 ms", "p99 ms", "vs Predictor")))
    ok = ratio >= 0.7 and slowdown <= 2.0
    print(f"\ntargets {'met' if ok else 'NOT met'}")


def main() -> None:
    args = parse_args()
    data = jpeg_photos()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir or random_model(args.backbone, args.size, Path(tmp))
        print(f"model: {model_dir}; measuring the Predictor...", flush=True)
        base = predictor_figures(model_dir, data, args.batch_size)
        port = free_port()
        server = start_server(model_dir, port, Path(tmp) / "server.log")
        try:
            url = f"http://127.0.0.1:{port}"
            load(url, data, args.clients, 4 * args.clients)  # warm-up
            print("measuring the server...", flush=True)
            many = load(url, data, args.clients, args.requests)
            one = load(url, data, 1, args.single)
        finally:
            server.terminate()
            server.wait(60)
    report(args, base, many, one)


if __name__ == "__main__":
    main()
