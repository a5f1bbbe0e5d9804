"""Geo routing: choose an origin for a visitor from ``request.cf``, under residency rules.

Pure and standard-library only (runs at the edge, inside Pyodide): the caller passes the
``cf`` mapping, the health marks, the clock and the random draw, so a decision is a
function of its inputs and can be replayed in a test.

Configuration (one JSON document, validated by :func:`parse_geo_config`; every fault is
reported with its JSON path, e.g. ``pools.eu.origins[1].latitude: must be a number in
[-90, 90]``)::

    {
      "pools": {
        "eu": {"strategy": "nearest", "origins": [
          {"name": "eu-west", "url": "https://eu-west.example.com",
           "latitude": 53.35, "longitude": -6.26, "jurisdictions": ["eu"]}]},
        "us": {"strategy": "weighted", "origins": [
          {"name": "us-east", "url": "https://us-east.example.com", "weight": 3,
           "jurisdictions": ["us"]}]}
      },
      "rules": [
        {"name": "eu-visitors", "match": {"eu": true}, "pools": ["eu"]},
        {"name": "americas", "match": {"continent": ["NA", "SA"]}, "pools": ["us", "eu"]}
      ],
      "default": {"pools": ["us", "eu"]},
      "residency": [{"name": "gdpr", "visitors": {"eu": true}, "jurisdictions": ["eu"]}],
      "unknown_location": "restrict",
      "all_unhealthy": "refuse"
    }

Decision, in order:

1. **Residency first.** Every residency constraint whose ``visitors`` match the visitor
   (the same matcher as rules) restricts the candidate origins to those sharing one of its
   ``jurisdictions``. It is applied to *every* origin considered — preferred, fallback,
   last resort — so a rule pointing EU visitors at a US pool, or every EU origin being
   down, yields "no origin" rather than a forbidden one. A visitor whose country is unknown
   (no ``country``, ``XX``, Tor's ``T1``) is subject to every constraint when
   ``unknown_location`` is ``restrict`` (the default), to none with ``allow``. "EU" means
   ``cf.isEUCountry == "1"`` *or* an EU-27 country code, whichever says so.
2. **Rule.** The first rule whose ``match`` holds (all given criteria: ``country``,
   ``continent``, ``region`` as ``CC-SUB`` from ``country`` + ``regionCode``, ``colo``,
   ``eu``) gives an ordered list of pools; none → ``default``.
3. **Pool.** The first pool in that list with a healthy allowed origin wins; within it the
   pool's strategy picks: ``nearest`` (great-circle distance from the visitor's
   ``latitude``/``longitude``; without them, weighted), ``weighted`` (by ``weight``, using
   the ``draw`` in ``[0, 1)`` passed in), ``ordered`` (the first healthy one).
4. **Nobody healthy.** ``all_unhealthy: refuse`` (default) answers without an origin (the
   edge replies 503); ``try_unhealthy`` picks among the allowed but unhealthy origins of
   the first pool that has any (health marks can be stale), marked ``degraded``.

Every decision carries a human-readable ``reason`` (ASCII, for ``X-Edge-Route-Reason``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from edge_kv.core.errors import InvalidInput
from edge_kv.core.validate import check_key, check_positive_number

__all__ = [
    "CONTINENTS",
    "EARTH_RADIUS_KM",
    "EU_COUNTRIES",
    "GeoConfig",
    "GeoConfigError",
    "Location",
    "Match",
    "Origin",
    "Pool",
    "Residency",
    "RouteDecision",
    "Rule",
    "haversine_km",
    "mark_unhealthy",
    "parse_geo_config",
    "route",
]

EARTH_RADIUS_KM = 6371.0088  # IUGG mean radius
CONTINENTS = frozenset({"AF", "AN", "AS", "EU", "NA", "OC", "SA"})
#: EU-27 (ISO 3166-1 alpha-2), as Cloudflare's ``isEUCountry``.
EU_COUNTRIES = frozenset(
    [
        "AT",
        "BE",
        "BG",
        "HR",
        "CY",
        "CZ",
        "DK",
        "EE",
        "FI",
        "FR",
        "DE",
        "GR",
        "HU",
        "IE",
        "IT",
        "LV",
        "LT",
        "LU",
        "MT",
        "NL",
        "PL",
        "PT",
        "RO",
        "SK",
        "SI",
        "ES",
        "SE",
    ]
)
_UNKNOWN_COUNTRIES = frozenset({"XX", "T1"})
STRATEGIES = ("nearest", "weighted", "ordered")
MAX_REASON = 512

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
_JURISDICTION_RE = re.compile(r"[a-z0-9][a-z0-9_\-]{0,31}")
_COUNTRY_RE = re.compile(r"[A-Z]{2}")
_REGION_RE = re.compile(r"[A-Z]{2}-[A-Z0-9]{1,3}")
_COLO_RE = re.compile(r"[A-Z]{3}")
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class GeoConfigError(InvalidInput):
    """The geo configuration is unusable; ``path`` is the JSON path of the fault."""

    code = "invalid_geo_config"

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


# --------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Origin:
    name: str
    url: str
    latitude: float | None = None
    longitude: float | None = None
    weight: float = 1.0
    jurisdictions: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Pool:
    name: str
    origins: tuple[Origin, ...]
    strategy: str = "nearest"


@dataclass(frozen=True)
class Match:
    """All given criteria must hold; an empty match matches everyone."""

    country: frozenset[str] | None = None
    continent: frozenset[str] | None = None
    region: frozenset[str] | None = None
    colo: frozenset[str] | None = None
    eu: bool | None = None

    def matches(self, loc: Location) -> bool:
        if self.country is not None and loc.country not in self.country:
            return False
        if self.continent is not None and loc.continent not in self.continent:
            return False
        if self.region is not None and loc.region not in self.region:
            return False
        if self.colo is not None and loc.colo not in self.colo:
            return False
        return not (self.eu is not None and loc.eu != self.eu)

    def describe(self) -> str:
        parts = []
        for name in ("country", "continent", "region", "colo"):
            v = getattr(self, name)
            if v is not None:
                parts.append(f"{name} in {','.join(sorted(v))}")
        if self.eu is not None:
            parts.append(f"eu={'yes' if self.eu else 'no'}")
        return " and ".join(parts) or "anyone"


@dataclass(frozen=True)
class Rule:
    name: str
    match: Match
    pools: tuple[str, ...]


@dataclass(frozen=True)
class Residency:
    name: str
    visitors: Match
    jurisdictions: frozenset[str]

    def permits(self, origin: Origin) -> bool:
        return bool(self.jurisdictions & origin.jurisdictions)


@dataclass(frozen=True)
class GeoConfig:
    pools: Mapping[str, Pool]
    rules: tuple[Rule, ...]
    default: tuple[str, ...]
    residency: tuple[Residency, ...] = ()
    unknown_location: str = "restrict"
    all_unhealthy: str = "refuse"

    def origins(self) -> dict[str, Origin]:
        return {o.name: o for p in self.pools.values() for o in p.origins}


@dataclass(frozen=True)
class Location:
    """What the edge knows of the visitor (from ``request.cf``); unknown fields are None."""

    country: str | None = None
    continent: str | None = None
    region: str | None = None
    colo: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    eu: bool = False

    @property
    def known(self) -> bool:
        return self.country is not None

    @property
    def has_coordinates(self) -> bool:
        return self.latitude is not None and self.longitude is not None

    @classmethod
    def from_cf(cls, cf: Mapping[str, Any] | None) -> Location:
        """Read a ``request.cf``-like mapping leniently: a missing or malformed field is
        unknown, never an error (the runtime, not the user, fills it)."""
        if not isinstance(cf, Mapping):
            return cls()

        def code(key: str, pattern: re.Pattern[str]) -> str | None:
            v = cf.get(key)
            if not isinstance(v, str):
                return None
            v = v.strip().upper()
            return v if pattern.fullmatch(v) else None

        country = code("country", _COUNTRY_RE)
        if country in _UNKNOWN_COUNTRIES:
            country = None
        continent = code("continent", _COUNTRY_RE)
        if continent not in CONTINENTS:
            continent = None
        sub = cf.get("regionCode")
        region = None
        if country is not None and isinstance(sub, str) and re.fullmatch(r"[A-Za-z0-9]{1,3}", sub.strip()):
            region = f"{country}-{sub.strip().upper()}"
        colo = code("colo", _COLO_RE)
        lat = _coordinate(cf.get("latitude"), 90.0)
        lon = _coordinate(cf.get("longitude"), 180.0)
        if lat is None or lon is None:
            lat = lon = None
        flag = cf.get("isEUCountry")
        eu = flag in ("1", 1, True) or (country is not None and country in EU_COUNTRIES)
        return cls(country, continent, region, colo, lat, lon, eu)

    def describe(self) -> str:
        if not self.known:
            return "location unknown" + (f" colo={self.colo}" if self.colo else "")
        parts = [f"country={self.country}"]
        if self.region:
            parts.append(f"region={self.region}")
        if self.continent:
            parts.append(f"continent={self.continent}")
        if self.eu:
            parts.append("eu=yes")
        if self.colo:
            parts.append(f"colo={self.colo}")
        return " ".join(parts)


def _coordinate(value: object, limit: float) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, (int, float)):
        return None
    f = float(value)
    if not math.isfinite(f) or not -limit <= f <= limit:
        return None
    return f


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km on a sphere of :data:`EARTH_RADIUS_KM`."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------


def _key_path(base: str, key: str) -> str:
    part = f".{key}" if _IDENT_RE.fullmatch(key) or _NAME_RE.fullmatch(key) else f"[{json.dumps(key)}]"
    return (base + part).lstrip(".") if base else part.lstrip(".")


def _obj(value: object, path: str, allowed: Sequence[str], required: Sequence[str] = ()) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise GeoConfigError(path, f"must be an object, got {type(value).__name__}")
    for k in value:
        if not isinstance(k, str) or k not in allowed:
            raise GeoConfigError(_key_path(path, str(k)), f"unknown member (allowed: {', '.join(allowed)})")
    for k in required:
        if k not in value:
            raise GeoConfigError(_key_path(path, k), "is required")
    return value


def _name(value: object, path: str) -> str:
    try:
        check_key(value, max_length=64)
    except ValueError as exc:
        raise GeoConfigError(path, str(exc)) from None
    assert isinstance(value, str)
    if not _NAME_RE.fullmatch(value):
        raise GeoConfigError(path, "must be 1-64 characters of letters, digits, '_', '.', '-'")
    return value


def _number_in(value: object, path: str, limit: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise GeoConfigError(path, f"must be a number in [-{limit:g}, {limit:g}]")
    if not -limit <= value <= limit:
        raise GeoConfigError(path, f"must be a number in [-{limit:g}, {limit:g}], got {value}")
    return float(value)


def _codes(value: object, path: str, pattern: re.Pattern[str], what: str) -> frozenset[str]:
    if not isinstance(value, list) or not value:
        raise GeoConfigError(path, f"must be a non-empty list of {what}")
    out = set()
    for i, v in enumerate(value):
        if not isinstance(v, str) or not pattern.fullmatch(v):
            raise GeoConfigError(f"{path}[{i}]", f"must be {what}, got {v!r}")
        out.add(v)
    return frozenset(out)


def _match(value: object, path: str) -> Match:
    m = _obj(value, path, ("country", "continent", "region", "colo", "eu"))
    continent = None
    if "continent" in m:
        continent = _codes(m["continent"], _key_path(path, "continent"), _COUNTRY_RE, "a continent code")
        bad = continent - CONTINENTS
        if bad:
            raise GeoConfigError(
                _key_path(path, "continent"),
                f"unknown continent {sorted(bad)} (use {', '.join(sorted(CONTINENTS))})",
            )
    eu = m.get("eu")
    if "eu" in m and not isinstance(eu, bool):
        raise GeoConfigError(_key_path(path, "eu"), "must be true or false")
    return Match(
        country=(
            _codes(
                m["country"], _key_path(path, "country"), _COUNTRY_RE, "an ISO 3166-1 alpha-2 code like 'DE'"
            )
            if "country" in m
            else None
        ),
        continent=continent,
        region=(
            _codes(m["region"], _key_path(path, "region"), _REGION_RE, "an ISO 3166-2 code like 'US-CA'")
            if "region" in m
            else None
        ),
        colo=_codes(m["colo"], _key_path(path, "colo"), _COLO_RE, "an IATA code like 'FRA'")
        if "colo" in m
        else None,
        eu=eu,
    )


def _pool_refs(value: object, path: str, pools: Mapping[str, Pool]) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise GeoConfigError(path, "must be a non-empty list of pool names")
    out: list[str] = []
    for i, v in enumerate(value):
        if not isinstance(v, str) or v not in pools:
            raise GeoConfigError(f"{path}[{i}]", f"unknown pool {v!r} (defined: {', '.join(sorted(pools))})")
        if v in out:
            raise GeoConfigError(f"{path}[{i}]", f"pool {v!r} listed twice")
        out.append(v)
    return tuple(out)


def _origin(value: object, path: str, strategy: str) -> Origin:
    o = _obj(
        value, path, ("name", "url", "latitude", "longitude", "weight", "jurisdictions"), ("name", "url")
    )
    name = _name(o["name"], _key_path(path, "name"))
    url = o["url"]
    upath = _key_path(path, "url")
    if not isinstance(url, str) or not url.isascii() or any(c.isspace() for c in url):
        raise GeoConfigError(upath, "must be an absolute http(s) URL")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise GeoConfigError(upath, f"must be an absolute http(s) URL, got {url!r}")
    if parts.username is not None or parts.fragment or parts.query:
        raise GeoConfigError(upath, "must not carry credentials, a query or a fragment")
    try:
        parts.port  # noqa: B018  # validates the port
    except ValueError:
        raise GeoConfigError(upath, "has an invalid port") from None
    lat = lon = None
    if "latitude" in o or "longitude" in o or strategy == "nearest":
        lat = _number_in(o.get("latitude"), _key_path(path, "latitude"), 90)
        lon = _number_in(o.get("longitude"), _key_path(path, "longitude"), 180)
    weight = 1.0
    if "weight" in o:
        wpath = _key_path(path, "weight")
        try:
            weight = check_positive_number(wpath, o["weight"])
        except ValueError as exc:
            msg = str(exc)
            raise GeoConfigError(
                wpath, msg[len(wpath) + 1 :] if msg.startswith(wpath + " ") else msg
            ) from None
    jur: frozenset[str] = frozenset()
    if "jurisdictions" in o:
        jur = _codes(
            o["jurisdictions"], _key_path(path, "jurisdictions"), _JURISDICTION_RE, "a lowercase tag"
        )
    return Origin(name, url, lat, lon, weight, jur)


def parse_geo_config(doc: Mapping[str, Any] | str) -> GeoConfig:
    """Validate a geo configuration document (a mapping or its JSON text)."""
    if isinstance(doc, str):
        try:
            doc = json.loads(doc)
        except ValueError as exc:
            raise GeoConfigError("", f"not valid JSON ({exc})") from None
    root = _obj(
        doc,
        "",
        ("pools", "rules", "default", "residency", "unknown_location", "all_unhealthy"),
        ("pools", "default"),
    )
    raw_pools = root["pools"]
    if not isinstance(raw_pools, Mapping) or not raw_pools:
        raise GeoConfigError("pools", "must be a non-empty object of pools")
    pools: dict[str, Pool] = {}
    seen_origins: dict[str, tuple[Origin, str]] = {}
    for pname, praw in raw_pools.items():
        ppath = _key_path("pools", str(pname))
        _name(pname, ppath)
        p = _obj(praw, ppath, ("origins", "strategy"), ("origins",))
        strategy = p.get("strategy", "nearest")
        if strategy not in STRATEGIES:
            raise GeoConfigError(_key_path(ppath, "strategy"), f"must be one of {', '.join(STRATEGIES)}")
        opath = _key_path(ppath, "origins")
        if not isinstance(p["origins"], list) or not p["origins"]:
            raise GeoConfigError(opath, "must be a non-empty list of origins")
        origins: list[Origin] = []
        for i, oraw in enumerate(p["origins"]):
            here = f"{opath}[{i}]"
            origin = _origin(oraw, here, strategy)
            if any(o.name == origin.name for o in origins):
                raise GeoConfigError(
                    _key_path(here, "name"), f"origin {origin.name!r} appears twice in this pool"
                )
            if origin.name in seen_origins and seen_origins[origin.name][0] != origin:
                raise GeoConfigError(
                    here, f"origin {origin.name!r} is defined differently at {seen_origins[origin.name][1]}"
                )
            seen_origins.setdefault(origin.name, (origin, here))
            origins.append(origin)
        pools[pname] = Pool(pname, tuple(origins), strategy)

    rules: list[Rule] = []
    raw_rules = root.get("rules", [])
    if not isinstance(raw_rules, list):
        raise GeoConfigError("rules", "must be a list")
    for i, rraw in enumerate(raw_rules):
        rpath = f"rules[{i}]"
        r = _obj(rraw, rpath, ("name", "match", "pools"), ("match", "pools"))
        name = _name(r["name"], _key_path(rpath, "name")) if "name" in r else f"rules[{i}]"
        if any(x.name == name for x in rules):
            raise GeoConfigError(_key_path(rpath, "name"), f"rule name {name!r} is used twice")
        rules.append(
            Rule(
                name,
                _match(r["match"], _key_path(rpath, "match")),
                _pool_refs(r["pools"], _key_path(rpath, "pools"), pools),
            )
        )
    d = _obj(root["default"], "default", ("pools",), ("pools",))
    default = _pool_refs(d["pools"], "default.pools", pools)

    residency: list[Residency] = []
    raw_res = root.get("residency", [])
    if not isinstance(raw_res, list):
        raise GeoConfigError("residency", "must be a list")
    all_tags = {t for o, _ in seen_origins.values() for t in o.jurisdictions}
    for i, rraw in enumerate(raw_res):
        rpath = f"residency[{i}]"
        r = _obj(rraw, rpath, ("name", "visitors", "jurisdictions"), ("name", "visitors", "jurisdictions"))
        name = _name(r["name"], _key_path(rpath, "name"))
        if any(x.name == name for x in residency):
            raise GeoConfigError(_key_path(rpath, "name"), f"residency name {name!r} is used twice")
        jpath = _key_path(rpath, "jurisdictions")
        tags = _codes(r["jurisdictions"], jpath, _JURISDICTION_RE, "a lowercase tag")
        if not tags & all_tags:
            raise GeoConfigError(
                jpath, f"no origin carries any of {sorted(tags)}: every matching visitor would be refused"
            )
        residency.append(Residency(name, _match(r["visitors"], _key_path(rpath, "visitors")), tags))

    unknown = root.get("unknown_location", "restrict")
    if unknown not in ("restrict", "allow"):
        raise GeoConfigError("unknown_location", "must be 'restrict' or 'allow'")
    all_unhealthy = root.get("all_unhealthy", "refuse")
    if all_unhealthy not in ("refuse", "try_unhealthy"):
        raise GeoConfigError("all_unhealthy", "must be 'refuse' or 'try_unhealthy'")
    return GeoConfig(pools, tuple(rules), default, tuple(residency), unknown, all_unhealthy)


# --------------------------------------------------------------------------------------
# Routing
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RouteDecision:
    origin: Origin | None
    pool: str | None
    rule: str
    location: Location
    residency: tuple[str, ...] = ()
    degraded: bool = False
    fallback: int = 0
    distance_km: float | None = None
    reason: str = ""
    considered: tuple[str, ...] = field(default=(), repr=False)

    @property
    def ok(self) -> bool:
        return self.origin is not None

    @property
    def status(self) -> int:
        """200 when routed, else 503 (the edge answers with a problem body)."""
        return 200 if self.origin is not None else 503

    def header_value(self) -> str:
        """``reason`` made safe for an HTTP header: printable ASCII, at most 512 chars."""
        text = "".join(c if " " <= c <= "~" else "?" for c in self.reason)
        return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


def mark_unhealthy(marks: Mapping[str, float], name: str, *, now: float, ttl_s: float) -> dict[str, float]:
    """A copy of ``marks`` with ``name`` unhealthy until ``now + ttl_s`` (expired marks dropped)."""
    ttl = check_positive_number("ttl_s", ttl_s)
    out = {k: v for k, v in marks.items() if v > now}
    out[name] = max(out.get(name, 0.0), now + ttl)
    return out


def _pick(
    strategy: str, candidates: Sequence[Origin], loc: Location, draw: float
) -> tuple[Origin, str, float | None]:
    if strategy == "ordered" or len(candidates) == 1:
        o = candidates[0]
        how = "first healthy" if strategy == "ordered" else "only candidate"
        d = None
        if (
            loc.latitude is not None
            and loc.longitude is not None
            and o.latitude is not None
            and o.longitude is not None
        ):
            d = haversine_km(loc.latitude, loc.longitude, o.latitude, o.longitude)
        return o, how, d
    if strategy == "nearest" and loc.has_coordinates:
        assert loc.latitude is not None and loc.longitude is not None
        best, best_d = candidates[0], math.inf
        for o in candidates:
            if o.latitude is None or o.longitude is None:
                continue
            d = haversine_km(loc.latitude, loc.longitude, o.latitude, o.longitude)
            if d < best_d:
                best, best_d = o, d
        return best, f"nearest of {len(candidates)}", best_d
    total = sum(o.weight for o in candidates)
    target = draw * total
    acc = 0.0
    chosen = candidates[-1]
    for o in candidates:
        acc += o.weight
        if target < acc:
            chosen = o
            break
    how = f"weighted among {len(candidates)}"
    if strategy == "nearest":
        how += " (no visitor coordinates)"
    return chosen, how, None


def route(
    config: GeoConfig,
    cf: Mapping[str, Any] | None,
    *,
    unhealthy: Mapping[str, float | None] | None = None,
    now: float = 0.0,
    draw: float = 0.0,
) -> RouteDecision:
    """Choose an origin (see the module docstring).

    ``unhealthy`` maps origin name → time (same clock as ``now``) until which it is
    unhealthy; ``None`` means until cleared. ``draw`` is a uniform number in ``[0, 1)``
    for weighted choice (pass ``random.random()``; a test passes a constant).
    """
    if not isinstance(config, GeoConfig):
        raise InvalidInput("config must be a GeoConfig (see parse_geo_config)")
    if isinstance(draw, bool) or not isinstance(draw, (int, float)) or not 0.0 <= draw < 1.0:
        raise InvalidInput(f"draw must be a number in [0, 1), got {draw!r}")
    if isinstance(now, bool) or not isinstance(now, (int, float)) or not math.isfinite(now):
        raise InvalidInput("now must be a finite number")
    marks = unhealthy or {}

    def is_down(o: Origin) -> bool:
        if o.name not in marks:
            return False
        until = marks[o.name]
        return until is None or now < until

    loc = Location.from_cf(cf)
    if not loc.known and config.unknown_location == "restrict":
        applicable = list(config.residency)
    else:
        applicable = [r for r in config.residency if r.visitors.matches(loc)]
    residency_names = tuple(r.name for r in applicable)

    def allowed(o: Origin) -> bool:
        return all(r.permits(o) for r in applicable)

    rule = next((r for r in config.rules if r.match.matches(loc)), None)
    chain = rule.pools if rule is not None else config.default
    rule_name = rule.name if rule is not None else "default"
    head = f"{loc.describe()}; rule {rule_name}" + (f" ({rule.match.describe()})" if rule is not None else "")
    res_text = (
        "; residency " + ", ".join(f"{r.name}[{'|'.join(sorted(r.jurisdictions))}]" for r in applicable)
        if applicable
        else ""
    )
    if applicable and not loc.known:
        res_text += " (location unknown: all constraints apply)"

    skipped: list[str] = []
    allowed_by_pool: list[tuple[str, list[Origin]]] = []
    for index, pname in enumerate(chain):
        pool = config.pools[pname]
        ok_origins = [o for o in pool.origins if allowed(o)]
        allowed_by_pool.append((pname, ok_origins))
        healthy = [o for o in ok_origins if not is_down(o)]
        if healthy:
            origin, how, dist = _pick(pool.strategy, healthy, loc, draw)
            dist_text = f", {dist:.0f} km" if dist is not None else ""
            fb = f"; fallback #{index} after {', '.join(skipped)}" if skipped else ""
            reason = f"{head}; pool {pname}: {origin.name} ({how}{dist_text}){fb}{res_text}"
            return RouteDecision(
                origin, pname, rule_name, loc, residency_names, index > 0, index, dist, reason, tuple(chain)
            )
        if not ok_origins:
            skipped.append(f"{pname} (no allowed origin)")
        else:
            skipped.append(f"{pname} ({len(ok_origins)} allowed, all unhealthy)")

    if config.all_unhealthy == "try_unhealthy":
        for index, (pname, ok_origins) in enumerate(allowed_by_pool):
            if ok_origins:
                pool = config.pools[pname]
                origin, how, dist = _pick(pool.strategy, ok_origins, loc, draw)
                reason = (
                    f"{head}; every allowed origin is marked unhealthy ({'; '.join(skipped)}); "
                    f"trying {origin.name} in pool {pname} anyway ({how}){res_text}"
                )
                return RouteDecision(
                    origin, pname, rule_name, loc, residency_names, True, index, dist, reason, tuple(chain)
                )
    any_allowed = any(ok for _, ok in allowed_by_pool)
    why = "every allowed origin is unhealthy" if any_allowed else "no origin in the chain satisfies residency"
    reason = f"{head}; no origin: {why} ({'; '.join(skipped)}){res_text}"
    return RouteDecision(None, None, rule_name, loc, residency_names, True, 0, None, reason, tuple(chain))
