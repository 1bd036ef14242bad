"""InventoryService: every RPC of the proto service, in the proto's order, as one method each.

A method parses the request (the translation modules beside this one), calls one use case and
translates the answer; it holds no rules. Mutations run through the idempotency store, which
opens the write transaction and answers a repeated request_id with the stored response.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import grpc
from sqlalchemy.orm import Session

from infusion.inventory.v1 import inventory_pb2 as pb
from infusion.inventory.v1 import inventory_pb2_grpc as pb_grpc
from services.common.convert import parse_date
from services.common.crud import Mutations, listed, masked, parsed
from services.common.errors import FieldViolation, InvalidArgument, Violations, required
from services.common.idempotency import IdempotencyStore
from services.inventory.api import cost, planning, products, reservations, sites, stock
from services.inventory.domain.catalogue import Product, StoredProduct
from services.inventory.domain.stock import Actor, Lot
from services.inventory.usecases.catalogue import Catalogue
from services.inventory.usecases.costs import Costs
from services.inventory.usecases.outgoing_events import OutgoingEvents
from services.inventory.usecases.planning import Planning
from services.inventory.usecases.purchase_orders import PurchaseOrders
from services.inventory.usecases.reservations import Reservations
from services.inventory.usecases.sites import Sites
from services.inventory.usecases.stock import Stock


class InventoryServicer(pb_grpc.InventoryServiceServicer):
    def __init__(
        self,
        *,
        idempotency: IdempotencyStore,
        catalogue: Catalogue,
        sites: Sites,
        stock: Stock,
        reservations: Reservations,
        planning: Planning,
        orders: PurchaseOrders,
        costs: Costs,
        events: OutgoingEvents,
    ) -> None:
        self._mutate = Mutations(idempotency, "inventory")
        self.catalogue = catalogue
        self.sites = sites
        self.stock = stock
        self.reservations = reservations
        self.planning = planning
        self.orders = orders
        self.costs = costs
        self.events = events

    def _lot_out(self, lot: Lot) -> pb.Lot:
        """A lot as its site sees it: "available" counts only vials in date there today."""
        return stock.lot_out(lot, self.stock.today(lot.site_id))

    # --- products ------------------------------------------------------------------------------

    def CreateProduct(self, request: pb.CreateProductRequest, context: grpc.ServicerContext) -> Any:
        product = parsed(products.product_in, request.product)
        active = True  # a new product is active; UpdateProduct can retire it
        return self._mutate(
            "CreateProduct",
            request,
            pb.CreateProductResponse,
            lambda s: pb.CreateProductResponse(
                product=products.product_out(self.catalogue.create(s, product, active))
            ),
        )

    def GetProduct(self, request: pb.GetProductRequest, context: grpc.ServicerContext) -> Any:
        if not request.id:
            raise InvalidArgument([FieldViolation("id", "is required (a product id or code)")])
        return pb.GetProductResponse(product=products.product_out(self.catalogue.get(request.id)))

    def ListProducts(self, request: pb.ListProductsRequest, context: grpc.ServicerContext) -> Any:
        ig_class = products.reverse(products.IG_CLASS).get(request.ig_class)
        route = products.reverse(products.ROUTE).get(request.route)
        scope = f"products:{request.ig_class}:{request.route}:{request.include_inactive}"
        rows, token = listed(
            request.page_size,
            request.page_token,
            scope=scope,
            fetch=lambda page: self.catalogue.list(ig_class, route, request.include_inactive, page),
            key=lambda p: [p.id],
        )
        return pb.ListProductsResponse(
            products=[products.product_out(p) for p in rows], next_page_token=token
        )

    def UpdateProduct(self, request: pb.UpdateProductRequest, context: grpc.ServicerContext) -> Any:
        if not request.product.id:
            raise InvalidArgument([FieldViolation("product.id", "is required")])

        def change(current: StoredProduct) -> tuple[Product, bool]:
            return masked(
                products.product_out(current),
                request.product,
                request.update_mask,
                products.MUTABLE,
                prefix="product",
                translate=lambda merged, v: (products.product_in(merged, v), merged.active),
            )

        return self._mutate(
            "UpdateProduct",
            request,
            pb.UpdateProductResponse,
            lambda s: pb.UpdateProductResponse(
                product=products.product_out(
                    self.catalogue.update(s, request.product.id, request.product.etag, change)
                )
            ),
        )

    # --- lots and the ledger -------------------------------------------------------------------

    def ReceiveStock(self, request: pb.ReceiveStockRequest, context: grpc.ServicerContext) -> Any:
        typed, scan = stock.receipt_in(request)
        receipt = self.stock.resolve_scan(typed, scan)
        actor = Actor(request.actor, "", request.request_id)

        def receive(session: Session) -> pb.ReceiveStockResponse:
            lot, movement = self.stock.receive(session, receipt, actor)
            return pb.ReceiveStockResponse(
                lot=self._lot_out(lot), movement=stock.movement_out(movement)
            )

        return self._mutate("ReceiveStock", request, pb.ReceiveStockResponse, receive)

    def GetLot(self, request: pb.GetLotRequest, context: grpc.ServicerContext) -> Any:
        lot = self.stock.get_lot(required(request.id, "id"))
        return pb.GetLotResponse(lot=self._lot_out(lot))

    def ListLots(self, request: pb.ListLotsRequest, context: grpc.ServicerContext) -> Any:
        state = stock.LOT_STATE_IN.get(request.state)
        scope = f"lots:{request.site_id}:{request.product_id}:{request.state}:{request.lot_number}"
        rows, token = listed(
            request.page_size,
            request.page_token,
            scope=scope,
            fetch=lambda page: self.stock.list_lots(
                request.site_id, request.product_id, state, request.lot_number, page
            ),
            key=lambda lot: [lot.expiry_date.isoformat(), lot.id],
        )
        return pb.ListLotsResponse(lots=[self._lot_out(r) for r in rows], next_page_token=token)

    def QuarantineLot(self, request: pb.QuarantineLotRequest, context: grpc.ServicerContext) -> Any:
        lot_id = required(request.lot_id, "lot_id")
        actor = Actor(request.actor, required(request.reason, "reason"), request.request_id)
        return self._mutate(
            "QuarantineLot",
            request,
            pb.QuarantineLotResponse,
            lambda s: pb.QuarantineLotResponse(
                lot=self._lot_out(self.stock.quarantine(s, lot_id, actor))
            ),
        )

    def ReleaseLot(self, request: pb.ReleaseLotRequest, context: grpc.ServicerContext) -> Any:
        lot_id = required(request.lot_id, "lot_id")
        actor = Actor(request.actor, required(request.reason, "reason"), request.request_id)
        return self._mutate(
            "ReleaseLot",
            request,
            pb.ReleaseLotResponse,
            lambda s: pb.ReleaseLotResponse(
                lot=self._lot_out(self.stock.release(s, lot_id, actor))
            ),
        )

    def RecordCount(self, request: pb.RecordCountRequest, context: grpc.ServicerContext) -> Any:
        lot_id = required(request.lot_id, "lot_id")
        actor = Actor(request.actor, request.reason, request.request_id)

        def count(session: Session) -> pb.RecordCountResponse:
            lot, movement = self.stock.record_count(session, lot_id, request.counted_vials, actor)
            reply = pb.RecordCountResponse(lot=self._lot_out(lot))
            if movement is not None:
                reply.movement.CopyFrom(stock.movement_out(movement))
            return reply

        return self._mutate("RecordCount", request, pb.RecordCountResponse, count)

    def ReverseMovement(
        self, request: pb.ReverseMovementRequest, context: grpc.ServicerContext
    ) -> Any:
        movement_id = required(request.movement_id, "movement_id")
        actor = Actor(request.actor, required(request.reason, "reason"), request.request_id)

        def reverse(session: Session) -> pb.ReverseMovementResponse:
            reversal, lot = self.stock.reverse(session, movement_id, actor)
            return pb.ReverseMovementResponse(
                reversal=stock.movement_out(reversal), lot=self._lot_out(lot)
            )

        return self._mutate("ReverseMovement", request, pb.ReverseMovementResponse, reverse)

    def ListMovements(self, request: pb.ListMovementsRequest, context: grpc.ServicerContext) -> Any:
        if not request.lot_id and not request.site_id:
            raise InvalidArgument([FieldViolation("lot_id", "give a lot_id or a site_id")])
        scope = f"movements:{request.lot_id}:{request.site_id}"
        rows, token = listed(
            request.page_size,
            request.page_token,
            scope=scope,
            fetch=lambda page: self.stock.list_movements(request.lot_id, request.site_id, page),
            key=lambda pair: [str(pair[0].seq)],
        )
        return pb.ListMovementsResponse(
            movements=[stock.movement_out(m, by) for m, by in rows], next_page_token=token
        )

    def GetStockLevels(
        self, request: pb.GetStockLevelsRequest, context: grpc.ServicerContext
    ) -> Any:
        v = Violations()
        site_id = request.site_id
        if not site_id:
            v.add("site_id", "is required")
        as_of = parse_date(request.as_of, "as_of", v, required=False)
        v.raise_if_any()
        levels, lots = self.stock.stock_levels(site_id, request.product_id, as_of)
        return stock.levels_out(levels, lots, as_of or self.stock.today(site_id))

    def ReconcileStock(
        self, request: pb.ReconcileStockRequest, context: grpc.ServicerContext
    ) -> Any:
        return stock.reconciliation_out(self.stock.reconcile(request.site_id))

    # --- stock sites and storage units ---------------------------------------------------------

    def CreateStockSite(
        self, request: pb.CreateStockSiteRequest, context: grpc.ServicerContext
    ) -> Any:
        site = sites.site_in(request.site)
        return self._mutate(
            "CreateStockSite",
            request,
            pb.CreateStockSiteResponse,
            lambda s: pb.CreateStockSiteResponse(site=sites.site_out(*self.sites.create(s, site))),
        )

    def GetStockSite(self, request: pb.GetStockSiteRequest, context: grpc.ServicerContext) -> Any:
        site = self.sites.get(request.id)
        return pb.GetStockSiteResponse(site=sites.site_out(site, self.sites.created_at(site.id)))

    def ListStockSites(
        self, request: pb.ListStockSitesRequest, context: grpc.ServicerContext
    ) -> Any:
        rows, token = listed(
            request.page_size,
            request.page_token,
            scope="stock-sites",
            fetch=self.sites.list_sites,
            key=lambda pair: [pair[0].id],
        )
        return pb.ListStockSitesResponse(
            sites=[sites.site_out(site, created) for site, created in rows], next_page_token=token
        )

    def CreateStorageUnit(
        self, request: pb.CreateStorageUnitRequest, context: grpc.ServicerContext
    ) -> Any:
        unit = sites.unit_in(request.storage_unit)
        return self._mutate(
            "CreateStorageUnit",
            request,
            pb.CreateStorageUnitResponse,
            lambda s: pb.CreateStorageUnitResponse(
                storage_unit=sites.unit_out(*self.sites.create_unit(s, unit))
            ),
        )

    def ListStorageUnits(
        self, request: pb.ListStorageUnitsRequest, context: grpc.ServicerContext
    ) -> Any:
        if not request.site_id:
            raise InvalidArgument([FieldViolation("site_id", "is required")])
        return pb.ListStorageUnitsResponse(
            storage_units=[sites.unit_out(u, c) for u, c in self.sites.units(request.site_id)]
        )

    # --- reservations and dispensing -----------------------------------------------------------

    def ReserveStock(self, request: pb.ReserveStockRequest, context: grpc.ServicerContext) -> Any:
        asked = reservations.reserve_in(request)
        reservation = self.reservations.reserve(
            asked, Actor(request.actor, "", request.appointment_id)
        )
        return pb.ReserveStockResponse(reservation=reservations.reservation_out(reservation))

    def AmendReservation(
        self, request: pb.AmendReservationRequest, context: grpc.ServicerContext
    ) -> Any:
        reservation_id, grams, needed_on = reservations.amend_in(request)
        actor = Actor(request.actor, "", request.request_id)
        return self._mutate(
            "AmendReservation",
            request,
            pb.AmendReservationResponse,
            lambda s: pb.AmendReservationResponse(
                reservation=reservations.reservation_out(
                    self.reservations.amend(
                        s, reservation_id, grams, needed_on, request.etag, actor
                    )
                )
            ),
            key_last=True,  # its effects are its transaction's; the key rides in its write
        )

    def ReleaseReservation(
        self, request: pb.ReleaseReservationRequest, context: grpc.ServicerContext
    ) -> Any:
        reservation_id = required(request.reservation_id, "reservation_id")
        actor = Actor(request.actor, request.reason, request.request_id)
        return self._mutate(
            "ReleaseReservation",
            request,
            pb.ReleaseReservationResponse,
            lambda s: pb.ReleaseReservationResponse(
                reservation=reservations.reservation_out(
                    self.reservations.release(s, reservation_id, actor)
                )
            ),
        )

    def GetReservation(
        self, request: pb.GetReservationRequest, context: grpc.ServicerContext
    ) -> Any:
        if not request.id and not request.appointment_id:
            raise InvalidArgument([FieldViolation("id", "give an id or an appointment_id")])
        reservation = self.reservations.get(request.id, request.appointment_id)
        return pb.GetReservationResponse(reservation=reservations.reservation_out(reservation))

    def ListReservations(
        self, request: pb.ListReservationsRequest, context: grpc.ServicerContext
    ) -> Any:
        v = Violations()
        start = parse_date(request.needed_from, "needed_from", v, required=False)
        end = parse_date(request.needed_to, "needed_to", v, required=False)
        if start and end and start > end:
            v.add("needed_to", "is before needed_from")
        v.raise_if_any()
        scope = (
            f"reservations:{request.site_id}:{request.product_id}:{request.patient_id}:"
            f"{request.state}:{start}:{end}"
        )
        rows, token = listed(
            request.page_size,
            request.page_token,
            scope=scope,
            fetch=lambda page: self.reservations.list_reservations(
                request.site_id,
                request.product_id,
                request.patient_id,
                reservations.STATE_IN.get(request.state),
                start,
                end,
                page,
            ),
            key=lambda r: [r.needed_on.isoformat(), r.id],
        )
        return pb.ListReservationsResponse(
            reservations=[reservations.reservation_out(r) for r in rows], next_page_token=token
        )

    def DispenseReservation(
        self, request: pb.DispenseReservationRequest, context: grpc.ServicerContext
    ) -> Any:
        asked, scans = reservations.dispense_in(request)
        actor = Actor(request.actor, "", request.request_id)

        def dispense(session: Session) -> pb.DispenseReservationResponse:
            lines = list(asked.lines)
            for scan in scans:
                lot_id = self.reservations.lot_for_scan(
                    session, asked.reservation_id, scan.gtin, scan.lot_number, f"vials[{scan.line}]"
                )
                lines[scan.line] = (lot_id, lines[scan.line][1])
            done = self.reservations.dispense(
                session, dataclasses.replace(asked, lines=lines), actor
            )
            return pb.DispenseReservationResponse(
                reservation=reservations.reservation_out(done.reservation),
                movements=[stock.movement_out(m) for m in done.movements],
                administrations=[reservations.administration_out(a) for a in done.administrations],
            )

        return self._mutate(
            "DispenseReservation",
            request,
            pb.DispenseReservationResponse,
            dispense,
            key_last=True,  # its effects are its transaction's; the key rides in its write
        )

    def RecordWaste(self, request: pb.RecordWasteRequest, context: grpc.ServicerContext) -> Any:
        reason = reservations.waste_reason_in(request)
        actor = Actor(request.actor, request.note, request.request_id)

        def waste(session: Session) -> pb.RecordWasteResponse:
            lot, movement, moved = self.reservations.record_waste(
                session, request.lot_id, request.vials, reason, actor
            )
            return pb.RecordWasteResponse(
                lot=self._lot_out(lot),
                movement=stock.movement_out(movement),
                reallocated=[reservations.reservation_out(r) for r in moved],
            )

        return self._mutate("RecordWaste", request, pb.RecordWasteResponse, waste)

    def TransferStock(self, request: pb.TransferStockRequest, context: grpc.ServicerContext) -> Any:
        lot_id = required(request.lot_id, "lot_id")
        actor = Actor(request.actor, request.reason, request.request_id)

        def transfer(session: Session) -> pb.TransferStockResponse:
            source, target, moves = self.reservations.transfer(
                session,
                lot_id,
                request.to_site_id,
                request.to_storage_unit_id,
                request.vials,
                actor,
            )
            return pb.TransferStockResponse(
                from_lot=self._lot_out(source),
                to_lot=self._lot_out(target),
                movements=[stock.movement_out(m) for m in moves],
            )

        return self._mutate("TransferStock", request, pb.TransferStockResponse, transfer)

    def ReturnToSupplier(
        self, request: pb.ReturnToSupplierRequest, context: grpc.ServicerContext
    ) -> Any:
        v = Violations()
        lot_id = v.require(request.lot_id, "lot_id")
        v.require(request.reason, "reason")
        v.raise_if_any()
        actor = Actor(request.actor, request.reason, request.request_id)

        def give_back(session: Session) -> pb.ReturnToSupplierResponse:
            lot, movement = self.reservations.return_to_supplier(
                session, lot_id, request.vials, actor
            )
            return pb.ReturnToSupplierResponse(
                lot=self._lot_out(lot), movement=stock.movement_out(movement)
            )

        return self._mutate("ReturnToSupplier", request, pb.ReturnToSupplierResponse, give_back)

    def RecallLot(self, request: pb.RecallLotRequest, context: grpc.ServicerContext) -> Any:
        actor = Actor(request.actor, request.reason, request.request_id)

        def recall(session: Session) -> pb.RecallLotResponse:
            lots, repaired, count = self.reservations.recall(
                session, request.product_id, request.lot_number, actor
            )
            moved, risky = reservations.repaired_out(repaired)
            return pb.RecallLotResponse(
                lots=[self._lot_out(lot) for lot in lots],
                reallocated=moved,
                at_risk=risky,
                recipients=count,
            )

        return self._mutate("RecallLot", request, pb.RecallLotResponse, recall)

    def ListLotRecipients(
        self, request: pb.ListLotRecipientsRequest, context: grpc.ServicerContext
    ) -> Any:
        v = Violations()
        v.require(request.product_id, "product_id")
        v.require(request.lot_number, "lot_number")
        v.raise_if_any()
        scope = f"recipients:{request.product_id}:{request.lot_number}"
        rows, token = listed(
            request.page_size,
            request.page_token,
            scope=scope,
            fetch=lambda page: self.reservations.recipients(
                request.product_id, request.lot_number, page
            ),
            key=lambda a: [a.id],
        )
        return pb.ListLotRecipientsResponse(
            administrations=[reservations.administration_out(a) for a in rows],
            next_page_token=token,
        )

    def RunExpiryCheck(
        self, request: pb.RunExpiryCheckRequest, context: grpc.ServicerContext
    ) -> Any:
        v = Violations()
        v.require(request.site_id, "site_id")
        as_of = parse_date(request.as_of, "as_of", v, required=False)
        v.raise_if_any()
        expired, repaired, warnings = self.reservations.expiry_check(request.site_id, as_of)
        moved, risky = reservations.repaired_out(repaired)
        return pb.RunExpiryCheckResponse(
            expired=[self._lot_out(lot) for lot in expired],
            reallocated=moved,
            at_risk=risky,
            warnings=[
                pb.LotExpiryWarning(lot=self._lot_out(lot), days_left=left, threshold_days=band)
                for lot, left, band in warnings
            ],
        )

    # --- costs ---------------------------------------------------------------------------------

    def GetCostReport(self, request: pb.GetCostReportRequest, context: grpc.ServicerContext) -> Any:
        v = Violations()
        query = cost.query_in(request, v)
        return cost.report_out(self.costs.report(query, v))

    # --- forecasting, reorder policies, purchase orders ----------------------------------------

    def UpsertDemandForecast(
        self, request: pb.UpsertDemandForecastRequest, context: grpc.ServicerContext
    ) -> Any:
        parsed = Violations()
        entries = planning.demand_in(request, parsed)
        return self._mutate(
            "UpsertDemandForecast",
            request,
            pb.UpsertDemandForecastResponse,
            lambda s: pb.UpsertDemandForecastResponse(
                upserted=self.planning.upsert_demand(s, entries, Violations(list(parsed.items)))
            ),
        )

    def GetStockForecast(
        self, request: pb.GetStockForecastRequest, context: grpc.ServicerContext
    ) -> Any:
        v = Violations()
        start = parse_date(request.start_date, "start_date", v, required=False)
        v.raise_if_any()
        return planning.forecast_out(
            self.planning.stock_forecast(
                request.site_id, request.product_id, start, request.horizon_days
            )
        )

    def SetReorderPolicy(
        self, request: pb.SetReorderPolicyRequest, context: grpc.ServicerContext
    ) -> Any:
        parsed = Violations()
        policy = planning.policy_in(request.policy, parsed)
        p = request.policy
        return self._mutate(
            "SetReorderPolicy",
            request,
            pb.SetReorderPolicyResponse,
            lambda s: pb.SetReorderPolicyResponse(
                policy=planning.policy_out(
                    self.planning.set_policy(
                        s, p.site_id, p.product_id, policy, p.etag, Violations(list(parsed.items))
                    )
                )
            ),
        )

    def GetReorderPolicy(
        self, request: pb.GetReorderPolicyRequest, context: grpc.ServicerContext
    ) -> Any:
        stored = self.planning.get_policy(request.site_id, request.product_id)
        return pb.GetReorderPolicyResponse(policy=planning.policy_out(stored))

    def ListReorderSuggestions(
        self, request: pb.ListReorderSuggestionsRequest, context: grpc.ServicerContext
    ) -> Any:
        v = Violations()
        as_of = parse_date(request.as_of, "as_of", v, required=False)
        v.raise_if_any()
        found = self.planning.current_suggestions(request.site_id, as_of)
        return pb.ListReorderSuggestionsResponse(
            suggestions=[planning.suggestion_out(x) for x in found]
        )

    def CreatePurchaseOrder(
        self, request: pb.CreatePurchaseOrderRequest, context: grpc.ServicerContext
    ) -> Any:
        parsed = Violations()
        draft = planning.draft_in(request.purchase_order, parsed)
        return self._mutate(
            "CreatePurchaseOrder",
            request,
            pb.CreatePurchaseOrderResponse,
            lambda s: pb.CreatePurchaseOrderResponse(
                purchase_order=planning.order_out(
                    self.orders.create(s, draft, Violations(list(parsed.items)))
                )
            ),
        )

    def GetPurchaseOrder(
        self, request: pb.GetPurchaseOrderRequest, context: grpc.ServicerContext
    ) -> Any:
        order = self.orders.get(required(request.id, "id"))
        return pb.GetPurchaseOrderResponse(purchase_order=planning.order_out(order))

    def ListPurchaseOrders(
        self, request: pb.ListPurchaseOrdersRequest, context: grpc.ServicerContext
    ) -> Any:
        state = planning.ORDER_STATE_IN.get(request.state)
        scope = f"purchase-orders:{request.site_id}:{request.state}"
        rows, token = listed(
            request.page_size,
            request.page_token,
            scope=scope,
            fetch=lambda page: self.orders.list_orders(request.site_id, state, page),
            key=lambda order: [order.id],
        )
        return pb.ListPurchaseOrdersResponse(
            purchase_orders=[planning.order_out(x) for x in rows], next_page_token=token
        )

    def ReceivePurchaseOrder(
        self, request: pb.ReceivePurchaseOrderRequest, context: grpc.ServicerContext
    ) -> Any:
        order_id = required(request.purchase_order_id, "purchase_order_id")
        deliveries = planning.deliveries_in(request)
        actor = Actor(request.actor, f"purchase order {order_id}", request.request_id)

        def receive(session: Session) -> pb.ReceivePurchaseOrderResponse:
            order, lots = self.orders.receive(session, order_id, deliveries, actor)
            today = self.stock.today(order.site_id)
            return pb.ReceivePurchaseOrderResponse(
                purchase_order=planning.order_out(order),
                lots=[stock.lot_out(x, today) for x in lots],
            )

        return self._mutate(
            "ReceivePurchaseOrder", request, pb.ReceivePurchaseOrderResponse, receive
        )

    def CancelPurchaseOrder(
        self, request: pb.CancelPurchaseOrderRequest, context: grpc.ServicerContext
    ) -> Any:
        order_id = required(request.id, "id")
        reason = required(request.reason.strip(), "reason")
        return self._mutate(
            "CancelPurchaseOrder",
            request,
            pb.CancelPurchaseOrderResponse,
            lambda s: pb.CancelPurchaseOrderResponse(
                purchase_order=planning.order_out(
                    self.orders.cancel(s, order_id, reason, request.etag)
                )
            ),
        )

    # --- the outbox ----------------------------------------------------------------------------

    def ListOutgoingEvents(
        self, request: pb.ListOutgoingEventsRequest, context: grpc.ServicerContext
    ) -> Any:
        if request.page_size < 0 or request.after_sequence < 0:
            raise InvalidArgument(
                [FieldViolation("page_size", "page_size and after_sequence must not be negative")]
            )
        size = min(request.page_size or 100, 1000)
        events = self.events.after(request.after_sequence, request.topic, size)
        return pb.ListOutgoingEventsResponse(events=[sites.event_out(e) for e in events])
