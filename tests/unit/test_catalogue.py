"""The product catalogue (docs/clinical-rules.md#products): the shipped products.yaml and the
parser's validation."""

from __future__ import annotations

import copy
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.inventory.data import PRODUCTS_PATH, load_products
from services.inventory.domain.catalogue import (
    CatalogueError,
    IgClass,
    Presentation,
    Product,
    RateUnit,
    Route,
    StorageKind,
    gtin_problem,
    parse_catalogue,
    validate_product,
)

EXPECTED_CODES = {
    "gammagard-liquid",
    "gammagard-liquid-erc",
    "privigen",
    "panzyga",
    "octagam-10",
    "octagam-5",
    "flebogamma-dif-5",
    "bivigam",
    "asceniv",
    "hizentra",
    "cuvitru",
    "cutaquig",
}
VALID_GTIN = "10312345678903"  # GS1 check digit: 3


@pytest.fixture(scope="module")
def products() -> dict[str, Product]:
    return {product.code: product for product in load_products()}


# --- the shipped file ----------------------------------------------------------------------


def test_shipped_file_parses_with_one_entry_per_product(products: dict[str, Product]) -> None:
    assert set(products) == EXPECTED_CODES
    assert len(load_products(PRODUCTS_PATH)) == len(EXPECTED_CODES)


def test_every_shipped_product_validates(products: dict[str, Product]) -> None:
    for product in products.values():
        assert validate_product(product) == [], product.code


def test_ml_is_grams_times_100_over_concentration(products: dict[str, Product]) -> None:
    for product in products.values():
        for p in product.presentations:
            expected = p.grams * 100 / product.concentration_percent
            # within 1 %, multiplied out by the concentration so the comparison is exact
            grams_x_100 = p.grams * 100
            deviation = abs(p.ml * product.concentration_percent - grams_x_100)
            assert deviation <= grams_x_100 * Decimal("0.01"), (product.code, p)
            # Cutaquig's labels round (1 g = 6 mL at 16.5 %, exactly 1 % off); the rest are exact
            if product.code != "cutaquig":
                assert p.ml == expected, (product.code, p)
                assert product.ml_for_grams(p.grams) == p.ml


def test_gammagard_presentations(products: dict[str, Product]) -> None:
    gammagard = products["gammagard-liquid"]
    assert [p.grams for p in gammagard.presentations] == [
        Decimal(g) for g in ("1", "2.5", "5", "10", "20", "30")
    ]
    assert gammagard.ig_class is IgClass.IVIG
    assert gammagard.routes == (Route.IV, Route.SC)
    [mmn] = gammagard.rate_schedules
    assert mmn.indication == "MMN" and mmn.unit is RateUnit.ML_PER_KG_H
    assert [(s.rate, s.minutes) for s in mmn.steps] == [
        (Decimal(r), 30) for r in ("0.5", "1", "2", "3", "4", "5", "5.4")
    ]


def test_rate_ramps_are_domain_md_figures(products: dict[str, Product]) -> None:
    def rates(code: str, i: int = 0) -> list[Decimal]:
        return [step.rate for step in products[code].rate_schedules[i].steps]

    assert rates("octagam-10") == [Decimal(r) for r in ("1", "2", "4", "8", "12")]
    assert rates("panzyga") == [Decimal(r) for r in ("1", "4", "8", "12")]
    assert rates("privigen") == [Decimal(r) for r in ("0.5", "1", "2", "4", "8")]
    assert "assumption" in products["privigen"].rate_schedules[0].source
    assert rates("hizentra") == [Decimal("15"), Decimal("25")]
    assert products["hizentra"].rate_schedules[0].unit is RateUnit.ML_PER_H
    for code in ("gammagard-liquid-erc", "octagam-5", "flebogamma-dif-5", "bivigam", "asceniv"):
        assert products[code].rate_schedules == (), code


