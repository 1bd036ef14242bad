"""`python -m services.inventory demo` (run by `make run` after `seed`): a stocked pharmacy to
try the inventory against: two stock sites in Europe/London, a fridge and a room-temperature
store at each, lots of seven shipped products with realistic expiries and costs, and reorder
policies for the two busiest products.

Everything goes through the service layer (the same validation and ledger as ReceiveStock), and
it is idempotent: sites, storage units and policies are created only when missing, and a lot is
received only when its lot number is not yet at the site, so a second run changes nothing.

Costs: the UK National Ig Database average is £34 per gram (2018/19, docs/clinical-rules.md#cost
[R52]), so a 10 g vial costs about £340. Each product's lots sit a few per cent either side of that,
as contract prices do (the catalogue's price_per_gram is the same national average for all).

Expiries are counted from the day the demo first runs: a few lots expire within 30–90 days
(they trigger LOT_EXPIRING warnings and are first out under FEFO), most 12–30 months out, which
is the usual remaining shelf life of Ig on delivery.

Site ids: the scheduler has no demo data and makes its own site ids, so these sites are named
``demo-london`` and ``demo-manchester``; create a scheduler site and then a stock site with its
id (CreateStockSite) to reserve stock for booked appointments.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from services.common.clock import Clock, SystemClock
from services.common.db import Database
from services.common.errors import NotFound, Violations
from services.common.identity import acting_as, service_caller
from services.common.migrations import upgrade
from services.common.outbox import Outbox
from services.common.pagination import PageRequest
from services.common.settings import ServiceSettings
from services.inventory.domain.catalogue import StorageKind
from services.inventory.domain.forecast import Policy
from services.inventory.domain.sites import StockSite, StorageUnit
from services.inventory.domain.stock import Actor, Receipt
from services.inventory.store.models import outbox
from services.inventory.usecases.catalogue import Catalogue
from services.inventory.usecases.planning import Planning
from services.inventory.usecases.sites import Sites
from services.inventory.usecases.stock import Stock
from services.issuer.issuer import DEV_ORGANISATION

# UK average, National Ig Database 2018/19 (docs/clinical-rules.md#cost, R52)
GBP_PER_GRAM = Decimal("34.00")
FRIDGE = "Pharmacy fridge (2–8 °C)"
ROOM = "Room-temperature store (≤ 25 °C)"


@dataclass(frozen=True)
class DemoSite:
    id: str
    display_name: str
    time_zone: str
    units: tuple[tuple[str, StorageKind], ...]


@dataclass(frozen=True)
class DemoLot:
    site_id: str
    product: str  # catalogue code
    vial_grams: str
    lot_number: str
    expires_in_days: int  # from the day the demo first runs
    vials: int
    price_factor: str  # × £34/g: the contract price against the national average
    supplier: str


SITES = (
    DemoSite(
        "demo-london",
        "Demo: Central London infusion unit",
        "Europe/London",
        ((FRIDGE, StorageKind.REFRIGERATED), (ROOM, StorageKind.ROOM_TEMPERATURE)),
    ),
    DemoSite(
        "demo-manchester",
        "Demo: Manchester neurology day unit",
        "Europe/London",
        ((FRIDGE, StorageKind.REFRIGERATED), (ROOM, StorageKind.ROOM_TEMPERATURE)),
    ),
)

LOTS = (
    # London: the busy IVIg site
    DemoLot("demo-london", "gammagard-liquid", "10", "LE24A117", 52, 6, "1.00", "Takeda UK"),
    DemoLot("demo-london", "gammagard-liquid", "10", "LE25B044", 418, 40, "1.00", "Takeda UK"),
    DemoLot("demo-london", "gammagard-liquid", "20", "LE25C310", 540, 20, "0.98", "Takeda UK"),
    DemoLot("demo-london", "gammagard-liquid", "5", "LE25D021", 610, 24, "1.02", "Takeda UK"),
    DemoLot("demo-london", "privigen", "10", "P100288051", 83, 8, "1.03", "CSL Behring UK"),
    DemoLot("demo-london", "privigen", "20", "P100301442", 720, 16, "1.03", "CSL Behring UK"),
    DemoLot("demo-london", "octagam-10", "10", "M512A8431", 455, 30, "0.95", "Octapharma"),
    DemoLot("demo-london", "panzyga", "10", "PZ25F0913", 660, 12, "0.97", "Pfizer UK"),
    DemoLot("demo-london", "hizentra", "4", "P100299871", 37, 25, "1.05", "CSL Behring UK"),
    DemoLot("demo-london", "hizentra", "10", "P100317720", 790, 40, "1.05", "CSL Behring UK"),
    # Manchester: smaller, mostly one IVIg and one SCIg
    DemoLot("demo-manchester", "gammagard-liquid", "10", "LE25B045", 400, 24, "1.00", "Takeda UK"),
    DemoLot("demo-manchester", "gammagard-liquid", "30", "LE25E702", 880, 6, "0.98", "Takeda UK"),
    DemoLot("demo-manchester", "octagam-10", "20", "M512C1174", 68, 5, "0.95", "Octapharma"),
    DemoLot("demo-manchester", "cuvitru", "8", "LKE2511AB", 505, 30, "1.04", "Takeda UK"),
)

# Weekly review, a two-week lead time, a week's use as safety stock (illustrative figures).
POLICIES = (
    ("demo-london", "gammagard-liquid", Policy(14, Decimal(200), 7, Decimal(10), 10, Decimal(0))),
    ("demo-london", "hizentra", Policy(14, Decimal(80), 7, Decimal(10), 10, Decimal(0))),
)


@dataclass(frozen=True)
class DemoResult:
    sites_created: int
    units_created: int
    lots_received: int
    policies_set: int
    lots_total: int


def vial_cost(lot: DemoLot) -> Decimal:
    """£34/g × vial size × the product's price factor, to the penny (10 g at 1.00 = £340)."""
    return (GBP_PER_GRAM * Decimal(lot.vial_grams) * Decimal(lot.price_factor)).quantize(
        Decimal("0.01")
    )


