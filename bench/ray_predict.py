"""`cardamage predict --ray` against today's single process, on the same generated photos.

    python -m bench.ray_predict [--n 2000] [--size 224] [--actors 2] [--work DIR]

Both runs are the CLI as a user starts it, one after the other, on the same `cardamage synth`
photos and the same model (MobileNetV2 at --size, random weights with batch norms set from
photos, exported to ONNX; nothing is downloaded):

  single   cardamage predict PHOTOS --engine onnx --output local.csv
  ray      cardamage predict PHOTOS --ray --actors N --cpus-per-actor C --output ray/
           (a Ray started by the command on this machine; C shares the CPUs the write tasks
           leave among the actors, each of which decodes, scores and decides its batches with
           one ONNX Runtime thread per whole CPU)

Each runs twice, on the first half of the photos and on all of them, so that what a run costs
once (start-up, Ray's included; the model loaded; the last file written) and what each photo
costs come apart: the steady rate is the second half's photos over the time they added, the
throughput a long job sees.

Printed per engine: photos per second end to end (process start to exit, all photos), Ray's
throughput once it is up (the command's own summary), the steady rate, their ratios to the
single process (target >= 0.8) and each run's peak memory: the PSS of the command's whole
process tree (Ray's GCS, raylet, workers and object store included), sampled every 0.1 s. Both
outputs must hold the same rows. The machine is shared: run it with `nice -n 10`; from the
repository root.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from bench.common import ROOT, add_work, parser, saved_model, work_dir
from cardamage.distributed.predict import LIGHT_CPUS

CLI = [sys.executable, "-m", "cardamage"]
#: The Ray run's summary line: "... in 12.3 s (163.0 images/s)".
RAY_RATE = re.compile(r"in ([\d.]+) s \(([\d.]+) images/s\)")


def parse_args() -> argparse.Namespace:
    p = parser(__doc__)
    p.add_argument("--n", type=int, default=2000, help="generated photos")
    p.add_argument("--size", type=int, default=224, help="photo and model input size")
    p.add_argument("--actors", type=int, default=2, help="Ray model actors")
    p.add_argument("--batch", type=int, default=32)
    add_work(p, "keeps photos and model between runs", "--workdir")
    return p.parse_args()


def prepare(workdir: Path, n: int, size: int) -> tuple[Path, Path]:
    """(photo folder, run directory), made once per work directory."""
    photos, run = workdir / "photos", workdir / "run"
    if not (photos / "labels.csv").exists():
        subprocess.run([*CLI, "synth", "--out", str(photos), "--n", str(n), "--size", str(size)],
                       check=True)  # fmt: skip
    if not (run / "model" / "model.onnx").exists():  # in a child: TensorFlow's memory goes
        build = f"from bench.ray_predict import build_model; build_model({str(run)!r}, {size})"
        subprocess.run([sys.executable, "-c", build], check=True, cwd=ROOT)
    return photos / "images", run


def build_model(run: str, size: int) -> None:
    """MobileNetV2 with random weights, batch norms set from photos, saved and exported."""
    import keras

    from cardamage.data.images import load_image
    from cardamage.inference.export import export_model
    from cardamage.model.metadata import ModelSpec

    keras.utils.set_random_seed(0)
    spec = ModelSpec("mobilenetv2", "none", size)
    images = sorted((Path(run).parent / "photos" / "images").glob("*.jpg"))[:32]
    pixels = np.stack([load_image(p, size) for p in images])
    saved_model(Path(run) / "model", spec, "random weights", pixels)
    export_model(Path(run), "onnx")


def tree_pss_kb(root: int) -> int:
    """Proportional set size of a process and all its descendants: shared pages (Ray's object
    store, libraries) counted once in total, not once per process."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        total += int(re.search(r"^Pss:\s+(\d+)", rollup, re.M).group(1))
    return total


