"""options.py on plain values: each parser, the bounds, the merge over a base, and errors that say how to fix.

The hostile-input side (huge numbers, control characters, deep JSON) is in test_input_limits.py.
"""

from __future__ import annotations

import pytest

from mia_robustness.errors import OptionsError
from mia_robustness.json_config import shown_names
from mia_robustness.options import (
    DEFAULT_PROPORTIONS,
    MAX_LIST_ITEMS,
    OPTION_NAMES,
    AuditOptions,
    normalize_name,
    options_from_mapping,
    parse_key_value_pairs,
)


def refused(values: dict) -> str:
    """The message of the OptionsError (a 400) that ``values`` raise."""
    with pytest.raises(OptionsError) as caught:
        options_from_mapping(values)
    assert caught.value.http_status == 400
    return caught.value.message


# ---------------------------------------------------------------- proportions


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.5,1", (0.5, 1.0)),
        ("1; 0.25 ,0.5", (0.25, 0.5, 1.0)),  # header separators and spaces; sorted
        ([1, 0.5, 0.5], (0.5, 1.0)),  # duplicates dropped
        ("10,50,100", (0.1, 0.5, 1.0)),  # the replaced product's percentages
        ([1 / 3], (0.333333,)),  # rounded to 6 places, so the report's keys are stable
        ("1", (1.0,)),  # 1 is a share (every value in (1, 100] would be percent)
    ],
)
def test_proportions_are_parsed_sorted_and_deduplicated(value, expected):
    assert options_from_mapping({"proportions": value}).proportions == expected


@pytest.mark.parametrize(
    ("value", "fragments"),
    [
        ("", ("empty", "e.g. 0.1,0.5,1")),
        ("0.5,half", ("'half'", "not a number", "(0, 1]")),
        ("0,0.5", ("'0'", "(0, 1]")),
        ("50,0.5", ("'50'", "(0, 1]", "or all in percent")),  # percent only when every value is one
        ("-0.1", ("(0, 1]",)),
        (3.5, ("comma-separated list",)),
    ],
)
def test_bad_proportions_say_what_is_allowed(value, fragments):
    message = refused({"proportions": value})
    assert "proportions" in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


# ---------------------------------------------------------------- attack models


def test_attack_models_case_spaces_duplicates_and_order():
    options = options_from_mapping({"attack_models": " RF, threshold ,rf;NN"})
    assert options.attack_models == ("rf", "threshold", "nn")  # first mention keeps its place


def test_unknown_or_empty_attack_models_list_the_choices():
    message = refused({"attack_models": "rf,svm"})
    assert "'svm'" in message and "choose from" in message
    for name in ("nn", "rf", "gb", "threshold", "class_threshold", "lira", "rmia"):
        assert name in message
    assert "choose from" in refused({"attack_models": " , "})


def test_a_list_option_over_the_item_cap_is_refused_before_parsing():
    with pytest.raises(OptionsError) as caught:
        options_from_mapping({"attack_models": ["rf"] * (MAX_LIST_ITEMS + 1)})
    assert caught.value.code == "too_many_values" and str(MAX_LIST_ITEMS) in caught.value.message
    assert options_from_mapping({"attack_models": ["rf"] * MAX_LIST_ITEMS}).attack_models == ("rf",)


# ---------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"repeats": "3"}, ("repeats", 3)),
        ({"repeats": " 20 "}, ("repeats", 20)),
        ({"seed": 2**32 - 1}, ("seed", 2**32 - 1)),
        ({"reference_models": "2"}, ("reference_models", 2)),
        ({"eval_fraction": "0.1"}, ("eval_fraction", 0.1)),
        ({"eval_fraction": 0.5}, ("eval_fraction", 0.5)),
    ],
)
def test_numbers_at_and_inside_their_bounds(values, expected):
    name, value = expected
    assert getattr(options_from_mapping(values), name) == value


