"""Response-guided regimens: the adopted rules of docs/clinical-rules.md#regimen-cycles to
#payer-caps (section 10 of docs/clinical-rules.md), as pure functions.

They turn a patient's outcome series and administration history into proposals (a shorter
interval, a reduction trial, a split over days), convert an IV regimen to a subcutaneous one,
lay out a HyQvia ramp-up, and date outcome reviews, authorisations and payer-cap windows. Nothing
here is applied automatically: each result is a proposal or a check with its rationale, for a
clinician to accept (docs/regimens.md). No gRPC, no SQL; doses and grams are Decimal, dates are
calendar days in the site's time zone.
"""
