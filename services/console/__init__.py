"""The staff console: a web application (Starlette, Jinja2 templates, htmx) that serves the
chair board, the due list with booking, and the pharmacy pages, calling the three services
over gRPC as the signed-in user (docs/console.md). It holds no clinical state: its only state
is the signed session cookie."""
