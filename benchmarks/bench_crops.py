"""Subject-aware crops: how often a face stays whole, centre crop against subject crop.

A test set made from the shared targets: the astronaut portrait
(``skimage_astronaut.png``, one face) is pasted, at full and at half size,
off centre onto canvases of other shapes (2:1, 16:9, 4:3, 3:4, 1:2) at five
positions along the canvas's long side (from one end to the other), over
backgrounds that are flat grey or another target (busy: the coffee cup, the
rocket, Starry Night, the cat). Each photo is then cut to tiles of 1:1, 3:2
and 2:3 with ``--crop centre``, with ``--crop subject`` (faces by OpenCV's
Haar cascade, the ``faces`` extra) and with ``--crop subject`` without a
face detector (detail alone). A face counts as kept when its box lies wholly
inside the window: the box the cascade finds on the unmoved portrait
(x 177-272, y 66-161 at 512 px), grown by a tenth of its size on each side.

    python benchmarks/bench_crops.py [--data PATH]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import data_dir, machine  # noqa: E402

from mosaicist import crop as crop_module  # noqa: E402
from mosaicist.crop import choose_window  # noqa: E402

#: The face on the 512 px portrait: (left, top, width, height), grown by a tenth.
FACE = (177 - 9.5, 66 - 9.5, 95 + 19, 95 + 19)
CANVASES = {"2:1": (2, 1), "16:9": (16, 9), "4:3": (4, 3), "3:4": (3, 4), "1:2": (1, 2)}
ASPECTS = {"1:1": (1, 1), "3:2": (3, 2), "2:3": (2, 3)}
BACKGROUNDS = ("flat", "skimage_coffee.png", "skimage_rocket.jpg",
               "starry_night_google_1280.jpg", "skimage_chelsea_cat.png")
POSITIONS = (0.0, 0.25, 0.5, 0.75, 1.0)
SCALES = (1.0, 0.5)


def _canvases(targets: Path):
    """Yield (description, picture, face box) for every photo of the test set."""
    portrait = Image.open(targets / "skimage_astronaut.png").convert("RGB")
    for scale in SCALES:
        side = round(512 * scale)
        face = tuple(value * scale for value in FACE)
        pasted = portrait.resize((side, side), Image.Resampling.LANCZOS)
        for shape_name, (across, down) in CANVASES.items():
            # The canvas's short side a little over the portrait's.
            short = round(side * 1.15)
            size = (short * across // down, short) if across >= down else \
                (short, short * down // across)
            for background in BACKGROUNDS:
                if background == "flat":
                    canvas = Image.new("RGB", size, (128, 128, 128))
                else:
                    canvas = Image.open(targets / background).convert("RGB").resize(
                        size, Image.Resampling.LANCZOS)
                for position in POSITIONS:
                    if size[0] >= size[1]:
                        left = round((size[0] - side) * position)
                        top = (size[1] - side) // 2
                    else:
                        left = (size[0] - side) // 2
                        top = round((size[1] - side) * position)
                    picture = canvas.copy()
                    picture.paste(pasted, (left, top))
                    box = (left + face[0], top + face[1], face[2], face[3])
                    yield (scale, shape_name, background, position), picture, box


def _kept(window, box) -> bool:
    left, top, width, height = box
    return (window.left <= left and left + width <= window.left + window.width
            and window.top <= top and top + height <= window.top + window.height)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="shared data folder")
    args = parser.parse_args()
    targets = data_dir(args.data) / "targets"
    missing = [name for name in ("skimage_astronaut.png", *BACKGROUNDS[1:])
               if not (targets / name).is_file()]
    if missing:
        sys.exit(f"benchmark: {targets} lacks {', '.join(missing)}; pass --data PATH")
    if not crop_module.face_detector_available():
        sys.exit("benchmark: needs OpenCV 4 with its Haar cascades "
                 "(pip install 'opencv-python-headless<5')")
    print(f"# {machine()}")
    detector = crop_module.detect_faces
    kept = {name: {method: [] for method in ("centre", "subject", "detail")}
            for name in ASPECTS}
    started = time.perf_counter()
    seconds = {"subject": 0.0, "detail": 0.0}
    for _, picture, box in _canvases(targets):
        for name, aspect in ASPECTS.items():
            kept[name]["centre"].append(_kept(choose_window(picture, aspect, "centre"), box))
            for method in ("subject", "detail"):
                crop_module.detect_faces = detector if method == "subject" else (
                    lambda grey: None)
                began = time.perf_counter()
                window = choose_window(picture, aspect, "subject")
                seconds[method] += time.perf_counter() - began
                kept[name][method].append(_kept(window, box))
    crop_module.detect_faces = detector
    cases = len(kept["1:1"]["centre"])
    print(f"# {cases} photos x {len(ASPECTS)} tile shapes in {time.perf_counter() - started:.0f} s"
          f"; per window: subject {1000 * seconds['subject'] / cases / len(ASPECTS):.1f} ms, "
          f"detail alone {1000 * seconds['detail'] / cases / len(ASPECTS):.1f} ms")
    print()
    print("| tiles | photos | face kept whole: centre | subject (faces, then detail) | "
          "subject without a face detector | where centre cuts it, subject keeps |")
    print("|---|---|---|---|---|---|")
    totals = {"centre": [], "subject": [], "detail": []}
    for name, methods in kept.items():
        centre, subject, detail = (np.array(methods[key]) for key in ("centre", "subject",
                                                                     "detail"))
        for key, values in (("centre", centre), ("subject", subject), ("detail", detail)):
            totals[key].extend(values.tolist())
        rescued = subject[~centre].mean() if (~centre).any() else float("nan")
        print(f"| {name} | {len(centre)} | {centre.mean():.0%} | {subject.mean():.0%} | "
              f"{detail.mean():.0%} | {rescued:.0%} of {int((~centre).sum())} |")
    centre, subject, detail = (np.array(totals[key]) for key in ("centre", "subject", "detail"))
    print(f"| all | {len(centre)} | {centre.mean():.0%} | {subject.mean():.0%} | "
          f"{detail.mean():.0%} | {subject[~centre].mean():.0%} of {int((~centre).sum())} |")


if __name__ == "__main__":
    main()
