"""Property: every model survives encode then decode, in every body format.

Strategies are derived from the models themselves (``msgspec.structs.fields``), so a field
added to a model is exercised without touching this file.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Final, TypeVar, Union, get_args, get_origin

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tpas.protocol import REPORT_TYPES, BodyFormat, Gateway, Lrrs, Uplink, decode, encode

FORMATS = list(BodyFormat)
StructT = TypeVar("StructT", bound=msgspec.Struct)
ROOTS = sorted(REPORT_TYPES)

# XML 1.0 cannot carry C0 controls other than tab, line feed and carriage return, nor
# surrogates or U+FFFE/U+FFFF; the encoder refuses them, so they are not generated. A
# carriage return is kept: the encoder writes it as &#13; so the parser does not fold it.
_NOT_XML = "".join(chr(c) for c in range(0x20) if chr(c) not in "\t\n\r") + "\ufffe\uffff"
XML_TEXT: Final = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters=_NOT_XML), max_size=24
)
XML_NAME: Final = st.from_regex(r"[A-Za-z_][A-Za-z0-9._-]{0,15}", fullmatch=True)

# Wire names read specially whatever the report type: the gateway list, the Join-Request
# spelling of SpFact, an XML-to-JSON artifact, and the fields written as JSON text in XML.
_SPECIAL: Final = frozenset(
    {"Lrrs", "Spfact", "-xmlns", "extra", "CustomerData", "DriverCfg", "BaseStationData"}
    | {"payload"}
)


def _wire_names(cls: type[msgspec.Struct]) -> frozenset[str]:
    return frozenset(field.encode_name for field in msgspec.structs.fields(cls))


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(msgspec.json.decode(text), dict)
    except msgspec.DecodeError:
        return False


def extras(cls: type[msgspec.Struct]) -> st.SearchStrategy[dict[str, Any]]:
    """Unknown fields: XML names that are no wire name of ``cls``, with text values."""
    reserved = _wire_names(cls) | _SPECIAL
    keys = XML_NAME.filter(lambda name: name not in reserved)
    return st.dictionaries(keys, XML_TEXT, max_size=3)


def _hex(length: int) -> st.SearchStrategy[str]:
    return st.text("0123456789abcdefABCDEF", min_size=length, max_size=length)


def strategy_for(annotation: Any) -> st.SearchStrategy[Any]:
    """A strategy for one model field type (optional parts handled by the caller)."""
    origin = get_origin(annotation)
    if origin is types.UnionType or origin is Union:
        options = [arg for arg in get_args(annotation) if arg is not type(None)]
        if set(options) == {dict[str, Any], str}:  # ObjectOrText
            objects = st.dictionaries(XML_TEXT, XML_TEXT, max_size=3)
            text = XML_TEXT.filter(lambda value: not _is_json_object(value))
            return objects | text
        (single,) = options
        return strategy_for(single)
    if origin is Annotated:
        base, *metadata = get_args(annotation)
        (meta,) = metadata
        if base is float:
            return st.floats(allow_nan=False, allow_infinity=False)
        assert base is str
        assert meta.pattern is not None
        return _hex(16 if "{16}" in meta.pattern else 8)
    if origin is list:
        (item,) = get_args(annotation)
        return st.lists(strategy_for(item), max_size=3)
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return models(annotation)
    if annotation is int:
        return st.integers(min_value=-(2**63), max_value=2**63 - 1)
    if annotation is str:
        return XML_TEXT
    raise AssertionError(f"no strategy for {annotation!r}")  # pragma: no cover


def models(cls: type[StructT]) -> st.SearchStrategy[StructT]:
    """Instances of a model with any subset of its optional fields set."""
    required: dict[str, st.SearchStrategy[Any]] = {}
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for field in msgspec.structs.fields(cls):
        if field.name == "extra":
            optional[field.name] = extras(cls)
        elif field.required:
            required[field.name] = strategy_for(field.type)
        else:
            optional[field.name] = strategy_for(field.type)
    # Choosing the set fields first, then drawing only their values, keeps a draw of a
    # 70-field uplink cheap; every field is still chosen in many examples.
    chosen = st.sets(st.sampled_from(sorted(optional)), max_size=len(optional))
    kwargs = chosen.flatmap(
        lambda names: st.fixed_dictionaries(
            {**required, **{name: optional[name] for name in sorted(names)}}
        )
    )
    return kwargs.map(lambda values: cls(**values))


ROUND_TRIP = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# One drawn model is checked in all three formats: drawing a model costs far more than
# encoding it, so this keeps the suite fast without fewer examples per format.
@pytest.mark.parametrize("root", ROOTS)
@ROUND_TRIP
@given(data=st.data())
def test_decode_inverts_encode(root: str, data: st.DataObject) -> None:
    """decode(encode(model)) equals the model, for every report type in every body format."""
    model = data.draw(models(REPORT_TYPES[root]), label="model")

    for fmt in BodyFormat:
        body = encode(model, fmt)
        decoded = decode(body, fmt)

        assert decoded == model, fmt
        assert encode(decoded, fmt) == body, fmt


@ROUND_TRIP
@given(gateways=st.lists(models(Gateway), min_size=1, max_size=4))
def test_gateway_lists_survive_every_format(gateways: list[Gateway]) -> None:
    """A gateway list of any length, gateways empty or full, comes back in every format."""
    model = Uplink(dev_eui="0059AC0000000001", lrrs=Lrrs(lrr=gateways))
    for fmt in BodyFormat:
        assert decode(encode(model, fmt), fmt) == model, fmt


@pytest.mark.parametrize("fmt", FORMATS, ids=[fmt.value for fmt in FORMATS])
def test_empty_gateway_survives(fmt: BodyFormat) -> None:
    """A gateway with no field set (XML <Lrr />) reads back as an empty gateway, not text."""
    model = Uplink(dev_eui="0059AC0000000001", lrrs=Lrrs(lrr=[Gateway()]))
    assert decode(encode(model, fmt), fmt) == model


def test_strategies_cover_every_field_type() -> None:
    """Every field of every model has a strategy, so no model is left out of the property."""
    classes: list[type[msgspec.Struct]] = [*REPORT_TYPES.values(), Gateway]
    for cls in classes:
        for field in msgspec.structs.fields(cls):
            if field.name != "extra":
                assert strategy_for(field.type) is not None
