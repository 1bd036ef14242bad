"""Cost reports: protobuf ↔ the cost domain. No rules live here."""

from __future__ import annotations

from infusion.inventory.v1 import inventory_pb2 as pb
from services.common.convert import decimal_str, parse_date, to_money
from services.common.errors import Violations
from services.inventory.domain.cost import CostLine, Grouping
from services.inventory.usecases.costs import CostQuery, CostReport

GROUPING_IN = {
    pb.COST_GROUPING_PRODUCT: Grouping.PRODUCT,
    pb.COST_GROUPING_PATIENT: Grouping.PATIENT,
    pb.COST_GROUPING_APPOINTMENT: Grouping.APPOINTMENT,
}


def line_out(line: CostLine) -> pb.CostLine:
    return pb.CostLine(
        key=line.key,
        dispensed_grams=decimal_str(line.dispensed_grams),
        dispensed_cost=to_money(line.dispensed_cost, line.currency),
        wasted_grams=decimal_str(line.wasted_grams),
        wasted_cost=to_money(line.wasted_cost, line.currency),
    )


def query_in(request: pb.GetCostReportRequest, v: Violations) -> CostQuery:
    start = parse_date(request.start_date, "start_date", v)
    end = parse_date(request.end_date, "end_date", v)
    grouping = GROUPING_IN.get(request.group_by)
    if grouping is None:
        v.add("group_by", "is required: PRODUCT, PATIENT or APPOINTMENT")
    return CostQuery(request.site_id, start, end, grouping)


def report_out(report: CostReport) -> pb.GetCostReportResponse:
    return pb.GetCostReportResponse(
        lines=[line_out(x) for x in report.lines],
        totals=[line_out(x) for x in report.totals],
        valuation=[
            pb.ProductValuation(
                product_id=pv.product_id,
                on_hand_vials=pv.vials,
                on_hand_grams=decimal_str(pv.grams),
                value=to_money(pv.value, pv.currency),
            )
            for pv in report.valuation
        ],
        valuation_totals=[to_money(amount, c) for c, amount in report.valuation_totals.items()],
    )
