"""Development tools that drive the services from outside, through their gRPC APIs as a client
would: `make run` (run.py, with the demo centre of centre.py), `make demo` (walkthrough.py) and
the builder (builder.py) the demo, the benchmarks and the tests make sites, patients and plans
with. Nothing in services/ imports this package, and the image does not ship it."""
