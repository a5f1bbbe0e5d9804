"""Geo routing core: cf parsing, rules, nearest/weighted/ordered choice, fallbacks, health
marks, residency (a property: never violated), config validation with JSON paths.
Edge-safe: stdlib + pytest + hypothesis, re-run inside Pyodide."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_kv.core.errors import InvalidInput
from edge_kv.core.geo import (
    EU_COUNTRIES,
    GeoConfigError,
    Location,
    haversine_km,
    mark_unhealthy,
    parse_geo_config,
    route,
)

pytestmark = pytest.mark.edge_safe

DOC: dict[str, Any] = {
    "pools": {
        "eu": {
            "strategy": "nearest",
            "origins": [
                {
                    "name": "eu-west",
                    "url": "https://eu-west.example.com",
                    "latitude": 53.35,
                    "longitude": -6.26,
                    "jurisdictions": ["eu"],
                },
                {
                    "name": "eu-central",
                    "url": "https://eu-central.example.com",
                    "latitude": 50.11,
                    "longitude": 8.68,
                    "jurisdictions": ["eu", "de"],
                },
            ],
        },
        "us": {
            "strategy": "weighted",
            "origins": [
                {
                    "name": "us-east",
                    "url": "https://us-east.example.com",
                    "weight": 3,
                    "jurisdictions": ["us"],
                },
                {
                    "name": "us-west",
                    "url": "https://us-west.example.com:8443",
                    "weight": 1,
                    "jurisdictions": ["us"],
                },
            ],
        },
        "ap": {
            "strategy": "ordered",
            "origins": [
                {"name": "ap-tokyo", "url": "https://ap-tokyo.example.com", "jurisdictions": ["ap"]},
                {"name": "ap-sydney", "url": "https://ap-sydney.example.com", "jurisdictions": ["ap"]},
            ],
        },
    },
    "rules": [
        {"name": "eu-visitors", "match": {"eu": True}, "pools": ["eu"]},
        {"name": "california", "match": {"region": ["US-CA"]}, "pools": ["us"]},
        {"name": "americas", "match": {"continent": ["NA", "SA"]}, "pools": ["us", "eu"]},
        {"name": "asia-pacific", "match": {"continent": ["AS", "OC"]}, "pools": ["ap", "us"]},
        {"name": "swiss-via-frankfurt", "match": {"country": ["CH"]}, "pools": ["eu"]},
    ],
    "default": {"pools": ["us", "eu"]},
    "residency": [{"name": "gdpr", "visitors": {"eu": True}, "jurisdictions": ["eu"]}],
}
CONFIG = parse_geo_config(DOC)

BERLIN = {"country": "DE", "continent": "EU", "isEUCountry": "1", "latitude": "52.52", "longitude": "13.40"}
DUBLIN = {"country": "IE", "continent": "EU", "isEUCountry": "1", "latitude": "53.33", "longitude": "-6.25"}
SF = {"country": "US", "continent": "NA", "regionCode": "CA", "latitude": "37.77", "longitude": "-122.42"}
NYC = {"country": "US", "continent": "NA", "regionCode": "NY", "latitude": "40.71", "longitude": "-74.01"}
TOKYO = {"country": "JP", "continent": "AS", "colo": "NRT", "latitude": "35.68", "longitude": "139.69"}


# --- haversine ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "km"),
    [
        ((51.5074, -0.1278), (48.8566, 2.3522), 343.6),  # London - Paris
        ((40.6413, -73.7781), (33.9416, -118.4085), 3974.0),  # JFK - LAX
        ((0.0, 0.0), (0.0, 180.0), math.pi * 6371.0088),  # half the equator
        ((90.0, 0.0), (-90.0, 0.0), math.pi * 6371.0088),  # pole to pole
        ((35.68, 139.69), (35.68, 139.69), 0.0),
    ],
)
def test_haversine_known_distances(a: tuple[float, float], b: tuple[float, float], km: float) -> None:
    assert haversine_km(*a, *b) == pytest.approx(km, rel=2e-3, abs=1e-6)


@given(
    st.floats(-90, 90),
    st.floats(-180, 180),
    st.floats(-90, 90),
    st.floats(-180, 180),
)
def test_haversine_is_a_bounded_symmetric_distance(
    lat1: float, lon1: float, lat2: float, lon2: float
) -> None:
    d = haversine_km(lat1, lon1, lat2, lon2)
    assert 0.0 <= d <= math.pi * 6371.0088 + 1e-6
    assert d == pytest.approx(haversine_km(lat2, lon2, lat1, lon1), abs=1e-6)


# --- reading request.cf -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cf", "expected"),
    [
        (BERLIN, Location("DE", "EU", None, None, 52.52, 13.40, True)),
        ({"country": "de"}, Location("DE", None, None, None, None, None, True)),  # EU by country code
        ({"country": "CH", "isEUCountry": "0"}, Location("CH", None, None, None, None, None, False)),
        ({"country": "US", "regionCode": "CA"}, Location("US", None, "US-CA", None, None, None, False)),
        ({"regionCode": "CA"}, Location()),  # region without country: unknown
        ({"country": "XX"}, Location()),
        ({"country": "T1", "continent": "T1"}, Location()),  # Tor
        ({"isEUCountry": "1"}, Location(eu=True)),  # flag alone still means EU
        ({"country": "DEU"}, Location()),
        ({"country": 49}, Location()),
        ({"continent": "Europe"}, Location()),
        ({"colo": "fra"}, Location(colo="FRA")),
        ({"latitude": "91", "longitude": "0"}, Location()),
        ({"latitude": "nan", "longitude": "0"}, Location()),
        ({"latitude": "12.5"}, Location()),  # one coordinate is no coordinate
        ({"latitude": 12.5, "longitude": -170}, Location(latitude=12.5, longitude=-170.0)),
        ({"latitude": True, "longitude": 1}, Location()),
        (None, Location()),
        ("not a mapping", Location()),
    ],
)
def test_location_from_cf(cf: Any, expected: Location) -> None:
    assert Location.from_cf(cf) == expected


# --- the routing table --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cf", "draw", "origin", "pool", "rule"),
    [
        (BERLIN, 0.0, "eu-central", "eu", "eu-visitors"),  # nearest: Frankfurt
        (DUBLIN, 0.0, "eu-west", "eu", "eu-visitors"),  # nearest: Dublin
        ({"country": "FR"}, 0.0, "eu-west", "eu", "eu-visitors"),  # no coordinates: weighted, draw 0
        ({"country": "FR"}, 0.99, "eu-central", "eu", "eu-visitors"),
        (SF, 0.0, "us-east", "us", "california"),
        (SF, 0.74, "us-east", "us", "california"),  # weights 3:1 -> [0, .75) east
        (SF, 0.75, "us-west", "us", "california"),
        (NYC, 0.5, "us-east", "us", "americas"),
        ({"country": "BR", "continent": "SA"}, 0.9, "us-west", "us", "americas"),
        (TOKYO, 0.3, "ap-tokyo", "ap", "asia-pacific"),  # ordered: first
        ({"country": "AU", "continent": "OC"}, 0.3, "ap-tokyo", "ap", "asia-pacific"),
        (
            {"country": "CH", "continent": "EU", "isEUCountry": "0"},
            0.0,
            "eu-west",
            "eu",
            "swiss-via-frankfurt",
        ),
        ({"country": "ZA", "continent": "AF"}, 0.1, "us-east", "us", "default"),
        ({"country": "XX"}, 0.1, "eu-west", "eu", "default"),  # unknown: restricted to the EU, falls back
        ({}, 0.9, "eu-central", "eu", "default"),
    ],
)
def test_routing_table(cf: dict[str, Any], draw: float, origin: str, pool: str, rule: str) -> None:
    d = route(CONFIG, cf, draw=draw)
    assert (d.origin and d.origin.name, d.pool, d.rule) == (origin, pool, rule)
    assert d.ok and d.status == 200
    assert d.reason and d.header_value() == d.reason


def test_reason_explains_the_decision() -> None:
    d = route(CONFIG, {**BERLIN, "colo": "TXL", "regionCode": "BE"})
    assert d.reason == (
        "country=DE region=DE-BE continent=EU eu=yes colo=TXL; rule eu-visitors (eu=yes); "
        "pool eu: eu-central (nearest of 2, 423 km); residency gdpr[eu]"
    )
    assert d.distance_km == pytest.approx(423, abs=2)
    assert d.residency == ("gdpr",)


def test_fallback_pool_when_the_preferred_pool_is_down() -> None:
    down = {"us-east": 200.0, "us-west": None}
    d = route(CONFIG, NYC, unhealthy=down, now=100)
    assert d.origin is not None and d.origin.name == "eu-west"  # Dublin is the EU origin nearest NYC
    assert d.pool == "eu" and d.fallback == 1 and d.degraded
    assert "fallback #1 after us (2 allowed, all unhealthy)" in d.reason


def test_health_marks_expire() -> None:
    marks = {"ap-tokyo": 100.0}
    assert route(CONFIG, TOKYO, unhealthy=marks, now=99.9).origin.name == "ap-sydney"  # type: ignore[union-attr]
    assert route(CONFIG, TOKYO, unhealthy=marks, now=100.0).origin.name == "ap-tokyo"  # type: ignore[union-attr]
    assert route(CONFIG, TOKYO, unhealthy={"ap-tokyo": None}, now=1e12).origin.name == "ap-sydney"  # type: ignore[union-attr]


def test_mark_unhealthy_extends_and_prunes() -> None:
    marks = mark_unhealthy({"old": 5.0, "a": 50.0}, "a", now=10.0, ttl_s=30)
    assert marks == {"a": 50.0}
    marks = mark_unhealthy(marks, "b", now=10.0, ttl_s=30)
    assert marks == {"a": 50.0, "b": 40.0}
    with pytest.raises(InvalidInput):
        mark_unhealthy(marks, "b", now=10.0, ttl_s=0)


# --- residency -----------------------------------------------------------------------------------


def test_eu_visitor_with_every_eu_origin_down_gets_no_origin_never_a_us_one() -> None:
    d = route(CONFIG, BERLIN, unhealthy={"eu-west": None, "eu-central": None})
    assert d.origin is None and d.status == 503 and not d.ok
    assert "every allowed origin is unhealthy" in d.reason


def test_a_rule_that_misroutes_eu_visitors_cannot_break_residency() -> None:
    doc = copy.deepcopy(DOC)
    doc["rules"].insert(0, {"name": "oops", "match": {"country": ["DE"]}, "pools": ["us", "ap"]})
    d = route(parse_geo_config(doc), BERLIN)
    assert d.origin is None and d.rule == "oops"
    assert "no origin in the chain satisfies residency" in d.reason


def test_try_unhealthy_still_respects_residency() -> None:
    doc = {**copy.deepcopy(DOC), "all_unhealthy": "try_unhealthy"}
    config = parse_geo_config(doc)
    d = route(config, BERLIN, unhealthy={"eu-west": None, "eu-central": None, "us-east": None})
    assert d.origin is not None and "eu" in d.origin.jurisdictions and d.degraded
    assert "anyway" in d.reason
    # a non-EU visitor with everything down gets an unhealthy origin of its first pool
    d = route(config, NYC, unhealthy={o: None for o in config.origins()})
    assert d.origin is not None and d.pool == "us" and d.degraded


def test_unknown_location_restrict_or_allow() -> None:
    restrict = route(CONFIG, {"country": "XX"}, draw=0.0)
    assert restrict.origin is not None and "eu" in restrict.origin.jurisdictions
    assert "location unknown: all constraints apply" in restrict.reason
    allow = route(parse_geo_config({**DOC, "unknown_location": "allow"}), {"country": "XX"}, draw=0.0)
    assert allow.origin is not None and allow.origin.name == "us-east"
    # but an EU flag is honoured even when the country is missing
    flagged = route(parse_geo_config({**DOC, "unknown_location": "allow"}), {"isEUCountry": "1"})
    assert flagged.origin is not None and "eu" in flagged.origin.jurisdictions


def test_several_constraints_intersect() -> None:
    doc = copy.deepcopy(DOC)
    doc["residency"].append({"name": "german-data", "visitors": {"country": ["DE"]}, "jurisdictions": ["de"]})
    config = parse_geo_config(doc)
    d = route(config, DUBLIN)  # only gdpr applies: nearest EU origin
    assert d.origin is not None and d.origin.name == "eu-west"
    d = route(config, BERLIN | {"latitude": "53.3", "longitude": "-6.2"})  # both apply: only eu-central
    assert d.origin is not None and d.origin.name == "eu-central"
    assert d.residency == ("gdpr", "german-data")


# --- arguments -------------------------------------------------------------------------------


@pytest.mark.parametrize("draw", [1.0, -0.1, float("nan"), True, "0.5"])
def test_draw_must_be_in_unit_interval(draw: Any) -> None:
    with pytest.raises(InvalidInput):
        route(CONFIG, BERLIN, draw=draw)


def test_route_refuses_bad_arguments() -> None:
    with pytest.raises(InvalidInput):
        route(DOC, BERLIN)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        route(CONFIG, BERLIN, now=float("inf"))


def test_header_value_is_ascii_and_bounded() -> None:
    d = route(CONFIG, BERLIN)
    long = type(d)(**{**d.__dict__, "reason": "é" * 1000})
    value = long.header_value()
    assert value.isascii() and len(value) == 512 and value.endswith("...")


# --- configuration errors name their JSON path ---------------------------------------------------


def _with(path: list[Any], value: Any, *, delete: bool = False) -> dict[str, Any]:
    doc = copy.deepcopy(DOC)
    target: Any = doc
    for step in path[:-1]:
        target = target[step]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


ORIGIN1 = ["pools", "eu", "origins", 1]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (_with([*ORIGIN1, "latitude"], 100), "pools.eu.origins[1].latitude: must be a number in [-90, 90]"),
        (
            _with([*ORIGIN1, "latitude"], "50.1"),
            "pools.eu.origins[1].latitude: must be a number in [-90, 90]",
        ),
        (
            _with([*ORIGIN1, "longitude"], -180.5),
            "pools.eu.origins[1].longitude: must be a number in [-180, 180]",
        ),
        (_with([*ORIGIN1, "latitude"], None, delete=True), "pools.eu.origins[1].latitude: must be a number"),
        (_with([*ORIGIN1, "weight"], 0), "pools.eu.origins[1].weight: must be a finite number > 0"),
        (_with([*ORIGIN1, "weight"], True), "pools.eu.origins[1].weight: must be a number"),
        (_with([*ORIGIN1, "url"], "ftp://x"), "pools.eu.origins[1].url: must be an absolute http(s) URL"),
        (
            _with([*ORIGIN1, "url"], "https://u:p@x.example"),
            "pools.eu.origins[1].url: must not carry credentials",
        ),
        (_with([*ORIGIN1, "url"], "https://x.example:99999"), "pools.eu.origins[1].url: has an invalid port"),
        (_with([*ORIGIN1, "name"], "eu west"), "pools.eu.origins[1].name: must be 1-64 characters"),
        (_with([*ORIGIN1, "name"], ""), "pools.eu.origins[1].name: key must not be empty"),
        (_with([*ORIGIN1, "name"], "eu-west"), "pools.eu.origins[1].name: origin 'eu-west' appears twice"),
        (
            _with([*ORIGIN1, "jurisdictions"], ["EU"]),
            "pools.eu.origins[1].jurisdictions[0]: must be a lowercase tag",
        ),
        (
            _with([*ORIGIN1, "jurisdictions"], []),
            "pools.eu.origins[1].jurisdictions: must be a non-empty list",
        ),
        (_with([*ORIGIN1, "colour"], "red"), "pools.eu.origins[1].colour: unknown member"),
        (_with([*ORIGIN1, "url"], None, delete=True), "pools.eu.origins[1].url: is required"),
        (
            _with(["pools", "eu", "strategy"], "random"),
            "pools.eu.strategy: must be one of nearest, weighted, ordered",
        ),
        (_with(["pools", "eu", "origins"], []), "pools.eu.origins: must be a non-empty list"),
        (_with(["pools", "bad pool"], {"origins": []}), 'pools["bad pool"]: must be 1-64 characters'),
        (_with(["pools"], {}), "pools: must be a non-empty object"),
        (_with(["pools"], None, delete=True), "pools: is required"),
        (_with(["rules", 0, "pools"], ["asia"]), "rules[0].pools[0]: unknown pool 'asia'"),
        (_with(["rules", 0, "pools"], ["eu", "eu"]), "rules[0].pools[1]: pool 'eu' listed twice"),
        (_with(["rules", 0, "pools"], []), "rules[0].pools: must be a non-empty list"),
        (
            _with(["rules", 1, "match", "region"], ["CA"]),
            "rules[1].match.region[0]: must be an ISO 3166-2 code",
        ),
        (
            _with(["rules", 2, "match", "continent"], ["EUR"]),
            "rules[2].match.continent[0]: must be a continent code",
        ),
        (
            _with(["rules", 2, "match", "continent"], ["XX"]),
            "rules[2].match.continent: unknown continent ['XX']",
        ),
        (_with(["rules", 4, "match", "country"], ["ch"]), "rules[4].match.country[0]: must be an ISO 3166-1"),
        (_with(["rules", 4, "match", "colo"], ["ZRH1"]), "rules[4].match.colo[0]: must be an IATA code"),
        (_with(["rules", 0, "match", "eu"], "yes"), "rules[0].match.eu: must be true or false"),
        (_with(["rules", 0, "match", "city"], ["Paris"]), "rules[0].match.city: unknown member"),
        (_with(["rules", 1, "name"], "eu-visitors"), "rules[1].name: rule name 'eu-visitors' is used twice"),
        (_with(["rules"], {}), "rules: must be a list"),
        (_with(["default"], None, delete=True), "default: is required"),
        (_with(["default", "pools"], ["nowhere"]), "default.pools[0]: unknown pool 'nowhere'"),
        (
            _with(["residency", 0, "jurisdictions"], ["eea"]),
            "residency[0].jurisdictions: no origin carries any of",
        ),
        (_with(["residency", 0, "visitors"], None, delete=True), "residency[0].visitors: is required"),
        (_with(["unknown_location"], "maybe"), "unknown_location: must be 'restrict' or 'allow'"),
        (_with(["all_unhealthy"], "panic"), "all_unhealthy: must be 'refuse' or 'try_unhealthy'"),
        (_with(["extra"], 1), "extra: unknown member"),
    ],
)
def test_config_errors_name_the_json_path(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(GeoConfigError) as info:
        parse_geo_config(doc)
    assert str(info.value).startswith(message), str(info.value)
    assert info.value.path == message.split(":")[0]
    assert isinstance(info.value, InvalidInput) and info.value.status == 400


def test_an_origin_shared_by_pools_must_be_defined_identically() -> None:
    doc = copy.deepcopy(DOC)
    doc["pools"]["ap"]["origins"].append({**DOC["pools"]["eu"]["origins"][0]})
    doc["pools"]["ap"]["origins"][-1].pop("latitude")  # ordered pool: coordinates optional
    doc["pools"]["ap"]["origins"][-1].pop("longitude")
    with pytest.raises(GeoConfigError) as info:
        parse_geo_config(doc)
    assert str(info.value) == (
        "pools.ap.origins[2]: origin 'eu-west' is defined differently at pools.eu.origins[0]"
    )
    doc["pools"]["ap"]["origins"][-1] = copy.deepcopy(DOC["pools"]["eu"]["origins"][0])
    assert parse_geo_config(doc).pools["ap"].origins[-1] == CONFIG.pools["eu"].origins[0]


def test_config_from_json_text_and_bad_json() -> None:
    assert parse_geo_config(json.dumps(DOC)) == CONFIG
    with pytest.raises(GeoConfigError):
        parse_geo_config("{nope")
    with pytest.raises(GeoConfigError):
        parse_geo_config("[]")


# --- the property: residency is never violated ---------------------------------------------------

JURISDICTIONS = ["eu", "us", "ap"]
ORIGIN_NAMES = [f"o{i}" for i in range(6)]


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    origins = {}
    for i, name in enumerate(ORIGIN_NAMES):
        jur = draw(st.lists(st.sampled_from(JURISDICTIONS), min_size=1, max_size=2, unique=True))
        if i == 0 and "eu" not in jur:
            jur.append("eu")
        origins[name] = {
            "name": name,
            "url": f"https://{name}.example",
            "latitude": draw(st.floats(-90, 90)),
            "longitude": draw(st.floats(-180, 180)),
            "weight": draw(st.floats(0.1, 10)),
            "jurisdictions": jur,
        }
    pools = {}
    for p in ("p0", "p1", "p2"):
        members = draw(st.lists(st.sampled_from(ORIGIN_NAMES), min_size=1, max_size=4, unique=True))
        if p == "p0" and "o0" not in members:
            members.append("o0")
        pools[p] = {
            "strategy": draw(st.sampled_from(["nearest", "weighted", "ordered"])),
            "origins": [origins[m] for m in members],
        }
    pool_lists = st.lists(st.sampled_from(list(pools)), min_size=1, max_size=3, unique=True)
    matches = st.one_of(
        st.just({}),
        st.builds(lambda b: {"eu": b}, st.booleans()),
        st.builds(
            lambda c: {"country": c}, st.lists(st.sampled_from(["DE", "FR", "US", "JP", "CH"]), min_size=1)
        ),
        st.builds(lambda c: {"continent": c}, st.lists(st.sampled_from(["EU", "NA", "AS"]), min_size=1)),
    )
    rules = [
        {"name": f"r{i}", "match": m, "pools": ps}
        for i, (m, ps) in enumerate(draw(st.lists(st.tuples(matches, pool_lists), max_size=4)))
    ]
    return {
        "pools": pools,
        "rules": rules,
        "default": {"pools": draw(pool_lists)},
        "residency": [{"name": "gdpr", "visitors": {"eu": True}, "jurisdictions": ["eu"]}],
        "unknown_location": draw(st.sampled_from(["restrict", "allow"])),
        "all_unhealthy": draw(st.sampled_from(["refuse", "try_unhealthy"])),
    }


_ANY = st.one_of(st.none(), st.integers(), st.floats(), st.booleans(), st.text(max_size=6))
cf_values = st.fixed_dictionaries(
    {},
    optional={
        "country": st.one_of(st.sampled_from(["DE", "fr", "US", "JP", "CH", "XX", "T1", "GB", ""]), _ANY),
        "continent": st.one_of(st.sampled_from(["EU", "NA", "AS", "T1"]), _ANY),
        "isEUCountry": st.one_of(st.sampled_from(["1", "0", 1, True]), _ANY),
        "regionCode": st.one_of(st.sampled_from(["CA", "BY", "13"]), _ANY),
        "colo": st.one_of(st.sampled_from(["FRA", "SFO", "NRT"]), _ANY),
        "latitude": st.one_of(st.floats(-90, 90).map(str), _ANY),
        "longitude": st.one_of(st.floats(-180, 180).map(str), _ANY),
    },
)


def _is_eu_visitor(cf: dict[str, Any], unknown_location: str) -> bool:
    """Independent of Location: the flag or an EU country; unknown countries under restrict."""
    country = cf.get("country")
    code = country.strip().upper() if isinstance(country, str) else None
    known = (
        code is not None and len(code) == 2 and code.isalpha() and code.isascii() and code not in ("XX", "T1")
    )
    flagged = cf.get("isEUCountry") in ("1", 1, True)
    if flagged or (known and code in EU_COUNTRIES):
        return True
    return not known and unknown_location == "restrict"


@settings(max_examples=300)
@given(
    configs(),
    cf_values,
    st.dictionaries(st.sampled_from(ORIGIN_NAMES), st.one_of(st.none(), st.sampled_from([5.0, 20.0]))),
    st.floats(0, 1, exclude_max=True),
)
def test_residency_is_never_violated(
    doc: dict[str, Any], cf: dict[str, Any], marks: dict[str, float | None], draw: float
) -> None:
    config = parse_geo_config(doc)
    d = route(config, cf, unhealthy=marks, now=10.0, draw=draw)
    if _is_eu_visitor(cf, doc["unknown_location"]):
        assert d.origin is None or "eu" in d.origin.jurisdictions, d.reason
    if d.origin is not None:
        down = d.origin.name in marks and (marks[d.origin.name] is None or marks[d.origin.name] > 10.0)  # type: ignore[operator]
        assert not down or (doc["all_unhealthy"] == "try_unhealthy" and d.degraded)
        assert d.pool in d.considered
    else:
        assert d.status == 503 and d.reason.startswith(d.location.describe())
    assert d.header_value().isascii()
