"""Rebuild seqpipe/datasets/seattle_weather/seattle-weather.csv from the PyPI package vega_datasets.

    pip download --no-deps vega_datasets==0.9.0
    unzip vega_datasets-0.9.0-py3-none-any.whl 'vega_datasets/_data/seattle-weather.csv'
    python tools/build_seattle_weather_dataset.py vega_datasets/_data/seattle-weather.csv

The file is copied byte for byte (1,461 daily rows, 2012/01/01 to 2015/12/31, columns ``date``,
``precipitation``, ``temp_max``, ``temp_min``, ``wind``, ``weather``); the script refuses a file
whose sha256 differs from the one recorded in the dataset's README.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

SHA256 = "62f0609f787158128aa2bd102967173a4953122dd4f872bf1d502cae1037df0b"
OUT = Path(__file__).resolve().parents[1] / "seqpipe" / "datasets" / "seattle_weather" / "seattle-weather.csv"


def main(source: Path) -> None:
    data = source.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        raise ValueError(f"{source}: sha256 {digest}, expected {SHA256} (vega_datasets 0.9.0)")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(data)
    rows = data.count(b"\n") - 1  # less the header
    print(f"{OUT}: {rows} rows copied unchanged")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "vega_datasets/_data/seattle-weather.csv"))