def test_storage_conversion_and_sources(products: dict[str, Product]) -> None:
    assert products["panzyga"].storage.kind is StorageKind.REFRIGERATED_WITH_RT_ALLOWANCE
    assert products["panzyga"].storage.room_temperature_months == 12
    assert products["octagam-10"].storage.room_temperature_months == 9
    assert products["privigen"].storage.kind is StorageKind.ROOM_TEMPERATURE
    assert products["gammagard-liquid"].storage.kind is None  # NF: docs/clinical-rules.md#products
    factors = {
        code: [(cf.factor, cf.label_version) for cf in product.conversion_factors]
        for code, product in products.items()
        if product.conversion_factors
    }
    assert factors == {
        "gammagard-liquid": [(Decimal("1.37"), "current")],
        # docs/clinical-rules.md#sc-dose: Hizentra's older US label used 1.53 in PI
        "hizentra": [(Decimal("1.37"), "current"), (Decimal("1.53"), "older")],
        "cuvitru": [(Decimal("1.30"), "current")],
        "cutaquig": [(Decimal("1.30"), "current")],
    }
    # docs/clinical-rules.md#sc-infusions: steady-state mL a site (PI, CIDP, under 40 kg), sites
    sc = {
        code: (
            p.sc_administration.site_max_ml,
            p.sc_administration.site_max_ml_cidp,
            p.sc_administration.site_max_ml_under_40_kg,
            p.sc_administration.max_sites,
        )
        for code, p in products.items()
        if p.sc_administration is not None
    }
    assert sc == {
        "gammagard-liquid": (Decimal(30), None, Decimal(20), None),
        "hizentra": (Decimal(25), Decimal(50), None, 4),
        "cuvitru": (Decimal(60), None, None, 4),
        "cutaquig": (Decimal(40), None, None, 6),
    }
    for product in products.values():
        assert product.sources, product.code
        assert "R52" in {s.tag for s in product.sources}, product.code


def test_no_invented_gtins_or_prices(products: dict[str, Product]) -> None:
    for product in products.values():
        assert all(p.gtin is None for p in product.presentations), product.code
        price = product.price_per_gram
        assert price is not None
        assert (price.amount, price.currency) == (Decimal("34.00"), "GBP")
        assert "[R52]" in price.source and "not this product's list price" in price.source


# --- invalid documents ---------------------------------------------------------------------


def valid_product(code: str = "test-ig") -> dict[str, Any]:
    return {
        "code": code,
        "brand": "Test IG",
        "manufacturer": "Maker",
        "ig_class": "IVIG",
        "concentration_percent": "10",
        "routes": ["IV"],
        "presentations": [
            {"grams": "2.5", "ml": "25", "gtin": None},
            {"grams": "5", "ml": "50", "gtin": VALID_GTIN},
        ],
        "storage": {"rule": "REFRIGERATED_WITH_RT_ALLOWANCE", "room_temperature_months": 9},
        "rate_steps": {
            "indication": "MMN",
            "unit": "MG_PER_KG_MIN",
            "steps": [{"rate": "1", "minutes": 30}, {"rate": "2", "minutes": 30}],
            "source": "test",
        },
        "price_per_gram": {"amount": "34.00", "currency": "GBP", "source": "test"},
        "scig_conversion_factor": None,
        "sources": [{"tag": "R1", "url": "https://example.org/label"}],
        "note": "",
    }


def problems_of(document: object) -> list[tuple[str, str]]:
    with pytest.raises(CatalogueError) as caught:
        parse_catalogue(document)
    assert [(v.field, v.description) for v in caught.value.violations] == caught.value.problems
    return caught.value.problems


def paths_of(document: object) -> list[str]:
    return [path for path, _ in problems_of(document)]


def test_the_valid_fixture_parses() -> None:
    [product] = parse_catalogue({"products": [valid_product()]})
    assert product.presentations[1] == Presentation(Decimal("5"), Decimal("50"), VALID_GTIN)
    assert product.storage.kind is StorageKind.REFRIGERATED_WITH_RT_ALLOWANCE
    assert validate_product(product) == []


Mutation = Callable[[dict[str, Any]], None]


def _set(*keys: str | int, value: object) -> Mutation:
    def mutate(product: dict[str, Any]) -> None:
        target: Any = product
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return mutate


