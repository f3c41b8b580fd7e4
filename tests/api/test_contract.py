"""A property-based contract test over the OpenAPI document (schemathesis): requests built from
every operation's schema, valid and not, and no answer is a server error."""

import schemathesis
from hypothesis import HealthCheck, settings

from api.main import app
from core.settings import get_settings
from tests.conftest import migrate

migrate(get_settings().database_url)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_server_error(case: schemathesis.Case) -> None:
    response = case.call()
    assert response.status_code < 500, (case.method, case.formatted_path, response.text[:800])
