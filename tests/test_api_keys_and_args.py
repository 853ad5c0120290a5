"""Pure parts of the API: key entries with names and scopes, and search arguments → typed query."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from deepwatch.contracts import ContractError
from deepwatch.settings import API_SCOPES, derived_key_name, load_settings, parse_api_key
from storage.query_args import argument_of, build_query

ALL = frozenset(API_SCOPES)


@pytest.mark.parametrize(
    ("entry", "name", "secret", "scopes"),
    [
        ("s3cret", None, "s3cret", ALL),
        ("s3cret:read+review", None, "s3cret", {"read", "review"}),
        ("alice=s3cret", "alice", "s3cret", ALL),
        ("ci.bot=s3cret:submit", "ci.bot", "s3cret", {"submit"}),
        ("abcd==", None, "abcd==", ALL),  # base64 padding is not a name
        ("QUJD=", None, "QUJD=", ALL),
        ("Alice=s3cret", None, "Alice=s3cret", ALL),  # names are lower-case slugs; this is a plain key
    ],
)
def test_key_entries(entry: str, name: str | None, secret: str, scopes: set[str]) -> None:
    parsed = parse_api_key(entry)
    assert (parsed.secret, parsed.scopes) == (secret, scopes)
    assert parsed.name == (name or derived_key_name(secret))
    assert secret not in derived_key_name(secret) and derived_key_name(secret) == derived_key_name(secret)


def test_key_names_must_be_unique_and_errors_hide_secrets(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ContractError) as caught:
        load_settings(data_dir=tmp_path, api_keys="ops=one-secret,ops=two-secret")
    message = str(caught.value)
    assert "'ops'" in message and "one-secret" not in message and "two-secret" not in message


def test_build_query_reads_arguments_as_typed() -> None:
    now = datetime(2026, 5, 1, tzinfo=UTC)
    query = build_query(q="cat video", verdict=["fake,unscored", "real"], min_score=0.5, detector=["meso4_df=:0.9"],
                        platform=["youtube"], since="7d", until="2026-05-01", sort="newest", limit=10, now=now)
    assert query.verdict == ["fake", "unscored", "real"]
    assert (query.score.min, query.score.max) == (0.5, 1.0)  # type: ignore[union-attr]
    assert (query.detectors["meso4_df"].min, query.detectors["meso4_df"].max) == (0.0, 0.9)
    assert query.seen_since == now - timedelta(days=7) and query.seen_until == now
    assert (query.text, query.sort, query.limit, query.platform) == ("cat video", "newest", 10, ["youtube"])


@pytest.mark.parametrize(
    ("arguments", "field", "argument"),
    [
        ({"verdict": ["maybe"]}, "verdict.0", "verdict"),
        ({"max_score": 3}, "score.max", "max_score"),
        ({"min_score": 0.9, "max_score": 0.1}, "score", "min_score"),
        ({"detector": ["meso4_df"]}, "detectors", "detector"),
        ({"detector": ["meso4_df=0.5:2"]}, "detectors.meso4_df.max", "detector"),
        ({"since": "yesterday-ish"}, "seen_since", "since"),
        ({"until": "soon"}, "seen_until", "until"),
        ({"since": "2026-02-01", "until": "2026-01-01"}, "<root>", "since"),
        ({"q": "..."}, "text", "q"),
    ],
)
def test_errors_name_the_field_and_map_back_to_the_argument(arguments: dict, field: str, argument: str) -> None:
    with pytest.raises(ContractError) as caught:
        build_query(**arguments)
    assert caught.value.fields == [field]
    assert argument_of(field) == argument
