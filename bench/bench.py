"""Wall-time benchmark of the main job and of the scenario suite (a script, not a test).

python bench/bench.py              # warm main job (images and snapshots kept), 3 runs
python bench/bench.py --cold       # first remove harness images, snapshots and the base image
python bench/bench.py --suite      # also time `pytest scenarios/`
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import docker


def remove_images(image: str) -> None:
    """Forget one image profile's build, its snapshots and its base image: the next run is cold."""
    from harness.images import ImageProfile, image_repository, snapshot_repository

    base = ImageProfile.load(image).base
    client = docker.from_env()
    client.images.prune(filters={"dangling": True})  # old snapshot layers that lost their tag
    # children before parents: snapshots, then builds, then the base
    prefixes = (snapshot_repository(image, "primary"), snapshot_repository(image, "secondary"), image_repository(image))
    for prefix in (*(f"{p}:" for p in prefixes), base):
        for found in client.images.list():
            if any(t.startswith(prefix) for t in found.tags):
                client.images.remove(found.id, force=True)


def timed(argv: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cold", action="store_true")
    parser.add_argument("--suite", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--image", default="debian-12")
    args = parser.parse_args()
    up = [sys.executable, "-m", "harness", "up", "--image", args.image]
    if args.cold:
        remove_images(args.image)
        print(f"main job, cold (base image, image and snapshots built): {timed(up):.1f} s")
    warm = [timed(up) for _ in range(args.runs)]
    print(
        f"main job, warm: median {statistics.median(warm):.1f} s over {len(warm)} runs "
        f"({', '.join(f'{t:.1f}' for t in warm)})"
    )
    if args.suite:
        suite = timed(
            [sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadgroup", "scenarios", "--image", args.image]
        )
        print(f"scenario suite (-n 2): {suite:.1f} s")


if __name__ == "__main__":
    main()