def timed(argv: list[str]) -> tuple[float, float, str]:
    """(seconds, peak MB of the process tree, stderr) of one command run to its end."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_pss_kb(proc.pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    seconds = time.monotonic() - started
    sampler.join()
    if proc.returncode not in (0, 1):
        sys.exit(f"{' '.join(argv)} failed:\n{err[-3000:]}")
    return seconds, peak[0] / 1024, err


def same_rows(local_csv: Path, ray_dir: Path) -> None:
    import pyarrow.dataset as pads

    with open(local_csv, encoding="utf-8") as f:
        local = {row["image"]: row for row in csv.DictReader(f)}
    rows = pads.dataset(ray_dir, format="parquet").to_table().to_pylist()
    assert {r["image"] for r in rows} == set(local) and len(rows) == len(local), "rows differ"
    worst = max(abs(r["severity:minor"] - float(local[r["image"]]["severity:minor"])) for r in rows)
    assert worst < 1e-3, f"scores differ by {worst}"


def first_half(images: Path, folder: Path) -> Path:
    """A folder of hard links to the first half of the photos (no copies)."""
    folder.mkdir(exist_ok=True)
    photos = sorted(images.glob("*.jpg"))
    for photo in photos[: len(photos) // 2]:
        if not (folder / photo.name).exists():
            os.link(photo, folder / photo.name)
    return folder


def steady(half: float, full: float, n: int) -> float:
    """Photos per second the second half added: what a run costs once cancels out."""
    return (n - n // 2) / max(full - half, 1e-9)


def main() -> int:
    args = parse_args()
    workdir = work_dir(args.work, "ray-bench-")
    images, run = prepare(workdir, args.n, args.size)
    half = first_half(images, workdir / "half")
    n = len(list(images.glob("*.jpg")))
    cpus = os.cpu_count() or 1
    # the CPUs the writes leave, shared by the actors
    per_actor = math.floor((cpus - LIGHT_CPUS) / args.actors * 100) / 100
    ray_argv = ["--ray", "--actors", str(args.actors), "--cpus-per-actor", str(per_actor)]
    single, ray = {}, {}
    for name, folder in (("half", half), ("all", images)):
        common = [str(folder), "--model", str(run), "--batch-size", str(args.batch)]
        out_csv, out_ray = workdir / f"local-{name}.csv", workdir / f"ray-{time.time_ns()}"
        single[name] = timed(
            [*CLI, "predict", *common, "--engine", "onnx", "--output", str(out_csv)]
        )
        ray[name] = timed([*CLI, "predict", *common, *ray_argv, "--output", str(out_ray)])
        same_rows(out_csv, out_ray)
    ray_up = RAY_RATE.search(ray["all"][2])
    if ray_up is None:
        sys.exit(f"no summary line from the Ray run:\n{ray['all'][2][-2000:]}")
    single_rate, ray_rate = n / single["all"][0], n / ray["all"][0]
    single_steady = steady(single["half"][0], single["all"][0], n)
    ray_steady = steady(ray["half"][0], ray["all"][0], n)
    print(f"{n} photos at {args.size} px, MobileNetV2 ONNX, batch {args.batch}, {cpus} CPUs")
    print(
        f"  single process      {single_rate:7.1f} photos/s   peak {single['all'][1]:6.0f} MB"
        f"   steady {single_steady:6.1f} photos/s"
    )
    print(
        f"  Ray, {args.actors} actors      {ray_rate:7.1f} photos/s   peak {ray['all'][1]:6.0f} MB"
        f"   steady {ray_steady:6.1f} photos/s"
        f"   (end to end, {ray['all'][0] - float(ray_up.group(1)):.1f} s of Ray start-up)"
    )
    print(f"  Ray once up         {float(ray_up.group(2)):7.1f} photos/s")
    print(f"ratio Ray / single, steady:     {ray_steady / single_steady:.2f} (target >= 0.8)")
    print(f"ratio Ray / single, end to end: {ray_rate / single_rate:.2f}")
    print(f"ratio Ray once up / single:     {float(ray_up.group(2)) / single_rate:.2f}")
    print(f"peak memory Ray / single:       {ray['all'][1] / single['all'][1]:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
