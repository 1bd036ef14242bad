"""The immunoglobulin product catalogue (docs/clinical-rules.md#products): product master data as
frozen dataclasses, the parser for the shipped YAML document and the validation rules the inventory
gRPC API reuses.

Pure: no I/O. ``services.inventory.data.load_products`` reads the file and calls
``parse_catalogue``.

Two kinds of field path are reported:
- ``parse_catalogue`` names fields as they are written in the YAML document
  (``products[3].presentations[1].ml``, ``products[0].rate_steps.steps[2].rate``), so whoever
  edits the file can find them;
- ``validate_product`` names fields by the dataclass (and protobuf) names
  (``presentations[1].ml``, ``rate_schedules[0].steps[2].rate``, ``storage.kind``), so the API
  can prefix them with its request field (``product.``) for a BadRequest.

Each bad field gives exactly one violation: checks that depend on another field (mL against
grams and concentration, step order) are skipped while that field is itself bad.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import TypeVar

from biip import ParseError
from biip.checksums import gs1_standard_check_digit as _check_digit
from biip.gtin import Gtin

from services.common.errors import FieldViolation, InvalidArgument

Problem = tuple[str, str]
"""(field path, description)."""

MAX_CONCENTRATION_PERCENT = Decimal(30)
ML_TOLERANCE = Decimal("0.01")
"""mL may differ from grams × 100 / concentration by at most 1 % (label rounding, e.g.
Cutaquig's 1 g / 6 mL at 16.5 %, docs/clinical-rules.md#products)."""
DEFAULT_STEP_MINUTES = 30
"""docs/clinical-rules.md#infusion-time: a rate step without a labelled hold time is held 30
minutes."""

_CODE_RE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_GTIN_RE = re.compile(r"[0-9]{14}")
_CURRENCY_RE = re.compile(r"[A-Z]{3}")
_ROOT = "(document)"


class IgClass(StrEnum):
    IVIG = "IVIG"
    SCIG = "SCIG"
    FSCIG = "FSCIG"  # facilitated subcutaneous (HyQvia)


class Route(StrEnum):
    IV = "IV"
    SC = "SC"
    FSC = "FSC"


class StorageKind(StrEnum):
    REFRIGERATED = "REFRIGERATED"
    ROOM_TEMPERATURE = "ROOM_TEMPERATURE"
    # 2–8 °C, but may be kept at room temperature once, for a limited time
    # (docs/clinical-rules.md#storage-and-expiry)
    REFRIGERATED_WITH_RT_ALLOWANCE = "REFRIGERATED_WITH_RT_ALLOWANCE"


class RateUnit(StrEnum):
    ML_PER_KG_H = "ML_PER_KG_H"
    MG_PER_KG_MIN = "MG_PER_KG_MIN"
    ML_PER_H = "ML_PER_H"  # absolute rate per infusion site (subcutaneous products)


_ROUTE_FOR_CLASS = {IgClass.IVIG: Route.IV, IgClass.SCIG: Route.SC, IgClass.FSCIG: Route.FSC}


@dataclass(frozen=True)
class Presentation:
    """One vial or pack size."""

    grams: Decimal
    ml: Decimal
    gtin: str | None = None  # GS1 GTIN-14; None where unknown


@dataclass(frozen=True)
class StorageRule:
    """kind None: the storage rule is not known (the sources give none: NF); take it from the label.
    room_temperature_months: for REFRIGERATED_WITH_RT_ALLOWANCE the allowance at ≤25 °C within
    shelf life; for ROOM_TEMPERATURE the shelf life at room temperature; otherwise None."""

    kind: StorageKind | None
    room_temperature_months: int | None
    note: str = ""


@dataclass(frozen=True)
class RateStep:
    rate: Decimal
    # None: the label gives no hold time (docs/clinical-rules.md#infusion-time default 30)
    minutes: int | None = None


@dataclass(frozen=True)
class RateSchedule:
    """A labelled infusion-rate ramp for one indication, in the label's own unit."""

    indication: str
    unit: RateUnit
    steps: tuple[RateStep, ...]
    source: str = ""


@dataclass(frozen=True)
class Price:
    amount: Decimal  # per gram
    currency: str  # ISO 4217
    source: str = ""


@dataclass(frozen=True)
class ConversionFactor:
    """IVIg→SCIg weekly dose factor (docs/clinical-rules.md#sc-conversion): weekly SC g = factor ×
    IVIg g ÷ weeks."""

    indication: str
    factor: Decimal
    source: str = ""
    label_version: str = "current"  # whose label: "current", or e.g. "older"


@dataclass(frozen=True)
class ScAdministration:
    """A subcutaneous product's label figures for the SC conversion
    (docs/clinical-rules.md#sc-infusions): steady-state mL per site (PI or the only figure;
    CIDP, used for MMN too; under 40 kg), sites at once (None: no limit), mL a day."""

    site_max_ml: Decimal | None = None
    site_max_ml_cidp: Decimal | None = None
    site_max_ml_under_40_kg: Decimal | None = None
    max_sites: int | None = None
    max_ml_per_day: Decimal | None = None
    max_ml_per_day_under_40_kg: Decimal | None = None
    source: str = ""

    def figures(self) -> dict[str, Decimal | None]:
        return {
            "site_max_ml": self.site_max_ml,
            "site_max_ml_cidp": self.site_max_ml_cidp,
            "site_max_ml_under_40_kg": self.site_max_ml_under_40_kg,
            "max_ml_per_day": self.max_ml_per_day,
            "max_ml_per_day_under_40_kg": self.max_ml_per_day_under_40_kg,
        }


SC_FIGURES = (
    "site_max_ml",
    "site_max_ml_cidp",
    "site_max_ml_under_40_kg",
    "max_ml_per_day",
    "max_ml_per_day_under_40_kg",
)


def check_sc_administration(sc: ScAdministration, path: str) -> list[Problem]:
    problems: list[Problem] = [
        (f"{path}.{name}", "must be above 0 (or empty when unknown)")
        for name, value in sc.figures().items()
        if value is not None and value <= 0
    ]
    if sc.max_sites is not None and not 1 <= sc.max_sites <= 12:
        problems.append((f"{path}.max_sites", "must be 1 to 12 (or empty for no limit)"))
    return problems


@dataclass(frozen=True)
class Source:
    tag: str  # reference tag in docs/clinical-rules.md#sources, e.g. "R10"
    url: str


@dataclass(frozen=True)
class Product:
    code: str
    brand: str
    manufacturer: str
    ig_class: IgClass
    concentration_percent: Decimal
    routes: tuple[Route, ...]
    presentations: tuple[Presentation, ...]
    storage: StorageRule
    rate_schedules: tuple[RateSchedule, ...] = ()
    price_per_gram: Price | None = None
    conversion_factors: tuple[ConversionFactor, ...] = ()
    sources: tuple[Source, ...] = ()
    note: str = ""
    sc_administration: ScAdministration | None = None

    def ml_for_grams(self, grams: Decimal) -> Decimal:
        """Volume of ``grams`` of this product: grams × 100 / concentration
        (docs/clinical-rules.md#infusion-volume)."""
        return grams * 100 / self.concentration_percent


class CatalogueError(InvalidArgument):
    """The catalogue document is invalid; ``problems`` lists every bad field with its path."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        super().__init__(
            [FieldViolation(path, text) for path, text in self.problems],
            "invalid product catalogue: "
            + "; ".join(f"{path}: {text}" for path, text in self.problems),
        )


# --------------------------------------------------------------------------------------------
# Validation helpers. Each takes the values it checks (None = unknown or already reported, so
# skipped) and the path prefix to report under; the API and the parser share them.


def gtin_problem(gtin: str) -> str | None:
    """Why ``gtin`` is not a valid GS1 GTIN-14, or None when it is."""
    if not _GTIN_RE.fullmatch(gtin):
        return "must be a GTIN-14: exactly 14 digits"
    try:
        Gtin.parse(gtin)
    except ParseError:
        expected = _check_digit(gtin[:13])
        return f"GS1 check digit is wrong (the 14th digit should be {expected})"
    return None


def check_code(code: str | None, path: str) -> list[Problem]:
    if code is not None and not _CODE_RE.fullmatch(code):
        return [(path, "must be a slug of lower-case letters and digits joined by hyphens")]
    return []


def check_brand(brand: str | None, path: str) -> list[Problem]:
    if brand is not None and not brand.strip():
        return [(path, "must not be empty")]
    return []


def concentration_ok(concentration: Decimal | None) -> bool:
    return concentration is not None and 0 < concentration <= MAX_CONCENTRATION_PERCENT


def check_concentration(concentration: Decimal | None, path: str) -> list[Problem]:
    if concentration is not None and not concentration_ok(concentration):
        return [(path, f"must be above 0 and at most {MAX_CONCENTRATION_PERCENT} (%)")]
    return []


def check_routes(
    routes: Sequence[Route] | None, ig_class: IgClass | None, path: str
) -> list[Problem]:
    if routes is None:
        return []
    if not routes:
        return [(path, "at least one route is required")]
    problems: list[Problem] = []
    for i, route in enumerate(routes):
        if route in routes[:i]:
            problems.append((f"{path}[{i}]", f"route {route} is listed twice"))
    if ig_class is not None and _ROUTE_FOR_CLASS[ig_class] not in routes:
        problems.append(
            (path, f"a {ig_class} product must list route {_ROUTE_FOR_CLASS[ig_class]}")
        )
    return problems


def check_presentation(
    grams: Decimal | None,
    ml: Decimal | None,
    gtin: str | None,
    concentration: Decimal | None,
    path: str,
) -> list[Problem]:
    """One presentation. mL is checked against grams × 100 / concentration only when grams, mL
    and concentration are each valid."""
    problems: list[Problem] = []
    grams_ok = grams is not None and grams > 0
    ml_ok = ml is not None and ml > 0
    if grams is not None and not grams_ok:
        problems.append((f"{path}.grams", "must be above 0"))
    if ml is not None and not ml_ok:
        problems.append((f"{path}.ml", "must be above 0"))
    if grams_ok and ml_ok and concentration_ok(concentration):
        assert grams is not None and ml is not None and concentration is not None
        # |ml − g·100/c| ≤ 1 % of g·100/c, multiplied out by c so it stays exact in Decimal
        expected_x_c = grams * 100
        if abs(ml * concentration - expected_x_c) > expected_x_c * ML_TOLERANCE:
            expected = (expected_x_c / concentration).normalize()
            problems.append(
                (
                    f"{path}.ml",
                    f"{ml} mL does not match {grams} g at {concentration} % "
                    f"(expected {expected} mL, within 1 %)",
                )
            )
    if gtin is not None:
        why = gtin_problem(gtin)
        if why:
            problems.append((f"{path}.gtin", why))
    return problems


def check_presentations(
    presentations: Sequence[Presentation], concentration: Decimal | None, path: str
) -> list[Problem]:
    """All presentations of one product, including the cross-presentation rules (at least one,
    unique grams, unique GTINs)."""
    return _check_presentation_list(
        [(p.grams, p.ml, p.gtin) for p in presentations], concentration, path
    )


def _check_presentation_list(
    items: Sequence[tuple[Decimal | None, Decimal | None, str | None]],
    concentration: Decimal | None,
    path: str,
) -> list[Problem]:
    if not items:
        return [(path, "at least one presentation is required")]
    problems: list[Problem] = []
    seen_grams: dict[Decimal, int] = {}
    seen_gtins: dict[str, int] = {}
    for i, (grams, ml, gtin) in enumerate(items):
        item_path = f"{path}[{i}]"
        item_problems = check_presentation(grams, ml, gtin, concentration, item_path)
        problems.extend(item_problems)
        bad = {p for p, _ in item_problems}
        if grams is not None and f"{item_path}.grams" not in bad:
            if grams in seen_grams:
                problems.append(
                    (
                        f"{item_path}.grams",
                        f"{grams} g is already listed at {path}[{seen_grams[grams]}]",
                    )
                )
            else:
                seen_grams[grams] = i
        if gtin is not None and f"{item_path}.gtin" not in bad:
            if gtin in seen_gtins:
                problems.append(
                    (f"{item_path}.gtin", f"already used by {path}[{seen_gtins[gtin]}]")
                )
            else:
                seen_gtins[gtin] = i
    return problems


def check_storage(
    kind: StorageKind | None, months: int | None, path: str, *, kind_known: bool = True
) -> list[Problem]:
    """``kind_known`` False: the kind itself was bad (already reported), so its combination with
    the months is not checked."""
    months_path = f"{path}.room_temperature_months"
    if months is not None and months <= 0:
        return [(months_path, "must be a whole number of months above 0, or null")]
    if not kind_known:
        return []
    if kind is StorageKind.REFRIGERATED_WITH_RT_ALLOWANCE and months is None:
        return [(months_path, "required: the room-temperature allowance in months")]
    if kind in (StorageKind.REFRIGERATED, None) and months is not None:
        what = "refrigerated-only" if kind else "an unknown storage"
        return [(months_path, f"must be null for {what} rule")]
    return []


def check_rate_schedule(
    indication: str | None,
    steps: Sequence[tuple[Decimal | None, int | None]] | None,
    path: str,
) -> list[Problem]:
    """Rates above 0 and non-decreasing; hold minutes, where given, above 0."""
    problems: list[Problem] = []
    if indication is not None and not indication.strip():
        problems.append((f"{path}.indication", "must not be empty"))
    if steps is None:
        return problems
    if not steps:
        problems.append((f"{path}.steps", "at least one step is required"))
        return problems
    previous: Decimal | None = None
    for i, (rate, minutes) in enumerate(steps):
        step_path = f"{path}.steps[{i}]"
        if rate is not None:
            if rate <= 0:
                problems.append((f"{step_path}.rate", "must be above 0"))
                rate = None
            elif previous is not None and rate < previous:
                problems.append(
                    (f"{step_path}.rate", f"must not be lower than the previous step ({previous})")
                )
        if minutes is not None and minutes <= 0:
            problems.append((f"{step_path}.minutes", "must be a whole number above 0, or null"))
        if rate is not None:
            previous = rate if previous is None else max(previous, rate)
    return problems


def check_price(amount: Decimal | None, currency: str | None, path: str) -> list[Problem]:
    problems: list[Problem] = []
    if amount is not None and amount < 0:
        problems.append((f"{path}.amount", "must be 0 or more"))
    if currency is not None and not _CURRENCY_RE.fullmatch(currency):
        problems.append((f"{path}.currency", "must be a 3-letter ISO 4217 code, e.g. GBP"))
    return problems


def check_conversion_factor(
    indication: str | None, factor: Decimal | None, path: str
) -> list[Problem]:
    problems: list[Problem] = []
    if indication is not None and not indication.strip():
        problems.append((f"{path}.indication", "must not be empty"))
    if factor is not None and factor <= 0:
        problems.append((f"{path}.factor", "must be above 0"))
    return problems


def check_source(tag: str | None, url: str | None, path: str) -> list[Problem]:
    problems: list[Problem] = []
    if tag is not None and not tag.strip():
        problems.append((f"{path}.tag", "must not be empty"))
    if url is not None and not url.startswith(("http://", "https://")):
        problems.append((f"{path}.url", "must be an http(s) URL"))
    return problems


def validate_product(product: Product) -> list[Problem]:
    """Every rule a product must meet, as (field path, description) pairs; empty when valid.
    Paths use the dataclass (protobuf) field names, relative to the product."""
    problems = [
        *check_code(product.code, "code"),
        *check_brand(product.brand, "brand"),
        *check_concentration(product.concentration_percent, "concentration_percent"),
        *check_routes(product.routes, product.ig_class, "routes"),
        *check_presentations(product.presentations, product.concentration_percent, "presentations"),
        *check_storage(product.storage.kind, product.storage.room_temperature_months, "storage"),
    ]
    for i, schedule in enumerate(product.rate_schedules):
        problems += check_rate_schedule(
            schedule.indication,
            [(step.rate, step.minutes) for step in schedule.steps],
            f"rate_schedules[{i}]",
        )
    if product.price_per_gram is not None:
        price = product.price_per_gram
        problems += check_price(price.amount, price.currency, "price_per_gram")
    for i, cf in enumerate(product.conversion_factors):
        problems += check_conversion_factor(cf.indication, cf.factor, f"conversion_factors[{i}]")
    for i, source in enumerate(product.sources):
        problems += check_source(source.tag, source.url, f"sources[{i}]")
    if product.sc_administration is not None:
        problems += check_sc_administration(product.sc_administration, "sc_administration")
    return problems


# --------------------------------------------------------------------------------------------
# Parsing the YAML document (already loaded, e.g. by yaml.safe_load).

_E = TypeVar("_E", bound=StrEnum)
_T = TypeVar("_T")


class _Reader:
    """Reads typed values out of loaded YAML, recording one problem per bad field."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, path: str, text: str) -> None:
        self.problems.append((path, text))

    def mapping(
        self, value: object, path: str, required: Iterable[str], optional: Iterable[str]
    ) -> Mapping[str, object] | None:
        """The mapping at ``path`` after reporting missing required and unknown keys; None when
        it is not a mapping."""
        if not isinstance(value, Mapping):
            self.add(path, "must be a mapping")
            return None
        required = tuple(required)
        known = set(required) | set(optional)
        for key in required:
            if key not in value:
                self.add(f"{path}.{key}", "required")
        for key in value:
            if key not in known:
                self.add(f"{path}.{key}", "unknown field")
        return value

    def text(self, m: Mapping[str, object], key: str, path: str, *, default: str = "") -> str:
        value = m.get(key, default)
        if value is None:
            return default
        if not isinstance(value, str):
            self.add(f"{path}.{key}", "must be text")
            return default
        return value

    def required_text(self, m: Mapping[str, object], key: str, path: str) -> str | None:
        if key not in m:
            return None  # reported by mapping()
        value = m[key]
        if not isinstance(value, str):
            self.add(f"{path}.{key}", "must be text")
            return None
        return value

    def optional_text(self, m: Mapping[str, object], key: str, path: str) -> str | None:
        value = m.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            self.add(f"{path}.{key}", "must be text or null")
            return None
        return value

    def decimal(self, m: Mapping[str, object], key: str, path: str) -> Decimal | None:
        if key not in m:
            return None  # reported by mapping()
        value = m[key]
        where = f"{path}.{key}"
        if isinstance(value, float):
            self.add(where, 'write decimals as quoted strings (e.g. "2.5"), not YAML floats')
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            return Decimal(value)
        if isinstance(value, str):
            try:
                number = Decimal(value.strip())
            except InvalidOperation:
                number = None
            if number is not None and number.is_finite():
                return number
        self.add(where, 'must be a decimal number written as a string, e.g. "2.5"')
        return None

    def optional_int(self, m: Mapping[str, object], key: str, path: str) -> int | None:
        value = m.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(f"{path}.{key}", "must be a whole number or null")
            return None
        return value

    def enum(self, m: Mapping[str, object], key: str, path: str, kind: type[_E]) -> _E | None:
        if key not in m:
            return None  # reported by mapping()
        value = m[key]
        if isinstance(value, str) and value in {member.value for member in kind}:
            return kind(value)
        allowed = ", ".join(member.value for member in kind)
        self.add(f"{path}.{key}", f"must be one of {allowed}")
        return None

    def items(self, value: object, path: str) -> list[object] | None:
        if not isinstance(value, list):
            self.add(path, "must be a list")
            return None
        return value

    def one_or_many(
        self,
        m: Mapping[str, object],
        key: str,
        path: str,
        read: Callable[[object, str], _T | None],
    ) -> tuple[list[_T], bool]:
        """A key holding null, one mapping or a list of mappings. Returns the parsed items and
        whether every one parsed."""
        value = m.get(key)
        if value is None:
            return [], True
        where = f"{path}.{key}"
        raw: list[tuple[object, str]] | None = (
            [(value, where)] if isinstance(value, Mapping) else None
        )
        if raw is None:
            listed = self.items(value, where)
            if listed is None:
                return [], False
            raw = [(item, f"{where}[{i}]") for i, item in enumerate(listed)]
        parsed = [read(item, item_path) for item, item_path in raw]
        good = [item for item in parsed if item is not None]
        return good, len(good) == len(parsed)


def _read_presentation(
    r: _Reader, value: object, path: str
) -> tuple[Decimal | None, Decimal | None, str | None, bool]:
    m = r.mapping(value, path, ("grams", "ml"), ("gtin",))
    if m is None:
        return None, None, None, False
    before = len(r.problems)
    grams = r.decimal(m, "grams", path)
    ml = r.decimal(m, "ml", path)
    gtin = r.optional_text(m, "gtin", path)
    return grams, ml, gtin, len(r.problems) == before


def _read_storage(r: _Reader, value: object, path: str) -> StorageRule | None:
    m = r.mapping(value, path, ("rule",), ("room_temperature_months", "note"))
    if m is None:
        return None
    before = len(r.problems)
    kind: StorageKind | None = None
    kind_known = "rule" in m  # a missing rule is reported by mapping()
    if m.get("rule") is not None:
        kind = r.enum(m, "rule", path, StorageKind)
        kind_known = kind is not None
    months = r.optional_int(m, "room_temperature_months", path)
    note = r.text(m, "note", path)
    r.problems += check_storage(kind, months, path, kind_known=kind_known)
    if len(r.problems) != before:
        return None
    return StorageRule(kind, months, note)


def _read_rate_schedule(r: _Reader, value: object, path: str) -> RateSchedule | None:
    m = r.mapping(value, path, ("indication", "unit", "steps"), ("source",))
    if m is None:
        return None
    before = len(r.problems)
    indication = r.required_text(m, "indication", path)
    unit = r.enum(m, "unit", path, RateUnit)
    source = r.text(m, "source", path)
    steps: list[tuple[Decimal | None, int | None]] | None = None
    if "steps" in m:
        raw_steps = r.items(m["steps"], f"{path}.steps")
        if raw_steps is not None:
            steps = []
            for i, raw in enumerate(raw_steps):
                step_path = f"{path}.steps[{i}]"
                sm = r.mapping(raw, step_path, ("rate",), ("minutes",))
                if sm is None:
                    steps.append((None, None))
                    continue
                steps.append(
                    (r.decimal(sm, "rate", step_path), r.optional_int(sm, "minutes", step_path))
                )
    r.problems += check_rate_schedule(indication, steps, path)
    if len(r.problems) != before or indication is None or unit is None or steps is None:
        return None
    return RateSchedule(
        indication,
        unit,
        tuple(RateStep(rate, minutes) for rate, minutes in steps if rate is not None),
        source,
    )


def _read_price(r: _Reader, value: object, path: str) -> Price | None:
    m = r.mapping(value, path, ("amount", "currency"), ("source",))
    if m is None:
        return None
    before = len(r.problems)
    amount = r.decimal(m, "amount", path)
    currency = r.required_text(m, "currency", path)
    source = r.text(m, "source", path)
    r.problems += check_price(amount, currency, path)
    if len(r.problems) != before or amount is None or currency is None:
        return None
    return Price(amount, currency, source)


def _read_conversion_factor(r: _Reader, value: object, path: str) -> ConversionFactor | None:
    m = r.mapping(value, path, ("indication", "factor"), ("source", "label_version"))
    if m is None:
        return None
    before = len(r.problems)
    indication = r.required_text(m, "indication", path)
    factor = r.decimal(m, "factor", path)
    source = r.text(m, "source", path)
    label = r.text(m, "label_version", path) or "current"
    r.problems += check_conversion_factor(indication, factor, path)
    if len(r.problems) != before or indication is None or factor is None:
        return None
    return ConversionFactor(indication, factor, source, label)


def _read_source(r: _Reader, value: object, path: str) -> Source | None:
    m = r.mapping(value, path, ("tag", "url"), ())
    if m is None:
        return None
    before = len(r.problems)
    tag = r.required_text(m, "tag", path)
    url = r.required_text(m, "url", path)
    r.problems += check_source(tag, url, path)
    if len(r.problems) != before or tag is None or url is None:
        return None
    return Source(tag, url)


_PRODUCT_REQUIRED = (
    "code",
    "brand",
    "manufacturer",
    "ig_class",
    "concentration_percent",
    "routes",
    "presentations",
    "storage",
)
_PRODUCT_OPTIONAL = (
    "rate_steps",
    "price_per_gram",
    "scig_conversion_factor",
    "sources",
    "note",
    "sc_administration",
)


def _read_sc_administration(r: _Reader, value: object, path: str) -> ScAdministration | None:
    m = r.mapping(value, path, (), (*SC_FIGURES, "max_sites", "source"))
    if m is None:
        return None
    before = len(r.problems)
    figures = {name: r.decimal(m, name, path) for name in SC_FIGURES}
    sc = ScAdministration(
        **figures, max_sites=r.optional_int(m, "max_sites", path), source=r.text(m, "source", path)
    )
    r.problems += check_sc_administration(sc, path)
    return sc if len(r.problems) == before else None


def _read_product(r: _Reader, value: object, path: str) -> Product | None:
    m = r.mapping(value, path, _PRODUCT_REQUIRED, _PRODUCT_OPTIONAL)
    if m is None:
        return None
    before = len(r.problems)
    code = r.required_text(m, "code", path)
    r.problems += check_code(code, f"{path}.code")
    brand = r.required_text(m, "brand", path)
    r.problems += check_brand(brand, f"{path}.brand")
    manufacturer = r.required_text(m, "manufacturer", path)
    ig_class = r.enum(m, "ig_class", path, IgClass)
    concentration = r.decimal(m, "concentration_percent", path)
    r.problems += check_concentration(concentration, f"{path}.concentration_percent")

    routes: list[Route] | None = None
    if "routes" in m:
        raw_routes = r.items(m["routes"], f"{path}.routes")
        if raw_routes is not None:
            routes = []
            for i, raw in enumerate(raw_routes):
                if isinstance(raw, str) and raw in {route.value for route in Route}:
                    routes.append(Route(raw))
                else:
                    allowed = ", ".join(route.value for route in Route)
                    r.add(f"{path}.routes[{i}]", f"must be one of {allowed}")
            if len(routes) == len(raw_routes):
                r.problems += check_routes(routes, ig_class, f"{path}.routes")

    presentations: list[Presentation] = []
    if "presentations" in m:
        raw_presentations = r.items(m["presentations"], f"{path}.presentations")
        if raw_presentations is not None:
            read = [
                _read_presentation(r, raw, f"{path}.presentations[{i}]")
                for i, raw in enumerate(raw_presentations)
            ]
            r.problems += _check_presentation_list(
                [(grams, ml, gtin) for grams, ml, gtin, _ in read],
                concentration,
                f"{path}.presentations",
            )
            presentations = [
                Presentation(grams, ml, gtin)
                for grams, ml, gtin, ok in read
                if ok and grams is not None and ml is not None
            ]

    storage = _read_storage(r, m["storage"], f"{path}.storage") if "storage" in m else None
    schedules, _ = r.one_or_many(m, "rate_steps", path, lambda v, p: _read_rate_schedule(r, v, p))
    price = (
        _read_price(r, m["price_per_gram"], f"{path}.price_per_gram")
        if m.get("price_per_gram") is not None
        else None
    )
    factors, _ = r.one_or_many(
        m, "scig_conversion_factor", path, lambda v, p: _read_conversion_factor(r, v, p)
    )
    sources: list[Source] = []
    if m.get("sources") is not None:
        raw_sources = r.items(m["sources"], f"{path}.sources")
        for i, raw in enumerate(raw_sources or []):
            source = _read_source(r, raw, f"{path}.sources[{i}]")
            if source is not None:
                sources.append(source)
    note = r.text(m, "note", path)
    sc_administration = (
        _read_sc_administration(r, m["sc_administration"], f"{path}.sc_administration")
        if m.get("sc_administration") is not None
        else None
    )

    if (
        len(r.problems) != before
        or code is None
        or brand is None
        or manufacturer is None
        or ig_class is None
        or concentration is None
        or routes is None
        or storage is None
    ):
        return None
    return Product(
        code=code,
        brand=brand,
        manufacturer=manufacturer,
        ig_class=ig_class,
        concentration_percent=concentration,
        routes=tuple(routes),
        presentations=tuple(presentations),
        storage=storage,
        rate_schedules=tuple(schedules),
        price_per_gram=price,
        conversion_factors=tuple(factors),
        sources=tuple(sources),
        note=note,
        sc_administration=sc_administration,
    )


def parse_catalogue(data: object) -> list[Product]:
    """The products of a loaded catalogue document ``{products: [...]}``, in file order.

    Raises CatalogueError listing every bad field (one problem per field, YAML paths such as
    ``products[2].presentations[0].ml``) and every product code used twice."""
    r = _Reader()
    document = r.mapping(data, _ROOT, ("products",), ())
    if document is None:
        raise CatalogueError(r.problems)
    raw_products = r.items(document["products"], "products") if "products" in document else None
    products: list[Product] = []
    first_with_code: dict[str, int] = {}
    for i, raw in enumerate(raw_products or []):
        path = f"products[{i}]"
        product = _read_product(r, raw, path)
        code = raw.get("code") if isinstance(raw, Mapping) else None
        if isinstance(code, str) and _CODE_RE.fullmatch(code):
            if code in first_with_code:
                r.add(
                    f"{path}.code", f"{code!r} is already used by products[{first_with_code[code]}]"
                )
            else:
                first_with_code[code] = i
        if product is not None:
            products.append(product)
    if r.problems:
        raise CatalogueError(r.problems)
    return products


@dataclass(frozen=True)
class StoredProduct:
    """A product as the catalogue keeps it: its id, whether it is offered, its version."""

    id: str
    product: Product
    active: bool
    revision: int
    created_at: dt.datetime
    updated_at: dt.datetime
