import pytest

# The harness asserts (a service reached SERVING, serves mutual TLS): rewritten, so a failure
# shows what was compared, as in the tests themselves.
pytest.register_assert_rewrite("tests.e2e.harness", "tests.e2e.pg_cluster")
