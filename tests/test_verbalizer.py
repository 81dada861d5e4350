"""Verbalizer: how label keys resolve to label indices, the string/dict round trips, `parse`,
and the messages of every refusal.

Pure Python: a hand-made tokenizer stands in for a real one in `label_word_ids`, so the
unknown-token and special-token checks can be exercised separately.
"""

from __future__ import annotations

import re

import pytest

from diffprompt.errors import UserError
from diffprompt.prompting import Verbalizer


def _refused(message: str):
    """pytest.raises for a UserError whose message is exactly `message`."""
    return pytest.raises(UserError, match="^" + re.escape(message) + "$")


# ---------------------------------------------------------------------------- label keys
def test_integer_keys_are_label_indices_whatever_their_order():
    v = Verbalizer({1: "great", "0": ["terrible", "bad"]})
    assert v.class_names == ["0", "1"] and v.words == [["terrible", "bad"], ["great"]]
    assert v.to_string() == "0:terrible,bad;1:great"


def test_name_keys_are_numbered_in_insertion_order_and_keep_their_names():
    v = Verbalizer({"pos": "great", "neg": "terrible"})
    assert v.class_names == ["pos", "neg"] and v.words == [["great"], ["terrible"]]
    assert v.to_string() == "pos:great;neg:terrible"
    # keys that only look like numbers after stripping an 'X' are names, not indices
    assert Verbalizer({"X1": "a", "X0": "b"}).class_names == ["X1", "X0"]


def test_class_names_match_keys_exactly_first_then_case_insensitively():
    names = ["Neg", "Pos"]
    for mapping in ({"pos": "great", "neg": "terrible"}, {"POS": "great", "NEG": "terrible"},
                    {1: "great", "0": "terrible"}):
        v = Verbalizer(mapping, class_names=names)
        assert v.class_names == names and v.words == [["terrible"], ["great"]]
        assert v.to_string() == "Neg:terrible;Pos:great"
    # names differing only in case: an exact match picks its own label
    v = Verbalizer({"a": "x", "A": "y"}, class_names=["a", "A"])
    assert v.words == [["x"], ["y"]]


def test_keys_outside_the_class_names_are_refused_with_the_valid_choices():
    v = Verbalizer({"neg": "terrible", 2: "okay", "1": "great"}, class_names=["neg", "pos", "neutral"])
    assert v.words == [["terrible"], ["great"], ["okay"]]
    for key in ("happy", 3, "3", -1):
        with _refused(f"verbalizer label {key!r} is not a label of this data set (neg, pos, neutral); "
                      "use those names or indices 0..2"):
            Verbalizer({"neg": "terrible", key: "great", "pos": "good"}, class_names=["neg", "pos", "neutral"])


def test_negative_and_repeated_labels_are_refused():
    for key in (-1, "-1", " -1 "):
        with _refused(f"verbalizer label {key!r} is negative; labels are indices 0..n-1 or names"):
            Verbalizer({key: "bad", 0: "good"})
    with _refused("verbalizer gives label '0' twice; list all its words in one entry"):
        Verbalizer({0: "bad", "0": "awful", 1: "good"})
    with _refused("verbalizer gives label 'neg' twice; list all its words in one entry"):
        Verbalizer({"neg": "bad", "NEG": "awful", "pos": "good"}, class_names=["neg", "pos"])


def test_missing_labels_are_named_with_an_example_covering_every_label():
    with _refused("the verbalizer lacks label(s) b, c; give words for every label, e.g. 'a:word;b:word;c:word'"):
        Verbalizer.from_string("a:x", class_names=["a", "b", "c"])
    with _refused("the verbalizer lacks label(s) 1, 2; give words for every label, e.g. '0:word;1:word;2:word;3:word'"):
        Verbalizer({0: "x", 3: "y"})


def test_a_verbalizer_needs_a_non_empty_mapping_with_two_labels():
    msg = ("a verbalizer needs a mapping label -> words, e.g. {0: ['terrible'], 1: ['great']} "
           "or '0:terrible;1:great'")
    for bad in ({}, [["terrible"], ["great"]], None):
        with _refused(msg):
            Verbalizer(bad)
    with _refused("a verbalizer needs at least two labels"):
        Verbalizer({0: "great"})
    with _refused("unknown verbalizer aggregation 'max'; use one of first, mean"):
        Verbalizer({0: "a", 1: "b"}, aggregation="max")


