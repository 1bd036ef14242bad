"""ReserveStock's cost against the number of lots a product has at the site: the same load
(one product, every call 20 g, needed-on days spread over four weeks) on a product with
LOT_COUNTS lots, each run on a fresh PostgreSQL database and service process, vacuumed and
analysed after seeding (``bench.harness.settle``). Reports calls/s and the service's CPU per
call; the two should stay within 20 % of each other, because the candidate lots are bounded
by the query, not by the product's size.

`python -m bench.lots [--seconds S] [--concurrency N]`
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from zoneinfo import ZoneInfo

from bench.harness import (
    channel,
    dev_issuer,
    measured_load,
    operator_token,
    settle,
    throwaway_database,
)
from bench.inventory import APPOINTMENT_ID, HOT, RESERVE, SITE, inventory_process, reserve_request
from demo.builder import Pharmacy
from infusion.inventory.v1 import inventory_pb2 as inv
from infusion.inventory.v1 import inventory_pb2_grpc

LOT_COUNTS = (10, 1000)
VIALS = 1000
STOCK_VIALS = 100_000
"""At least this many vials of the product over its lots (each lot VIALS or more): a call
takes two, and a product that runs out answers FAILED_PRECONDITION, a cheaper path than a
reservation, which would flatter the run with fewer lots (10 lots of 1,000 vials ran out at
600 calls/s)."""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    today = dt.datetime.now(ZoneInfo("Europe/London")).date()
    out = {}
    with dev_issuer() as issuer:
        for count in LOT_COUNTS:
            with (
                throwaway_database(f"lots{count}") as url,
                inventory_process(url, issuer) as (address, pid),
            ):
                token = operator_token(issuer)
                opened = channel(address, token)
                stub = inventory_pb2_grpc.InventoryServiceStub(opened)
                pharmacy = Pharmacy(stub, ids=lambda label: f"bench-{label}")
                pharmacy.stock_site(SITE, "Europe/London", "Bench site", request_id="bench-site")
                product = str(stub.GetProduct(inv.GetProductRequest(id=HOT)).product.id)
                for i in range(count):
                    expiry = today + dt.timedelta(days=200 + i)
                    lot = f"LOT-{i:04d}"
                    vials = max(VIALS, -(-STOCK_VIALS // count))
                    pharmacy.receive(SITE, product, lot, expiry, vials, request_id=f"bench-{lot}")
                settle(url)
                requests = [
                    reserve_request(product, today + dt.timedelta(days=1 + k)).SerializeToString()
                    for k in range(28)
                ]
                result = measured_load(
                    pid,
                    url,
                    address,
                    RESERVE,
                    requests,
                    args.seconds,
                    args.concurrency,
                    unique_field=APPOINTMENT_ID,
                    token=token,
                )
                result["service_cpu_ms_per_call"] = result["cpu_ms"]["server"]
                out[f"{count} lots"] = result
                print(f"{count} lots: {json.dumps(result)}", flush=True)
                opened.close()
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