def seed_demo(settings: ServiceSettings, clock: Clock | None = None) -> DemoResult:
    """Load the demo pharmacy as the inventory service itself, for the demo organisation
    (`make run`'s, demo/centre.py): its sites and stock are that organisation's."""
    with acting_as(service_caller("inventory")):
        return _seed_demo(settings, clock)


def _seed_demo(settings: ServiceSettings, clock: Clock | None) -> DemoResult:
    clock = clock or SystemClock()
    db = Database(settings.database_url, pool_size=2)
    try:
        upgrade("inventory", db.engine)
        catalogue = Catalogue(db, clock)
        sites = Sites(db, clock)
        stock = Stock(db, clock, catalogue, sites)
        planning = Planning(db, clock, catalogue, sites, stock, Outbox(outbox))
        actor = Actor("demo", "demo data for make run", "")
        made_sites = made_units = received = policies = 0
        for site in SITES:
            with db.write() as session:
                try:
                    sites.get(site.id, session)
                except NotFound:
                    sites.create(
                        session,
                        StockSite(
                            site.id,
                            site.display_name,
                            site.time_zone,
                            organisation_id=DEV_ORGANISATION,
                        ),
                    )
                    made_sites += 1
            have = {u.display_name for u, _ in sites.units(site.id)}
            for name, kind in site.units:
                if name not in have:
                    with db.write() as session:
                        sites.create_unit(session, StorageUnit("", site.id, name, kind.value))
                    made_units += 1
        unit_ids = {(site.id, u.storage): u.id for site in SITES for u, _ in sites.units(site.id)}
        for lot in LOTS:
            product = catalogue.get(lot.product)
            if stock.list_lots(lot.site_id, product.id, None, lot.lot_number, PageRequest(1, None)):
                continue
            # room-temperature products on the shelf, everything else (and unknown) in the fridge
            room = product.product.storage.kind is StorageKind.ROOM_TEMPERATURE
            shelf = StorageKind.ROOM_TEMPERATURE if room else StorageKind.REFRIGERATED
            unit = unit_ids[(lot.site_id, shelf)]
            today = sites.today(lot.site_id)
            receipt = Receipt(
                site_id=lot.site_id,
                product_id=product.id,
                presentation_grams=Decimal(lot.vial_grams),
                lot_number=lot.lot_number,
                expiry_date=today + dt.timedelta(days=lot.expires_in_days),
                vials=lot.vials,
                unit_cost=vial_cost(lot),
                currency="GBP",
                supplier=lot.supplier,
                storage_unit_id=unit,
            )
            with db.write() as session:
                stock.receive(session, receipt, actor)
            received += 1
        for site_id, code, policy in POLICIES:
            product = catalogue.get(code)
            try:
                planning.get_policy(site_id, product.id)
            except NotFound:
                with db.write() as session:
                    planning.set_policy(session, site_id, product.id, policy, "", Violations())
                policies += 1
        return DemoResult(made_sites, made_units, received, policies, len(LOTS))
    finally:
        db.dispose()