def test_a_verbalizer_copies_another_one():
    v = Verbalizer({"neg": "terrible", "pos": ["great", "good"]}, aggregation="mean")
    copy = Verbalizer(v)
    assert copy.words == [["terrible"], ["great", "good"]] and copy.class_names == ["0", "1"]


# ---------------------------------------------------------------------------- label words
def test_label_words_are_stripped_strings_without_separators():
    v = Verbalizer({0: " terrible ", 1: ("great", " Xmas")})
    assert v.words == [["terrible"], ["great", "Xmas"]]
    with _refused("words for label 0 must be a list of strings"):
        Verbalizer({0: 5, 1: "good"})
    with _refused("label word 5 for label 1 is not a string"):
        Verbalizer({0: "bad", 1: ["good", 5]})
    with _refused("label 1 has an empty label word; remove it"):
        Verbalizer({0: "bad", 1: ["good", "  "]})
    with _refused("label 'pos' has no words; give at least one"):
        Verbalizer({"neg": "bad", "pos": []})
    for word in ("a,b", "a;b", "a:b"):
        with _refused(f"label word {word!r} contains ',', ';' or ':'; label words are plain words"):
            Verbalizer({0: "bad", 1: word})


def test_a_word_may_stand_for_one_label_only_whatever_its_case():
    with _refused("label word 'Great' is given for both 'neg' and 'pos'; each word may stand for one label only"):
        Verbalizer({"neg": ["great"], "pos": ["Great"]})


# ---------------------------------------------------------------------------- string form
def test_from_string_parses_entries_and_skips_empty_ones():
    v = Verbalizer.from_string(" 0 : terrible , bad ;; 1:great,;", aggregation="mean")
    assert v.words == [["terrible", "bad"], ["great"]] and v.aggregation == "mean"


def test_from_string_refusals_say_what_is_wrong():
    empty = "empty verbalizer; write it as 'label:word,word;label:word', e.g. '0:terrible;1:great'"
    for spec in ("", "  ", None, 3):
        with _refused(empty):
            Verbalizer.from_string(spec)
    with _refused("verbalizer entry 'great' has no ':'; write 'label:word,word', e.g. '1:great,good'"):
        Verbalizer.from_string("0:bad; great ")
    with _refused("verbalizer entry ': great' has no label before ':'"):
        Verbalizer.from_string("0:bad; : great")
    with _refused("verbalizer gives label '0' twice; list all its words in one entry"):
        Verbalizer.from_string("0:bad;0:awful;1:good")
    with _refused("label '1' has an empty label word; remove it"):
        Verbalizer.from_string("0:bad;1: , ")
    with _refused("label word 'great:good' contains ',', ';' or ':'; label words are plain words"):
        Verbalizer.from_string("0:bad;1:great:good")


def test_to_dict_and_from_dict_round_trip_names_and_aggregation():
    v = Verbalizer.from_string("pos:great;neg:terrible", class_names=["neg", "pos"], aggregation="mean")
    d = v.to_dict()
    assert d == {"spec": "neg:terrible;pos:great", "class_names": ["neg", "pos"], "aggregation": "mean"}
    back = Verbalizer.from_dict(d)
    assert back == v and back.class_names == ["neg", "pos"] and back.to_dict() == d
    # class names decide the label order of the spec's entries
    w = Verbalizer.from_dict({"spec": "neg:terrible;pos:great", "class_names": ["pos", "neg"]})
    assert w.class_names == ["pos", "neg"] and w.words == [["great"], ["terrible"]]
    assert w.aggregation == "first"


def test_from_dict_reads_label_names_written_by_older_versions():
    w = Verbalizer.from_dict({"spec": "neg:terrible;pos:great", "label_names": ["pos", "neg"]})
    assert w.class_names == ["pos", "neg"] and w.words == [["great"], ["terrible"]]
    both = Verbalizer.from_dict({"spec": "0:terrible;1:great", "class_names": ["a", "b"], "label_names": ["x", "y"]})
    assert both.class_names == ["a", "b"]


