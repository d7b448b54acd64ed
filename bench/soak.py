"""Soak test of `cardamage serve`: tens of thousands of mixed good and hostile requests.

    python -m bench.soak [--requests 20000] [--seconds 300] [--clients 8] [--model DIR]

The real server runs as `python -m cardamage serve --model DIR --config SOAK.json` on loopback
(the CLI's path, API key on, tight upload limits so the "too large" cases stay cheap) with its
own TMPDIR. Client threads, each with a keep-alive httpx.Client, send a weighted mix of good
uploads and every kind of bad request the API refuses, until --requests are sent or --seconds
have passed. Then SIGTERM arrives while uploads are half sent, and those must still succeed.

Checked (exit status 1 if any fails): every request answered with its expected status, no 5xx,
the server's RSS and open files flat from after the warm-up to the end, nothing left in its
TMPDIR, in-flight requests answered 200 after SIGTERM, exit status 0 within the grace period.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench.common import (
    add_model,
    add_seed,
    free_port,
    jpeg_photos,
    parser,
    rss_mb,
    saved_model,
    table,
    wait_ready,
)
from cardamage.serve.server import GRACE_S

API_KEY = "soak-key"
#: Upload limits the server runs with: small, so oversized requests cost little to send.
LIMITS = {"max_upload_mb": 1, "max_files": 8}
BOUNDARY = b"soak-boundary"


def parse_args() -> argparse.Namespace:
    p = parser(__doc__)
    add_model(p, "run or model directory (default: a tiny random one)")
    p.add_argument("--size", type=int, default=64, help="input size of the tiny model")
    p.add_argument("--requests", type=int, default=20_000, help="most requests to send")
    p.add_argument("--seconds", type=float, default=300, help="most seconds of load")
    p.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    p.add_argument("--warmup", type=int, default=500, help="requests before the RSS baseline")
    p.add_argument(
        "--max-rss-growth-mb", type=float, default=64, help="RSS growth counted as a leak"
    )
    add_seed(p)
    return p.parse_args()


def tiny_model(folder: Path, size: int) -> Path:
    """MobileNet 0.25 with random weights, saved as training saves a model: loads in a second."""
    from cardamage.quiet import import_keras_quietly

    import_keras_quietly()
    import keras

    from cardamage.model.metadata import ModelSpec

    keras.utils.set_random_seed(0)
    spec = ModelSpec(backbone="mobilenet", weights="none", image_size=size, alpha=0.25)
    saved_model(folder, spec, "random weights, soak")
    return folder


# --- payloads ---------------------------------------------------------------------------


def _encoded(image: Image.Image, image_format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


def payloads() -> dict[str, bytes]:
    """Every file the mix sends, made once: photos, small PNGs and hostile files."""
    jpegs = jpeg_photos(n=4)
    noise = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    png = _encoded(Image.fromarray(noise), "PNG")
    return {
        "jpeg": jpegs[0],
        "jpeg2": jpegs[1],
        "png": png,
        "empty": b"",
        "truncated": jpegs[2][: len(jpegs[2]) // 2],
        "text": b"this is a text file with a .jpg name\n" * 4,
        # 20000x10000 1-bit: 25 KB on disk, past Pillow's own bomb limit (179M pixels)
        "bomb": _encoded(Image.new("1", (20_000, 10_000)), "PNG"),
        # 8000x6000: under Pillow's limit, over the server's max_pixels (40M)
        "huge": _encoded(Image.new("1", (8_000, 6_000)), "PNG"),
        "oversized": jpegs[3] + b"\0" * int(LIMITS["max_upload_mb"] * 2**20),
    }


# --- the request mix --------------------------------------------------------------------

Send = Callable[[httpx.Client, dict[str, bytes]], httpx.Response]


@dataclass(frozen=True)
class Kind:
    """One kind of request: how often it is sent, what it must be answered with, how to send."""

    name: str
    weight: int
    expect: int
    send: Send


def _predict(*names: str, explain: bool = False, field: str = "files") -> Send:
    """POST the named payloads as files, all named .jpg (a name may repeat)."""

    def send(http: httpx.Client, data: dict[str, bytes]) -> httpx.Response:
        files = [(field, (f"{i}-{name}.jpg", data[name])) for i, name in enumerate(names)]
        params = {"explain": "true"} if explain else None
        return http.post("/v1/predict", params=params, files=files)

    return send


def _raw(body: bytes, content_type: str) -> Send:
    def send(http: httpx.Client, data: dict[str, bytes]) -> httpx.Response:
        return http.post("/v1/predict", content=body, headers={"Content-Type": content_type})

    return send


def _get(path: str, **headers: str) -> Send:
    return lambda http, data: http.get(path, headers=headers)


MULTIPART = f"multipart/form-data; boundary={BOUNDARY.decode()}"
TOO_MANY = LIMITS["max_files"] + 1

KINDS = [
    Kind("jpeg", 300, 200, _predict("jpeg")),
    Kind("png", 100, 200, _predict("png")),
    Kind("several files", 100, 200, _predict("jpeg", "png", "jpeg2", "text")),
    Kind("explain=true", 6, 200, _predict("jpeg", explain=True)),
    Kind("zero-byte", 40, 422, _predict("empty")),
    Kind("truncated", 40, 422, _predict("truncated")),
    Kind("text as .jpg", 40, 415, _predict("text")),
    Kind("bomb png", 40, 422, _predict("bomb")),
    Kind("huge dims", 20, 422, _predict("huge")),
    Kind("too many files", 30, 413, _predict(*["png"] * TOO_MANY)),
    Kind("too large", 15, 413, _predict("oversized")),
    Kind("bad multipart", 40, 400, _raw(b"--" + BOUNDARY + b"\r\nbroken", MULTIPART)),
    Kind("not multipart", 20, 415, _raw(b'{"files": []}', "application/json")),
    Kind("wrong field", 40, 422, _predict("jpeg", field="file")),
    Kind("wrong api key", 20, 401, _get("/v1/model", **{"X-API-Key": "wrong"})),
    Kind("GET /v1/model", 60, 200, _get("/v1/model")),
    Kind("health", 60, 200, _get("/v1/health/ready")),
    Kind("unknown path", 20, 404, _get("/v1/nothing")),
]


@dataclass(frozen=True)
class Answer:
    kind: str
    status: int  # 0: no answer (the exception's name is in ``error``)
    seconds: float
    error: str = ""


def _one(http: httpx.Client, kind: Kind, data: dict[str, bytes]) -> Answer:
    started = time.perf_counter()
    try:
        response = kind.send(http, data)
    except httpx.HTTPError as e:
        return Answer(kind.name, 0, time.perf_counter() - started, type(e).__name__)
    return Answer(kind.name, response.status_code, time.perf_counter() - started)


def load(
    url: str, data: dict[str, bytes], clients: int, n: int, deadline: float, seed: int
) -> list[Answer]:
    """Send ``n`` mixed requests from ``clients`` threads (fewer if the deadline passes)."""
    answers: list[Answer] = []
    tickets = iter(range(n))
    lock = threading.Lock()
    weights = [k.weight for k in KINDS]

    def client(k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        headers = {"X-API-Key": API_KEY}
        with httpx.Client(base_url=url, timeout=60, headers=headers) as http:
            while time.monotonic() < deadline:
                with lock:
                    if next(tickets, None) is None:
                        return
                answer = _one(http, rng.choices(KINDS, weights)[0], data)
                with lock:
                    answers.append(answer)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


# --- the server process -------------------------------------------------------------------


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    tmpdir: Path
    log: Path

    def rss_mb(self) -> float:
        return rss_mb(self.proc.pid)

    def open_files(self) -> list[str]:
        """Open descriptors that are files (not sockets, pipes or event fds)."""
        fd_dir = Path(f"/proc/{self.proc.pid}/fd")
        targets = []
        for fd in fd_dir.iterdir():
            with contextlib.suppress(OSError):
                targets.append(os.readlink(fd))
        return sorted(t for t in targets if t.startswith("/"))


@contextlib.contextmanager
def rss_trace(server: Server, every_s: float = 1.0) -> Iterator[list[float]]:
    """The server's RSS sampled every ``every_s`` while the block runs: leaks show as a slope."""
    samples: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(every_s):
            samples.append(server.rss_mb())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        done.set()
        thread.join()


