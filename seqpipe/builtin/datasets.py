"""Datasets bundled with seqpipe (sources and licenses beside each file)."""

from __future__ import annotations

from pathlib import Path

from seqpipe import hookimpl
from seqpipe.registry import Dataset

HERE = Path(__file__).resolve().parent.parent / "datasets"


@hookimpl
def register_datasets(register):
    register("spam-assassin", Dataset(HERE / "spam_assassin" / "subjects.csv", "csv",
                                      "SpamAssassin public corpus subject lines, ham/spam (PDDL-1.0 / CC0-1.0)"))
    register("brown-pos", Dataset(HERE / "brown_pos" / "brown-universal.conll", "conll",
                                  "Brown corpus, 5,000 sentences tagged with the 12 universal POS tags (redistribution permitted)"))
    register("census-names", Dataset(HERE / "census_names" / "first_names.csv", "csv",
                                     "US Census 1990 first names with gender, 5,494 rows (public domain; from the names package)"))
    register("cmudict-g2p", Dataset(HERE / "cmudict_g2p" / "cmudict-12k.tsv", "tsv",
                                    "CMUdict, 12,000 words with their pronunciations, stress removed (BSD-style; from the cmudict package)"))
    register("sunspots", Dataset(HERE / "sunspots" / "sunspots.csv", "csv",
                                 "yearly sunspot numbers 1700-2008, column SUNACTIVITY (public domain; from statsmodels)"))
