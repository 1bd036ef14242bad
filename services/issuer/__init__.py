"""A development token issuer: ``make run`` starts it, ``make token`` asks it for tokens.

It signs the same kind of tokens a real OpenID Connect provider (Keycloak, ...) issues to the
services (docs/security.md), publishes its keys and discovery document over HTTP, and grants
the services' client credentials. It is for development and tests only: its keys live in plain
files under var/issuer/.
"""