# ---------------------------------------------------------------------------- defaults and parse
def test_default_for_keeps_the_aggregation_and_one_label_per_class_name():
    v = Verbalizer.default_for([" Positive", "NEG"], aggregation="mean")
    assert v.words == [["great"], ["terrible"]] and v.class_names == [" Positive", "NEG"]
    assert v.aggregation == "mean"
    # a repeated class name is a label without words, not a silently dropped class
    with pytest.raises(UserError, match=re.escape("lacks label(s) negative")):
        Verbalizer.default_for(["negative", "positive", "negative"])
    with _refused("no default label words for label(s) cats, dogs; pass a verbalizer such as "
                  "'cats:word;bad:word;dogs:word'"):
        Verbalizer.default_for(["cats", "bad", "dogs"])


def test_parse_accepts_each_form_and_passes_names_and_aggregation_on():
    names = ["neg", "pos"]
    for spec in ("pos:great;neg:terrible", {"pos": "great", "neg": "terrible"}, None):
        words = [["great"], ["terrible"]] if spec is None else [["terrible"], ["great"]]
        names_here = ["positive", "negative"] if spec is None else names
        v = Verbalizer.parse(spec, names_here, aggregation="mean")
        assert v.class_names == names_here and v.words == words and v.aggregation == "mean"
    with _refused("no verbalizer and no label names to choose default words from; pass a verbalizer"):
        Verbalizer.parse(None)


def test_parse_returns_a_verbalizer_as_is_or_renamed_for_class_names():
    v = Verbalizer.from_string("0:terrible;1:great", aggregation="mean")
    assert Verbalizer.parse(v) is v
    named = Verbalizer.parse(v, ["neg", "pos"])
    assert named.class_names == ["neg", "pos"] and named.words == v.words and named.aggregation == "mean"
    assert named.to_string() == "neg:terrible;pos:great"


def test_equality_compares_words_and_aggregation():
    v = Verbalizer.from_string("0:bad;1:good")
    assert v == Verbalizer.from_string("neg:bad;pos:good")
    assert v != Verbalizer.from_string("0:awful;1:great")
    assert v != Verbalizer.from_string("0:bad;1:good", aggregation="mean")
    assert v != "0:bad;1:good"


# ---------------------------------------------------------------------------- token ids
class _Tokenizer:
    """Word -> ids from a table; ids 0 and 1 are special, 1 is the unknown token."""

    def __init__(self, table, unk_token_id=1, special_ids=(0, 1)):
        self.table, self.unk_token_id = table, unk_token_id
        if special_ids is not None:
            self.all_special_ids = list(special_ids)

    def __call__(self, text, add_special_tokens=True):
        assert text.startswith(" ") and not add_special_tokens
        return {"input_ids": self.table[text[1:]]}


TABLE = {"bad": [5], "good": [6, 7], "great": [8], "void": [], "oov": [1], "cls": [0], "partly": [9, 1]}


def test_label_word_ids_are_the_sub_tokens_of_each_word():
    v = Verbalizer.from_string("0:bad;1:good,great")
    assert v.label_word_ids(_Tokenizer(TABLE)) == [[[5]], [[6, 7], [8]]]
    # a tokenizer without special ids and without an unknown token
    assert v.label_word_ids(_Tokenizer(TABLE, unk_token_id=None, special_ids=None)) == [[[5]], [[6, 7], [8]]]


@pytest.mark.parametrize("unk, specials", [(1, (0, 1)), (1, None), (1, ()), (None, (0, 1)), (7, (0, 1))])
def test_label_words_on_the_unknown_or_a_special_token_are_refused(unk, specials):
    tok = _Tokenizer(TABLE, unk_token_id=unk, special_ids=specials)
    for word, hits in (("oov", unk == 1 or specials), ("partly", unk == 1 or specials), ("cls", specials)):
        call = Verbalizer.from_string(f"0:bad;1:{word}").label_word_ids
        if hits:
            with _refused(f"label word {word!r} (label '1') is not in the backbone's vocabulary "
                          "(it maps to the unknown token); choose a word the tokenizer knows"):
                call(tok)
        else:
            assert call(tok) == [[[5]], [TABLE[word]]]


def test_a_label_word_without_tokens_is_refused():
    with _refused("label word 'void' (label 'pos') gives no tokens with this tokenizer; choose another word"):
        Verbalizer.from_string("neg:bad;pos:void").label_word_ids(_Tokenizer(TABLE))
