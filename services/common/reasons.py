"""Every reason an error can give: the ``google.rpc.ErrorInfo.reason`` of each reply.

A reason is what a client branches on (AIP-193): a stable UPPER_SNAKE name of the specific
cause, unique within the ``infusion.platform`` domain, never the status code again. The names
are ``Literal`` types so mypy refuses a reason or a rule that is not listed here, and a test
holds this list and the table in docs/api.md ("Error reasons") to each other.

A FAILED_PRECONDITION's reason is the type of its first violated rule (:data:`Rule`); the other
codes have a default derived from the error (services.common.errors) that a raise site replaces
where a more specific name exists.
"""

from __future__ import annotations

from typing import Literal

# FAILED_PRECONDITION: google.rpc.PreconditionFailure violation types, each a rule about state.
SchedulerRule = Literal[
    "APPOINTMENT_STARTED",
    "APPOINTMENT_STATUS",
    "AUTHORISATION_COVERS",
    "AUTHORISED_QUANTITY",
    "CHAIR_ACTIVE",
    "CHAIR_TIME_KNOWN",
    "CHECK_IN_WINDOW",
    "COMPLETE_WINDOW",
    "CONVERSION_FACTOR_KNOWN",
    "CONVERSION_ROUTE",
    "CYCLE_GRAMS_KNOWN",
    "DOSE_BAND",
    "DOSE_POSITIVE",
    "DOSING_WEIGHT_UNDEFINED",
    "HOLD_EXPIRED",
    "HOME_ADMINISTRATION",
    "INDUCTION_DUE",
    "LAST_DOSE_KNOWN",
    "MAX_GRAMS_PER_DAY",
    "MEASUREMENT_ON_OR_BEFORE_DOSING_DATE",
    "NOT_BOOKED_YET",
    "NO_INDUCTION_COURSE",
    "NO_OPEN_BOOKINGS",
    "NO_WHOLE_VIAL_AT_OR_BELOW",
    "OPENING_HOURS",
    "PATIENT_EXISTS",
    "PAYER_CAP",
    "PLAN_ACTIVE",
    "PRODUCT_EXISTS",
    "PROPOSAL_CURRENT",
    "REVIEW_SCHEDULE_ENDED",
    "RAMP_UP_KNOWN",
    "ROUNDING_BAND",
    "SC_PRODUCT_CONFIGURED",
    "SC_SCHEDULE_FITS",
    "SERIES_FITS",
    "SITE_EXISTS",
    "SITE_OPEN",
    "START_WINDOW",
]
InventoryRule = Literal[
    "DISPENSE_WITHIN_RESERVATION",
    "LOT_ACCEPTS_RECEIPTS",
    "LOT_AT_SITE",
    "LOT_IN_DATE",
    "LOT_QUARANTINED",
    "LOT_STATE_TRANSITION",
    "LOT_USABLE",
    "MOVEMENT_REVERSIBLE",
    "PURCHASE_ORDER_LINE_REMAINING",
    "PURCHASE_ORDER_OPEN",
    "RESERVATION_OPEN",
    "STOCK_BALANCE",
    "STOCK_SHORT",
    "VIALS_FREE",
    "VIALS_ON_HAND",
]
Rule = Literal[SchedulerRule, InventoryRule]

# INVALID_ARGUMENT
InvalidReason = Literal["INVALID_FIELDS", "REQUEST_ID_REUSED", "ETAG_REQUIRED"]
# NOT_FOUND and ALREADY_EXISTS: the resource's kind is in metadata ``resource_type``
NotFoundReason = Literal["RESOURCE_NOT_FOUND"]
ExistsReason = Literal[
    "RESOURCE_EXISTS",
    "DUPLICATE_MRN",
    "DUPLICATE_CHAIR_NAME",
    "DUPLICATE_PRODUCT_CODE",
    "APPOINTMENT_RESERVED",
]
# PERMISSION_DENIED raised by a service (the interceptor's own denials carry no reason): a
# caller naming an organisation or site it does not act for where it creates something
DeniedReason = Literal["OUT_OF_SCOPE"]
# ABORTED: re-read (or simply retry with the same request_id) and try again
AbortReason = Literal["STALE_ETAG", "CONCURRENT_UPDATE", "LOST_RACE", "SLOT_TAKEN"]
# UNAVAILABLE: retry later with the same request_id
UnavailableReason = Literal["PEER_UNAVAILABLE", "DATABASE_UNAVAILABLE"]

Reason = Literal[
    Rule, InvalidReason, NotFoundReason, ExistsReason, DeniedReason, AbortReason, UnavailableReason
]