def _delete(key: str) -> Mutation:
    def mutate(product: dict[str, Any]) -> None:
        del product[key]

    return mutate


P = "products[0]"

ONE_BAD_FIELD: list[tuple[str, Mutation, str]] = [
    ("empty brand", _set("brand", value="  "), f"{P}.brand"),
    ("missing brand", _delete("brand"), f"{P}.brand"),
    ("bad code", _set("code", value="Gamma Gard"), f"{P}.code"),
    ("unknown field", _set("colour", value="red"), f"{P}.colour"),
    ("bad ig_class", _set("ig_class", value="IGG"), f"{P}.ig_class"),
    ("class without its route", _set("ig_class", value="SCIG"), f"{P}.routes"),
    ("bad route", _set("routes", 0, value="IM"), f"{P}.routes[0]"),
    ("concentration 0", _set("concentration_percent", value="0"), f"{P}.concentration_percent"),
    ("concentration 31", _set("concentration_percent", value="31"), f"{P}.concentration_percent"),
    (
        "concentration float",
        _set("concentration_percent", value=10.0),
        f"{P}.concentration_percent",
    ),
    (
        "concentration text",
        _set("concentration_percent", value="ten"),
        f"{P}.concentration_percent",
    ),
    ("no presentations", _set("presentations", value=[]), f"{P}.presentations"),
    ("grams 0", _set("presentations", 0, "grams", value="0"), f"{P}.presentations[0].grams"),
    ("ml negative", _set("presentations", 0, "ml", value="-25"), f"{P}.presentations[0].ml"),
    (
        "ml off by more than 1 %",
        _set("presentations", 0, "ml", value="25.3"),
        f"{P}.presentations[0].ml",
    ),
    (
        "duplicate grams",
        _set("presentations", 1, value={"grams": "2.5", "ml": "25"}),
        f"{P}.presentations[1].grams",
    ),
    (
        "gtin too short",
        _set("presentations", 1, "gtin", value="12345"),
        f"{P}.presentations[1].gtin",
    ),
    (
        "gtin check digit",
        _set("presentations", 1, "gtin", value="10312345678904"),
        f"{P}.presentations[1].gtin",
    ),
    (
        "gtin not text",
        _set("presentations", 1, "gtin", value=10312345678903),
        f"{P}.presentations[1].gtin",
    ),
    (
        "RT allowance without months",
        _set("storage", "room_temperature_months", value=None),
        f"{P}.storage.room_temperature_months",
    ),
    ("bad storage rule", _set("storage", "rule", value="FROZEN"), f"{P}.storage.rule"),
    ("missing storage rule", lambda p: p["storage"].pop("rule"), f"{P}.storage.rule"),
    (
        "months on a refrigerated-only rule",
        _set("storage", "rule", value="REFRIGERATED"),
        f"{P}.storage.room_temperature_months",
    ),
    ("rate 0", _set("rate_steps", "steps", 0, "rate", value="0"), f"{P}.rate_steps.steps[0].rate"),
    (
        "rate decreasing",
        _set("rate_steps", "steps", 1, "rate", value="0.5"),
        f"{P}.rate_steps.steps[1].rate",
    ),
    ("bad unit", _set("rate_steps", "unit", value="ML_PER_MIN"), f"{P}.rate_steps.unit"),
    (
        "minutes 0",
        _set("rate_steps", "steps", 0, "minutes", value=0),
        f"{P}.rate_steps.steps[0].minutes",
    ),
    ("negative price", _set("price_per_gram", "amount", value="-1"), f"{P}.price_per_gram.amount"),
    (
        "bad currency",
        _set("price_per_gram", "currency", value="pounds"),
        f"{P}.price_per_gram.currency",
    ),
    (
        "conversion factor 0",
        _set("scig_conversion_factor", value={"indication": "PID", "factor": "0"}),
        f"{P}.scig_conversion_factor.factor",
    ),
    ("source url", _set("sources", 0, "url", value="example.org"), f"{P}.sources[0].url"),
]


