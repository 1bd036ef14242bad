"""The inventory's use cases, one class per subject, named for it (Stock, Reservations...):
each method loads domain objects through store/, lets them decide, stores the result and the
events they raised, in one transaction."""
