"""Body-element recipes: parsing, defaults and overrides (SPEC.md §3.2, §9.3)."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tpas.protocol import (
    DEFAULT_RECIPES,
    REPORT_TYPES,
    AsKey,
    BodyElement,
    BodyFormat,
    Reason,
    Recipe,
    RecipeError,
    Uplink,
    body_elements,
    canonical_query,
    compute_token,
    encode,
    parse,
    verify_report,
)

NAMES = st.from_regex(r"[A-Za-z0-9_-]{1,16}", fullmatch=True)
# Stand-in text: no '+' (the separator) and no blank at either end (parsing strips it).
ABSENT = st.from_regex(r"([^+\s]([^+]{0,8}[^+\s])?)?", fullmatch=True)
RECIPES = st.lists(st.builds(BodyElement, NAMES, st.booleans(), ABSENT), min_size=1).map(
    lambda elements: Recipe(tuple(elements))
)


@settings(max_examples=150)
@given(recipe=RECIPES)
def test_recipe_text_round_trips(recipe: Recipe) -> None:
    """Recipe.parse(str(recipe)) gives the same recipe back, whatever its elements."""
    assert Recipe.parse(str(recipe)) == recipe


@pytest.mark.parametrize("root", sorted(DEFAULT_RECIPES))
def test_default_recipe_text_round_trips(root: str) -> None:
    """Each default recipe prints as text that parses back to itself."""
    recipe = DEFAULT_RECIPES[root]
    assert Recipe.parse(str(recipe)) == recipe
    assert str(Recipe.parse(str(recipe))) == str(recipe)


PARSED = [
    pytest.param("CustomerID", (BodyElement("CustomerID"),), id="one-field"),
    pytest.param(
        "CustomerID+lower(DevEUI)",
        (BodyElement("CustomerID"), BodyElement("DevEUI", lower=True)),
        id="no-blanks",
    ),
    pytest.param(
        "  CustomerID +  lower( DevEUI )  + FPort|0 ",
        (
            BodyElement("CustomerID"),
            BodyElement("DevEUI", lower=True),
            BodyElement("FPort", absent="0"),
        ),
        id="blanks-anywhere",
    ),
    pytest.param("lower(payload_hex)|none", (BodyElement("payload_hex", True, "none"),), id="both"),
]


@pytest.mark.parametrize(("text", "elements"), PARSED)
def test_recipe_text_is_read(text: str, elements: tuple[BodyElement, ...]) -> None:
    """Recipe text gives its elements: fields joined by '+', lower(X), X|stand-in."""
    assert Recipe.parse(text).elements == elements


BAD_RECIPES = [
    pytest.param("", id="empty"),
    pytest.param("CustomerID +", id="trailing-plus"),
    pytest.param("+ DevEUI", id="leading-plus"),
    pytest.param("CustomerID ++ DevEUI", id="double-plus"),
    pytest.param("lower()", id="empty-lower"),
    pytest.param("lower(DevEUI", id="unclosed-lower"),
    pytest.param("upper(DevEUI)", id="unknown-function"),
    pytest.param("Customer ID", id="blank-in-name"),
    pytest.param("DevEUI.value", id="dot-in-name"),
    pytest.param("|0", id="stand-in-without-name"),
]


@pytest.mark.parametrize("text", BAD_RECIPES)
def test_unreadable_recipe_is_refused(text: str) -> None:
    """Recipe text that is not fields joined by '+' raises RecipeError quoting it."""
    with pytest.raises(RecipeError) as caught:
        Recipe.parse(text)
    assert repr(text) in str(caught.value)


def test_default_recipes_cover_every_report() -> None:
    """Every report root has a default recipe; the downlink request (not a report) has none."""
    assert set(DEFAULT_RECIPES) == set(REPORT_TYPES) - {"DevEUI_downlink"}


PUBLISHED = [
    pytest.param("DevEUI_uplink", "CustomerID + DevEUI + FPort|0 + FCntUp + payload_hex", id="ul"),
    pytest.param("DevEUI_location", "CustomerID + lower(DevEUI)", id="location"),
    pytest.param("DevEUI_downlink_Sent", "CustomerID + DevEUI + FPort + FCntDn", id="sent"),
]


@pytest.mark.parametrize(("root", "text"), PUBLISHED)
def test_published_recipes_are_the_defaults(root: str, text: str) -> None:
    """The published recipes (uplink, location, downlink sent) are the defaults as written."""
    assert str(DEFAULT_RECIPES[root]) == text


def test_uplink_without_fport_hashes_port_zero() -> None:
    """An uplink body without FPort contributes "0" in FPort's place (MAC-only frame)."""
    doc = parse(
        encode(Uplink(customer_id="7", dev_eui="0059AC0000000001", fcnt_up=3), BodyFormat.JSON)
    )
    elements = body_elements(DEFAULT_RECIPES["DevEUI_uplink"], doc.fields)
    assert elements == "70059AC000000000103"


def test_absent_field_without_stand_in_contributes_nothing() -> None:
    """A recipe field absent from the body, with no stand-in, adds empty text."""
    recipe = Recipe.parse("CustomerID + Missing + DevEUI")
    assert body_elements(recipe, {"CustomerID": "1", "DevEUI": "AB"}) == "1AB"


@pytest.mark.parametrize(
    ("value", "text"),
    [(2, "2"), (2.0, "2"), (2.5, "2.5"), ("02", "02"), (True, ""), (None, "-")],
    ids=["int", "integral-float", "fraction", "text-kept-verbatim", "bool", "null-stand-in"],
)
def test_values_are_hashed_as_received_text(value: object, text: str) -> None:
    """Typed JSON numbers hash in decimal, text exactly as received, null as absent."""
    assert body_elements(Recipe.parse("FPort|-"), {"FPort": value}) == text


KEY = "c6f5e3b263092120b8766b9aed9c41b4"
PARAMS = {
    "LrnDevEui": "0059AC0000000001",
    "LrnFPort": "1",
    "LrnInfos": "TWA_100000001.999.AS-1-12345678",
    "AS_ID": "TWA_100000001.999",
    "Time": "2018-01-12T10:00:00.000+01:00",
}


def _query(token: str) -> str:
    values = {**PARAMS, "Token": token}
    return "&".join(f"{name}={quote(value, safe='')}" for name, value in values.items())


@pytest.mark.parametrize("fmt", list(BodyFormat), ids=[fmt.value for fmt in BodyFormat])
def test_custom_recipe_is_used_by_verify_report(fmt: BodyFormat) -> None:
    """A recipe passed to verify_report replaces the default for its report type."""
    model = Uplink(customer_id="100000001", dev_eui="0059AC0000000001", fport=1, fcnt_up=1)
    doc = parse(encode(model, fmt), fmt)
    custom = Recipe.parse("CustomerID + lower(DevEUI) + FCntUp")
    token = compute_token("1000000010059ac00000000011", canonical_query(PARAMS), KEY)

    verdict = verify_report(doc, _query(token), [AsKey(KEY)], recipes={"DevEUI_uplink": custom})
    default = verify_report(doc, _query(token), [AsKey(KEY)])

    assert verdict.ok, verdict.detail
    assert verdict.body_elements == "1000000010059ac00000000011"
    assert default.reason is Reason.TOKEN_MISMATCH
    assert default.body_elements == "1000000010059AC000000000111"