@pytest.mark.parametrize(
    ("mutate", "path"),
    [pytest.param(m, p, id=name) for name, m, p in ONE_BAD_FIELD],
)
def test_one_bad_field_gives_one_violation_at_its_path(mutate: Mutation, path: str) -> None:
    product = valid_product()
    mutate(product)
    assert paths_of({"products": [product]}) == [path]


def test_every_bad_field_is_listed() -> None:
    product = valid_product()
    mutations = {name: mutate for name, mutate, _ in ONE_BAD_FIELD}
    for name in ("empty brand", "grams 0", "gtin check digit", "rate decreasing"):
        mutations[name](product)
    other = valid_product("other")
    other["price_per_gram"]["currency"] = "gbp"
    assert sorted(paths_of({"products": [product, other]})) == sorted(
        [
            f"{P}.brand",
            f"{P}.presentations[0].grams",
            f"{P}.presentations[1].gtin",
            f"{P}.rate_steps.steps[1].rate",
            "products[1].price_per_gram.currency",
        ]
    )


def test_list_of_rate_schedules_and_factors() -> None:
    product = valid_product()
    schedule = copy.deepcopy(product["rate_steps"])
    product["rate_steps"] = [schedule, {**schedule, "steps": [{"rate": "-1"}]}]
    product["scig_conversion_factor"] = [{"indication": "PID", "factor": "1.37"}]
    assert paths_of({"products": [product]}) == [f"{P}.rate_steps[1].steps[0].rate"]
    product["rate_steps"][1]["steps"] = [{"rate": "20"}]
    [parsed] = parse_catalogue({"products": [product]})
    assert len(parsed.rate_schedules) == 2 and parsed.rate_schedules[1].steps[0].minutes is None
    assert parsed.conversion_factors[0].factor == Decimal("1.37")


def test_duplicate_codes() -> None:
    assert paths_of({"products": [valid_product(), valid_product()]}) == ["products[1].code"]


@pytest.mark.parametrize(
    ("document", "path"),
    [
        (None, "(document)"),
        ([valid_product()], "(document)"),
        ({}, "(document).products"),
        ({"products": {"a": 1}}, "products"),
        ({"products": ["gammagard"]}, "products[0]"),
    ],
)
def test_malformed_documents(document: object, path: str) -> None:
    assert paths_of(document) == [path]


def test_error_message_lists_every_problem() -> None:
    product = valid_product()
    product["brand"] = ""
    product["concentration_percent"] = "0"
    with pytest.raises(CatalogueError) as caught:
        parse_catalogue({"products": [product]})
    assert "products[0].brand" in str(caught.value)
    assert "products[0].concentration_percent" in str(caught.value)


def test_load_products_reads_a_given_path(tmp_path: Path) -> None:
    file = tmp_path / "products.yaml"
    file.write_text(yaml.safe_dump({"products": [valid_product()]}), encoding="utf-8")
    [product] = load_products(file)
    assert product.code == "test-ig"


# --- validate_product (the API's checks, dataclass paths) ------------------------------------


def test_validate_product_uses_dataclass_paths() -> None:
    [product] = parse_catalogue({"products": [valid_product()]})
    bad = Product(
        code=product.code,
        brand="",
        manufacturer=product.manufacturer,
        ig_class=product.ig_class,
        concentration_percent=product.concentration_percent,
        routes=product.routes,
        presentations=(
            Presentation(Decimal("2.5"), Decimal("30")),
            Presentation(Decimal("2.5"), Decimal("25"), "123"),
        ),
        storage=product.storage,
        rate_schedules=product.rate_schedules,
        price_per_gram=None,
    )
    assert [path for path, _ in validate_product(bad)] == [
        "brand",
        "presentations[0].ml",
        "presentations[1].gtin",
        "presentations[1].grams",
    ]


def test_gtin_check_digit() -> None:
    assert gtin_problem(VALID_GTIN) is None
    wrong = gtin_problem("10312345678909")
    assert wrong is not None and "should be 3" in wrong
    assert gtin_problem("1031234567890") == "must be a GTIN-14: exactly 14 digits"
    assert gtin_problem("1031234567890٣") is not None  # non-ASCII digit
