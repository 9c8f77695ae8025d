"""Pure rules: names, descriptions, capacity, pool lists and key text."""

from __future__ import annotations

from uuid import UUID, uuid4

import pytest

from domain.errors import Rejected
from domain.keys import key_text, parse_key_text
from domain.names import index_id
from domain.rules import (
    MAX_DESCRIPTION_LENGTH,
    MAX_NAME_LENGTH,
    check_capacity,
    clean_description,
    clean_name,
    name_key,
)
from domain.workers import check_pool_ids


@pytest.mark.parametrize(
    ("given", "cleaned"),
    [
        ("Build", "Build"),
        ("  Build  ", "Build"),
        ("\tBuild\n", "Build"),
        ("Build Pool 2", "Build Pool 2"),
        ("Größe ✓", "Größe ✓"),
        ("x" * MAX_NAME_LENGTH, "x" * MAX_NAME_LENGTH),
        (" " + "x" * MAX_NAME_LENGTH + " ", "x" * MAX_NAME_LENGTH),
    ],
    ids=["plain", "spaces", "outer-tab-newline", "inner-space", "unicode", "at-limit",
         "at-limit-after-strip"],
)
def test_clean_name_accepts_and_strips(given: str, cleaned: str) -> None:
    assert clean_name(given) == cleaned


@pytest.mark.parametrize(
    "given",
    ["", "   ", "\t\n", "x" * (MAX_NAME_LENGTH + 1), "a\tb", "a\nb", "a\x00b", "a\x7fb",
     "a\u200bb", "a\u202eb"],
    ids=["empty", "spaces", "whitespace", "too-long", "inner-tab", "inner-newline", "nul",
         "del", "zero-width-space", "rtl-override"],
)
def test_clean_name_rejects(given: str) -> None:
    with pytest.raises(Rejected):
        clean_name(given)


def test_clean_name_says_what_was_wrong_with_which_field() -> None:
    with pytest.raises(Rejected, match="pool name must not be empty"):
        clean_name(" ", "pool name")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Build", "build"),
        ("BUILD", "build"),
        ("Straße", "STRASSE"),
        ("\uff22\uff35\uff29\uff2c\uff24", "build"),
        ("ǅ", "dž"),
    ],
    ids=["title", "upper", "sharp-s", "fullwidth", "digraph"],
)
def test_name_key_folds_names_that_differ_only_in_case_or_width(a: str, b: str) -> None:
    assert name_key(a) == name_key(b)


@pytest.mark.parametrize(("a", "b"), [("Build", "Build2"), ("Build", "Bui ld"), ("a", "á")])
def test_name_key_keeps_different_names_apart(a: str, b: str) -> None:
    assert name_key(a) != name_key(b)


def test_index_ids_collide_for_case_variants_of_one_kind() -> None:
    assert index_id("pool", "Build") == index_id("pool", "BUILD")


def test_index_ids_differ_between_kinds() -> None:
    assert index_id("pool", "Build") != index_id("worker", "Build")


@pytest.mark.parametrize(("length", "ok"), [(0, True), (MAX_DESCRIPTION_LENGTH, True),
                                             (MAX_DESCRIPTION_LENGTH + 1, False)])
def test_clean_description_length(length: int, ok: bool) -> None:
    if ok:
        assert clean_description("d" * length) == "d" * length
    else:
        with pytest.raises(Rejected):
            clean_description("d" * length)


@pytest.mark.parametrize(
    ("capacity", "ok"), [(-1, False), (0, False), (1, True), (4, True), (1000, True), (1001, False)]
)
def test_check_capacity(capacity: int, ok: bool) -> None:
    if ok:
        assert check_capacity(capacity) == capacity
    else:
        with pytest.raises(Rejected):
            check_capacity(capacity)


A, B = uuid4(), uuid4()


@pytest.mark.parametrize("pool_ids", [(A,), (A, B), (B, A)])
def test_check_pool_ids_keeps_order(pool_ids: tuple[UUID, ...]) -> None:
    assert check_pool_ids(pool_ids) == pool_ids


@pytest.mark.parametrize("pool_ids", [(), (A, A), (A, B, A)], ids=["none", "twice", "again"])
def test_check_pool_ids_rejects(pool_ids: tuple[UUID, ...]) -> None:
    with pytest.raises(Rejected):
        check_pool_ids(pool_ids)


@pytest.mark.parametrize("secret", ["abc", "with_underscores_in_it", "-dash-", "x" * 43])
def test_key_text_parses_back_to_id_and_secret(secret: str) -> None:
    key_id = uuid4()

    assert parse_key_text(key_text(key_id, secret)) == (key_id, secret)
