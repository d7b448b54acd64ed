"""Serving memory: the server's resident memory (RSS) per engine, at ready, after a prediction
and after a request with heatmaps, side by side.

    python -m bench.serve_memory [--model-dir DIR] [--backbone mobilenetv2] [--size 224]

Each server runs as `cardamage.serve.server.run` in its own process; RSS is read from
/proc/PID/status (Linux). Without --model-dir a random-weight model is built and exported to
ONNX (the same size as a trained one). Heatmaps need the Keras model whatever the engine, so an
ONNX server imports TensorFlow on its first explain request.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import httpx

from bench.common import free_port, jpeg_photos, parser, random_model, rss_mb, start_server

#: (engine, max_batch) of the servers compared.
SERVERS = (("keras", 32), ("onnx", 32), ("onnx", 8))


def measure(model_dir: Path, engine: str, max_batch: int, photo: bytes, logs: Path) -> list[float]:
    """RSS in MB: at ready, after one prediction, after one prediction with heatmaps."""
    port = free_port()
    log = logs / f"server-{engine}-{max_batch}.log"
    proc = start_server(model_dir, port, log, engine=engine, max_batch=max_batch)
    url = f"http://127.0.0.1:{port}/v1/predict"
    try:
        figures = [rss_mb(proc.pid)]
        for query in ("", "?explain=true"):
            response = httpx.post(url + query, files={"files": ("p.jpg", photo)}, timeout=300)
            response.raise_for_status()
            figures.append(rss_mb(proc.pid))
        return figures
    finally:
        proc.terminate()
        proc.wait(60)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--model-dir", type=Path, help="a trained run or model, exported to ONNX")
    p.add_argument("--backbone", default="mobilenetv2")
    p.add_argument("--size", type=int, default=224)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir
        if model_dir is None:
            from cardamage.inference.export import export_model

            model_dir = random_model(args.backbone, args.size, Path(tmp))
            export_model(model_dir, "onnx")
        photo = jpeg_photos(1)[0]
        print(f"{'engine':<8} {'max_batch':>9} {'at ready':>9} {'predicted':>10} {'explained':>10}")
        for engine, max_batch in SERVERS:
            ready, predicted, explained = measure(model_dir, engine, max_batch, photo, Path(tmp))
            print(
                f"{engine:<8} {max_batch:>9} {ready:>6.0f} MB {predicted:>7.0f} MB "
                f"{explained:>7.0f} MB"
            )


if __name__ == "__main__":
    main()