@pytest.mark.parametrize(
    ("values", "fragments"),
    [
        ({"repeats": True}, ("integer from 1 to 20", "True")),  # a JSON true is not 1
        ({"repeats": "2.5"}, ("integer from 1 to 20", "'2.5'")),
        ({"repeats": 0}, ("under the minimum of 1", "give an integer from 1 to 20")),
        ({"repeats": 21}, ("over the limit of 20", "reruns every attack")),
        ({"seed": -1}, ("seed", "from 0 to 4294967295")),
        ({"seed": 2**32}, ("seed", "over the limit")),
        ({"reference_models": 3}, ("even", "each record is in half of them", "from 2 to 64")),
        ({"reference_models": 0}, ("under the minimum of 2",)),
        ({"eval_fraction": "0.05"}, ("between 0.1 and 0.5",)),
        ({"eval_fraction": "a third"}, ("number from 0.1 to 0.5",)),
        ({"eval_fraction": False}, ("number from 0.1 to 0.5",)),
    ],
)
def test_bad_numbers_name_the_range(values, fragments):
    message = refused(values)
    assert next(iter(values)) in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


# ---------------------------------------------------------------- device, label column, names


def test_device_and_label_column():
    assert options_from_mapping({"device": " CUDA "}).device == "cuda"
    assert "one of auto, cpu, cuda" in refused({"device": "tpu"})
    assert options_from_mapping({"label_column": "income"}).label_column == "income"
    assert options_from_mapping({"label_column": "  "}).label_column is None  # blank: find it
    assert options_from_mapping({"label_column": 7}).label_column == "7"


def test_option_names_in_any_spelling():
    assert normalize_name("--Attack-Models") == normalize_name("attack_models") == "attack_models"
    options = options_from_mapping({"--attack-models": "rf", "EVAL-FRACTION": "0.2"})
    assert (options.attack_models, options.eval_fraction) == (("rf",), 0.2)
    message = refused({"colour": "red"})
    assert "unknown option 'colour'" in message
    assert all(name in message for name in OPTION_NAMES)  # the valid names are listed


# ---------------------------------------------------------------- the merge


def test_values_lay_over_the_base_and_none_is_ignored():
    base = options_from_mapping({"repeats": 2, "attack_models": "rf"})
    assert base.explicit == ("repeats", "attack_models")
    merged = options_from_mapping({"repeats": None, "seed": 9, "attack_models": "gb"}, base)
    assert (merged.repeats, merged.seed, merged.attack_models) == (2, 9, ("gb",))
    assert merged.explicit == ("repeats", "attack_models", "seed")  # each once, in order of first setting
    assert options_from_mapping(None, base) is base
    assert options_from_mapping({}) == AuditOptions()
    assert AuditOptions().proportions == DEFAULT_PROPORTIONS


def test_options_must_be_a_mapping():
    with pytest.raises(OptionsError, match="JSON object of option names"):
        options_from_mapping(["repeats", 1])  # type: ignore[arg-type]


def test_to_dict_round_trips_through_the_parser():
    options = options_from_mapping(
        {"proportions": "0.2,1", "attack_models": "rf,nn", "repeats": 4, "seed": 3, "label_column": "y"}
    )
    data = options.to_dict()
    assert list(data) == list(OPTION_NAMES) and data["proportions"] == [0.2, 1.0]
    assert options_from_mapping(data) == options


def test_options_built_in_code_are_checked_like_parsed_ones():
    with pytest.raises(OptionsError, match="reference_models"):
        AuditOptions(reference_models=5)
    with pytest.raises(OptionsError, match="repeats"):
        AuditOptions(repeats=0)


# ---------------------------------------------------------------- the custom-attributes header


def test_key_value_pairs():
    assert parse_key_value_pairs("repeats=1; proportions=0.1,0.5 ;;attack_models = rf") == {
        "repeats": "1",
        "proportions": "0.1,0.5",
        "attack_models": "rf",
    }
    assert parse_key_value_pairs("label_column=a=b") == {"label_column": "a=b"}  # split at the first '='
    assert parse_key_value_pairs("") == {}
    for bad in ("repeats", "=1", "repeats=1;seed"):
        with pytest.raises(OptionsError, match="key=value"):
            parse_key_value_pairs(bad)


def test_shown_names_cuts_the_list():
    assert shown_names(["a", "b"]) == "'a', 'b'"
    assert shown_names([f"c{i}" for i in range(8)], most=3) == "'c0', 'c1', 'c2', ..."
