"""The model contract itself (runtime/contract.py): what a model file must say about itself, and
what the runtime refuses to guess."""

from __future__ import annotations

import json

import pytest

from runtime.contract import (
    FER2013_CSV_LABELS,
    FER2013_LABELS,
    META_LABELS,
    META_SPEC,
    SPEC_VERSION,
    ContractError,
    ModelSpec,
    csv_to_canonical,
)
from runtime.errors import EmocamError


def test_default_spec_is_fer2013_raw_pixels():
    spec = ModelSpec()
    assert spec.labels == FER2013_LABELS == tuple(sorted(FER2013_LABELS))  # the Kaggle folders' order
    assert spec.input_shape == (48, 48, 1) and spec.num_classes == 7
    assert spec.input_range == (0.0, 255.0)  # raw pixels: any 1/255 rescale is inside the graph


def test_metadata_round_trip():
    spec = ModelSpec(labels=("calm", "joy"), input_hw=(40, 44))
    meta = spec.to_metadata()
    assert json.loads(meta[META_LABELS]) == ["calm", "joy"]
    assert ModelSpec.from_metadata(meta) == spec
    assert ModelSpec.from_json(spec.to_json()) == spec


def test_csv_indices_map_to_the_folder_order_by_name():
    mapped = [FER2013_LABELS[csv_to_canonical(i)] for i in range(len(FER2013_CSV_LABELS))]
    assert mapped == list(FER2013_CSV_LABELS)  # 4 is sad and 6 is neutral in the CSV
    assert sorted(csv_to_canonical(i) for i in range(7)) == list(range(7))


BAD_SPECS = [  # id, ModelSpec arguments
    ("one-label", {"labels": ("happy",)}),
    ("duplicate-labels", {"labels": ("happy", "happy")}),
    ("uppercase-label", {"labels": ("Happy", "sad")}),
    ("empty-label", {"labels": ("", "sad")}),
    ("zero-size", {"input_hw": (0, 48)}),
    ("two-channels", {"channels": 2}),
    ("nchw", {"layout": "NCHW"}),
    ("inverted-range", {"input_range": (255, 0)}),
]


@pytest.mark.parametrize("kwargs", [r[1] for r in BAD_SPECS], ids=[r[0] for r in BAD_SPECS])
def test_a_spec_that_breaks_the_contract_is_refused(kwargs: dict):
    with pytest.raises(ContractError):
        ModelSpec(**kwargs)


BAD_METADATA = [  # id, metadata, words of the error
    ("nothing", {}, "re-export"),
    ("labels-only", {META_LABELS: json.dumps(list(FER2013_LABELS))}, META_SPEC),
    ("spec-not-json", {META_SPEC: "{", META_LABELS: "[]"}, "not JSON"),
    ("spec-a-list", {META_SPEC: "[]", META_LABELS: "[]"}, "JSON object"),
    ("unknown-field", {META_SPEC: json.dumps({"labels": ["a", "b"], "colour": "red"}), META_LABELS: '["a", "b"]'},
     "unknown fields"),
    ("newer-version", {META_SPEC: json.dumps({"version": SPEC_VERSION + 1}),
                       META_LABELS: json.dumps(list(FER2013_LABELS))}, "upgrade"),
    ("labels-disagree", {**ModelSpec().to_metadata(), META_LABELS: json.dumps(list(reversed(FER2013_LABELS)))},
     "disagree"),
    ("labels-not-json", {**ModelSpec().to_metadata(), META_LABELS: "happy,sad"}, "not a JSON list"),
]


@pytest.mark.parametrize(("meta", "words"), [r[1:] for r in BAD_METADATA], ids=[r[0] for r in BAD_METADATA])
def test_metadata_that_breaks_the_contract_is_refused(meta: dict, words: str):
    with pytest.raises(ContractError, match=words) as info:
        ModelSpec.from_metadata(meta)
    assert isinstance(info.value, EmocamError) and isinstance(info.value, ValueError)  # catchable as either
    assert "--" not in str(info.value)  # library errors name no command-line flag


def test_shipped_models_carry_the_contract():
    from models import SHIPPED_MODELS
    from runtime.classifier import CPU, open_session

    for name, path in SHIPPED_MODELS.items():
        meta = open_session(str(path), [CPU]).get_modelmeta().custom_metadata_map
        spec = ModelSpec.from_metadata(meta)
        assert spec.labels == FER2013_LABELS and spec.input_shape == (48, 48, 1), name