def start_server(model: Path, workdir: Path) -> Server:
    """`cardamage serve` in its own process, with its own TMPDIR, ready to answer."""
    config = workdir / "soak.json"
    config.write_text(json.dumps({"serve": LIMITS}))
    tmpdir = workdir / "server-tmp"
    tmpdir.mkdir()
    port = free_port()
    env = os.environ | {"TMPDIR": str(tmpdir), "CARDAMAGE_API_KEY": API_KEY}
    log = workdir / "server.log"
    command = [sys.executable, "-m", "cardamage", "serve", "--model", str(model)]
    command += ["--config", str(config), "--port", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=out, env=env)
    server = Server(proc, f"http://127.0.0.1:{port}", tmpdir, log)
    wait_ready(proc, server.url, log)
    return server


# --- graceful shutdown --------------------------------------------------------------------


@dataclass
class Shutdown:
    in_flight: int
    answered_200: int
    refused_after: bool  # a new connection after SIGTERM was refused
    exit_code: int | None
    seconds: float


def _slow_upload(photo: bytes, started: threading.Event, go: threading.Event) -> Iterator[bytes]:
    """A multipart body sent in two halves: the second only once ``go`` is set."""
    head = (
        b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="files"; '
        b'filename="in-flight.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    )
    half = len(photo) // 2
    yield head + photo[:half]
    started.set()
    go.wait(60)
    yield photo[half:] + b"\r\n--" + BOUNDARY + b"--\r\n"


def shutdown(server: Server, photo: bytes, n: int) -> Shutdown:
    """SIGTERM while ``n`` uploads are half sent; they must finish with 200, then the exit."""
    go = threading.Event()
    events = [threading.Event() for _ in range(n)]
    statuses: list[int] = []
    headers = {"Content-Type": MULTIPART, "X-API-Key": API_KEY}

    def client(started: threading.Event) -> None:
        body = _slow_upload(photo, started, go)
        try:
            r = httpx.post(f"{server.url}/v1/predict", content=body, headers=headers, timeout=60)
            statuses.append(r.status_code)
        except httpx.HTTPError:
            statuses.append(0)

    threads = [threading.Thread(target=client, args=(e,)) for e in events]
    for t in threads:
        t.start()
    for e in events:
        e.wait(30)
    time.sleep(0.5)  # the halves reach the server and its handlers wait for the rest
    sent = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(1.0)  # uvicorn has closed its listening socket and is draining
    refused = _refused(server.url)
    go.set()
    for t in threads:
        t.join(GRACE_S + 30)
    try:
        code = server.proc.wait(GRACE_S + 10)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        code = None
    return Shutdown(n, statuses.count(200), refused, code, time.monotonic() - sent)


def _refused(url: str) -> bool:
    try:
        httpx.get(f"{url}/v1/health/live", timeout=5)
    except httpx.ConnectError:
        return True
    except httpx.HTTPError:
        return False
    return False


# --- report -------------------------------------------------------------------------------


def _ms(values: list[float], q: float) -> str:
    return f"{np.quantile(values, q) * 1000:.1f}" if values else "-"


def kind_table(answers: list[Answer]) -> str:
    by_kind: dict[str, list[Answer]] = defaultdict(list)
    for a in answers:
        by_kind[a.kind].append(a)
    rows = []
    for kind in KINDS:
        got = by_kind.get(kind.name, [])
        statuses = Counter(a.status for a in got)
        seconds = [a.seconds for a in got]
        shown = ", ".join(f"{s}x{c}" for s, c in sorted(statuses.items()))
        rows.append(
            (kind.name, len(got), kind.expect, shown, _ms(seconds, 0.5), _ms(seconds, 0.99))
        )
    return table(
        rows, ("request", "sent", "expect", "answered (status x count)", "p50 ms", "p99 ms")
    )


@dataclass
class Figures:
    answers: list[Answer]
    wall_s: float
    rss: list[float]  # MB: after the warm-up, sampled during the load, at its end
    files_start: list[str]
    files_end: list[str]
    tmp_left: list[str]
    tracebacks: int
    stop: Shutdown


def checks(f: Figures, max_growth_mb: float) -> list[tuple[str, bool, str]]:
    expected = {k.name: k.expect for k in KINDS}
    wrong = [a for a in f.answers if a.status != expected[a.kind]]
    unanswered = [a for a in f.answers if a.status == 0]
    errors_5xx = [a for a in f.answers if a.status >= 500]
    growth = f.rss[-1] - f.rss[0]
    quarters = " ".join(f"{f.rss[round(q * (len(f.rss) - 1))]:.0f}" for q in (0.25, 0.5, 0.75))
    s = f.stop
    return [
        (
            "every request answered",
            not unanswered,
            f"{len(unanswered)} without an answer"
            + (f": {dict(Counter(a.error for a in unanswered))}" if unanswered else ""),
        ),
        ("every status as expected", not wrong, f"{len(wrong)} unexpected"),
        ("no 5xx", not errors_5xx, f"{len(errors_5xx)} 5xx"),
        (
            "RSS flat",
            growth <= max_growth_mb,
            f"{f.rss[0]:.0f} -> {f.rss[-1]:.0f} MB ({growth:+.0f} MB; quarters {quarters}, "
            f"max {max(f.rss):.0f})",
        ),
        ("open files flat", f.files_end == f.files_start, f"{len(f.files_start)} -> "
         f"{len(f.files_end)} files open"),
        ("no temporary files left", not f.tmp_left, f"{len(f.tmp_left)} in the server's TMPDIR"),
        ("no traceback in the log", not f.tracebacks, f"{f.tracebacks} tracebacks"),
        ("in-flight answered after SIGTERM", s.answered_200 == s.in_flight,
         f"{s.answered_200}/{s.in_flight} answered 200"),
        ("new connections refused after SIGTERM", s.refused_after, ""),
        ("exit 0 within the grace period", s.exit_code == 0 and s.seconds <= GRACE_S,
         f"exit status {s.exit_code} after {s.seconds:.1f} s"),
    ]  # fmt: skip


def report(f: Figures, max_growth_mb: float) -> bool:
    ok_requests = [a.seconds for a in f.answers if a.status]
    print()
    print(kind_table(f.answers))
    print(
        f"\n{len(f.answers)} requests in {f.wall_s:.1f} s ({len(f.answers) / f.wall_s:.0f}/s); "
        f"latency p50 {_ms(ok_requests, 0.5)} ms, p99 {_ms(ok_requests, 0.99)} ms; "
        f"{os.cpu_count()} CPU cores, clients on the same machine\n"
    )
    results = checks(f, max_growth_mb)
    print(
        table(
            [("ok" if ok else "FAIL", name, detail) for name, ok, detail in results],
            ("", "check", ""),
        )
    )
    return all(ok for _, ok, _ in results)


def soak(args: argparse.Namespace, model: Path, workdir: Path) -> Figures:
    data = payloads()
    server = start_server(model, workdir)
    try:
        print(f"server pid {server.proc.pid} at {server.url}; warming up...", flush=True)
        far = time.monotonic() + args.seconds
        load(server.url, data, args.clients, args.warmup, far, args.seed + 1)
        time.sleep(0.5)  # closed keep-alive connections are gone from the server
        rss_start, files_start = server.rss_mb(), server.open_files()
        print(f"sending {args.requests} requests from {args.clients} clients...", flush=True)
        started = time.monotonic()
        with rss_trace(server) as trace:
            answers = load(
                server.url, data, args.clients, args.requests, started + args.seconds, args.seed
            )
        wall = time.monotonic() - started
        time.sleep(0.5)
        rss_end, files_end = server.rss_mb(), server.open_files()
        print("SIGTERM with uploads in flight...", flush=True)
        stop = shutdown(server, data["jpeg"], args.clients)
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
    tmp_left = sorted(p.name for p in server.tmpdir.iterdir())
    tracebacks = server.log.read_text(errors="replace").count("Traceback")
    return Figures(answers, wall, [rss_start, *trace, rss_end], files_start, files_end,
                   tmp_left, tracebacks, stop)  # fmt: skip


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model = args.model or tiny_model(workdir / "model", args.size)
        figures = soak(args, model, workdir)
    sys.exit(0 if report(figures, args.max_rss_growth_mb) else 1)


if __name__ == "__main__":
    main()
