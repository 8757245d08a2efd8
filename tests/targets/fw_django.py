"""Django ASGI (no lifespan support of its own), configured in-process, no database of its own."""

from __future__ import annotations

import django  # type: ignore[import-untyped]
from django.conf import settings  # type: ignore[import-untyped]

settings.configure(
    DEBUG=False,
    SECRET_KEY="frameworks-test-only",  # a throwaway key: the test app signs nothing
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=[],
    MIDDLEWARE=[],
    DATABASES={},
)
django.setup()

from django.core.asgi import get_asgi_application  # type: ignore[import-untyped]  # noqa: E402
from django.http import HttpRequest, JsonResponse  # type: ignore[import-untyped]  # noqa: E402
from django.urls import path  # type: ignore[import-untyped]  # noqa: E402
from fw_common import startup, version_of  # noqa: E402

from smd.asgi import phase_value, smd_lifespan, with_lifespan  # noqa: E402
from smd.phases import Database  # noqa: E402


async def version(request: HttpRequest) -> JsonResponse:
    db = phase_value(request, "database", Database, default=None)
    scope_state = getattr(request, "scope", {}).get("state", {})
    status, body = await version_of(db, isinstance(scope_state.get("database"), Database))
    return JsonResponse(body, status=status)


urlpatterns = [path("version", version)]

app = with_lifespan(get_asgi_application(), lifespan=smd_lifespan(startup, configure_logging=True))
