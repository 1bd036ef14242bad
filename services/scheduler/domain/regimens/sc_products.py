"""What the SC rules need of a product, and the defaults the adopted rules give
(docs/clinical-rules.md#sc-dose, #sc-infusions, #hyqvia-ramp-up, #sc-administration, #products).

⚠ Every figure is label- and market-dependent (docs/clinical-rules.md#sc-conversion): the
service will take them from the catalogue (services/inventory/data/products.yaml holds the
concentrations, vial sizes and PI factors) and let a clinician override a factor with a reason.
The rules take a :class:`ScProduct` as input; :data:`SC_PRODUCTS` is only the default table.
An empty vial set or a None site volume is NF in the sources and must be configured.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from services.scheduler.domain.plans import Indication

CURRENT_LABEL = "current"
OLDER_LABEL = "older"
MMN_FACTOR = Decimal("1.00")  # off-label, 1:1 as in the RCT: docs/clinical-rules.md#sc-dose


@dataclass(frozen=True)
class ConversionFactor:
    indication: Indication
    factor: Decimal
    label_version: str = CURRENT_LABEL


@dataclass(frozen=True)
class ScProduct:
    """``site_max_ml`` is the label's steady-state volume per site after escalation (PI, or the
    only figure); ``site_max_ml_cidp`` the CIDP one, which MMN uses too when it exists.
    ``max_sites`` is how many sites may run at once (None: the rule sets no limit)."""

    key: str
    brand: str
    concentration_percent: Decimal
    vial_grams: tuple[Decimal, ...]
    site_max_ml: Decimal | None
    site_max_ml_cidp: Decimal | None = None
    site_max_ml_under_40_kg: Decimal | None = None
    max_sites: int | None = None
    factors: tuple[ConversionFactor, ...] = ()
    any_indication_factor: Decimal | None = None  # HyQvia: 1.00 whatever the indication
    cidp_g_per_kg_week: Decimal | None = None  # Hizentra CIDP: fixed, no factor
    max_ml_per_day: Decimal | None = None  # HyQvia: 1,200 mL (≥ 40 kg)
    max_ml_per_day_under_40_kg: Decimal | None = None  # HyQvia: 600 mL

    def site_max(self, indication: Indication, body_weight_kg: Decimal) -> Decimal | None:
        """docs/clinical-rules.md#sc-infusions: MMN uses the CIDP figure when there is one."""
        if body_weight_kg < 40 and self.site_max_ml_under_40_kg is not None:
            return self.site_max_ml_under_40_kg
        if indication in (Indication.CIDP, Indication.MMN) and self.site_max_ml_cidp is not None:
            return self.site_max_ml_cidp
        return self.site_max_ml

    def day_max(self, body_weight_kg: Decimal) -> Decimal | None:
        if body_weight_kg < 40 and self.max_ml_per_day_under_40_kg is not None:
            return self.max_ml_per_day_under_40_kg
        return self.max_ml_per_day


def _g(*sizes: str) -> tuple[Decimal, ...]:
    return tuple(Decimal(s) for s in sizes)


def _pi(factor: str) -> tuple[ConversionFactor, ...]:
    return (ConversionFactor(Indication.PID, Decimal(factor)),)


_MMN = (ConversionFactor(Indication.MMN, MMN_FACTOR),)

# keyed by the catalogue's product code (codes of products not catalogued are made up alike);
# docs/clinical-rules.md#sc-dose (factors), #sc-infusions (sites), #products (vials, conc.)
SC_PRODUCTS: dict[str, ScProduct] = {
    p.key: p
    for p in (
        ScProduct(
            "hizentra",
            "Hizentra",
            Decimal(20),
            _g("1", "2", "4", "10"),
            site_max_ml=Decimal(25),
            site_max_ml_cidp=Decimal(50),
            max_sites=4,
            factors=_pi("1.37")
            + (ConversionFactor(Indication.PID, Decimal("1.53"), OLDER_LABEL),)
            + _MMN,
            cidp_g_per_kg_week=Decimal("0.2"),
        ),
        ScProduct(
            "cuvitru",
            "Cuvitru",
            Decimal(20),
            _g("1", "2", "4", "8"),
            site_max_ml=Decimal(60),
            max_sites=4,
            factors=_pi("1.30") + _MMN,
        ),
        ScProduct(
            "xembify",
            "Xembify",
            Decimal(20),
            (),  # vial sizes NF
            site_max_ml=Decimal(25),
            max_sites=6,
            factors=_pi("1.37") + _MMN,
        ),
        ScProduct(
            "cutaquig",
            "Cutaquig",
            Decimal("16.5"),
            _g("1", "1.65", "2", "3.3", "4", "8"),
            site_max_ml=Decimal(40),
            max_sites=6,
            factors=_pi("1.30") + _MMN,
        ),
        ScProduct(
            "gammagard-liquid",  # the catalogue product, given SC (PI only)
            "Gammagard Liquid SC",
            Decimal(10),
            _g("1", "2.5", "5", "10", "20", "30"),
            site_max_ml=Decimal(30),
            site_max_ml_under_40_kg=Decimal(20),
            factors=_pi("1.37") + _MMN,
        ),
        ScProduct(
            "gamunex-c-sc",
            "Gamunex-C SC",
            Decimal(10),
            (),  # vial sizes NF
            site_max_ml=None,  # NF: configure
            factors=_pi("1.37") + _MMN,
        ),
        ScProduct(
            "hyqvia",
            "HyQvia",
            Decimal(10),
            (),  # unit sizes NF: configure
            site_max_ml=Decimal(600),
            max_sites=3,
            any_indication_factor=Decimal("1.00"),
            max_ml_per_day=Decimal(1200),
            max_ml_per_day_under_40_kg=Decimal(600),
        ),
    )
}
