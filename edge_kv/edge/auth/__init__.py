"""Who is calling: the service token of the service APIs and API keys hashed in KV."""

from edge_kv.edge.auth.api_keys import (
    API_KEY_HEADER,
    ApiKeyRecord,
    UnknownApiKey,
    api_key_kv_key,
    api_key_record,
    api_key_subject,
    hash_api_key,
)
from edge_kv.edge.auth.service_token import (
    SERVICE_TOKEN_VAR,
    ServiceApiDisabled,
    ServiceTokenRefused,
    check_service_token,
    require_service_token,
)

__all__ = [
    "API_KEY_HEADER",
    "SERVICE_TOKEN_VAR",
    "ApiKeyRecord",
    "ServiceApiDisabled",
    "ServiceTokenRefused",
    "UnknownApiKey",
    "api_key_kv_key",
    "api_key_record",
    "api_key_subject",
    "check_service_token",
    "hash_api_key",
    "require_service_token",
]
