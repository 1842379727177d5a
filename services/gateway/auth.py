"""Who is calling: a merchant by API key, or an operator by the admin key."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from schemas.merchants import MerchantProfile
from services.gateway.domain import hash_api_key
from services.gateway.intake import Merchant
from services.gateway.problems import ApiProblem

bearer = HTTPBearer(auto_error=False, description="Merchant API key or admin key")


def _credentials(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or not credentials.credentials:
        raise ApiProblem(
            401,
            "authentication_required",
            "Authentication required",
            "Send 'Authorization: Bearer <API key>'.",
        )
    return credentials.credentials


async def authenticated_merchant(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Merchant:
    secret = _credentials(credentials)
    row = await request.app.state.context.pool.fetchrow(
        "SELECT m.merchant_id, m.profile FROM api_keys k JOIN merchants m USING (merchant_id)"
        " WHERE k.secret_hash = $1 AND (k.revoked_at IS NULL OR k.revoked_at > now())",
        hash_api_key(secret),
    )
    if row is None:
        raise ApiProblem(401, "invalid_api_key", "Invalid API key", "The API key is not valid.")
    merchant = Merchant.of(row["merchant_id"], MerchantProfile.model_validate(row["profile"]))
    if not merchant.active:
        raise ApiProblem(
            403, "merchant_suspended", "Merchant suspended", "The merchant is suspended."
        )
    return merchant


async def require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    secret = _credentials(credentials)
    admin_key = request.app.state.gateway_settings.admin_key
    if admin_key is None or not hmac.compare_digest(
        secret.encode(), admin_key.get_secret_value().encode()
    ):
        raise ApiProblem(
            403, "admin_key_required", "Admin key required", "This needs the admin key."
        )


MerchantDependency = Annotated[Merchant, Depends(authenticated_merchant)]
AdminDependency = Depends(require_admin)
