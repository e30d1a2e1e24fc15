"""Datasets bundled with seqpipe (sources and licenses beside each file)."""

from __future__ import annotations

from pathlib import Path

from seqpipe import hookimpl
from seqpipe.registry import Dataset

HERE = Path(__file__).resolve().parent.parent / "datasets"


@hookimpl
def register_datasets(register):
    register(
        "spam-assassin",
        Dataset(
            HERE / "spam_assassin" / "subjects.csv",
            "csv",
            "SpamAssassin public corpus subject lines, ham/spam (PDDL-1.0 / CC0-1.0)",
        ),
    )
    register(
        "brown-pos",
        Dataset(
            HERE / "brown_pos" / "brown-universal.conll",
            "conll",
            "Brown corpus, 5,000 sentences tagged with the 12 universal POS tags (redistribution permitted)",
        ),
    )
    register(
        "census-names",
        Dataset(
            HERE / "census_names" / "first_names.csv",
            "csv",
            "US Census 1990 first names with gender, 5,494 rows (public domain; from the names package)",
        ),
    )
    register(
        "cmudict-g2p",
        Dataset(
            HERE / "cmudict_g2p" / "cmudict-12k.tsv",
            "tsv",
            "CMUdict, 12,000 words with their pronunciations, stress removed (BSD-style; from the cmudict package)",
        ),
    )
    register(
        "sunspots",
        Dataset(
            HERE / "sunspots" / "sunspots.csv",
            "csv",
            "yearly sunspot numbers 1700-2008, column SUNACTIVITY (public domain; from statsmodels)",
        ),
    )
    register(
        "japanese-vowels",
        Dataset(
            HERE / "japanese_vowels" / "train.jsonl",
            "jsonl",
            "Japanese Vowels: 12 LPC cepstrum coefficients per frame, 9 speakers, published split "
            "270 train / 370 test (UCI; Kudo, Toyama & Shimbo 1999; from sktime)",
            test=HERE / "japanese_vowels" / "test.jsonl",
        ),
    )
    register(
        "hironsan-ner",
        Dataset(
            HERE / "hironsan_ner" / "ner.conll",
            "conll",
            "Japanese news named entities, 500 sentences, IOB2, 8 types (MIT per the hironsancorpus package)",
        ),
    )
    register(
        "thai-english",
        Dataset(
            HERE / "thai_english_transliteration" / "th-en-transliteration.tsv",
            "tsv",
            "3,866 English loanwords written in Thai with their English spelling (CC BY 4.0; from pythainlp)",
        ),
    )
    register(
        "seattle-weather",
        Dataset(
            HERE / "seattle_weather" / "seattle-weather.csv",
            "csv",
            "Seattle daily weather 2012-2015: precipitation, temp_max, temp_min, wind (public-domain "
            "NOAA data; from vega_datasets, MIT)",
        ),
    )
