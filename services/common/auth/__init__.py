"""Authentication and permissions (docs/security.md): who a caller is (a verified bearer
token: verifier.py, claims.py, jwks.py), what each RPC requires (declared in the protos:
policy.py), what each role grants (roles.py, roles.yaml), how the server enforces it
(interceptor.py) and how a service proves who *it* is to its peers (tokens.py).
``service.ServiceAuth`` bundles what one service is built with.
"""
