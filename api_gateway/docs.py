"""``/docs``: Swagger UI served from the package, so it works without internet access.

FastAPI's default page loads Swagger UI's script and stylesheet from a CDN; these are
the same files (Swagger UI 5, which reads OpenAPI 3.1) from the ``swagger-ui-bundle-v2``
wheel. ReDoc is not offered: one documentation page is enough.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from swagger_ui_bundle import swagger_ui_path

DOCS_PATH = "/docs"
ASSETS = {  # URL under /docs/ -> file of the Swagger UI distribution
    "swagger-ui-bundle.js": "swagger-ui-bundle.js",
    "swagger-ui.css": "swagger-ui.css",
    "favicon.png": "favicon-32x32.png",
}
# No online validator badge (it would fetch from validator.swagger.io).
SWAGGER_UI_PARAMETERS = {"validatorUrl": None}


def install_docs(app: FastAPI) -> None:
    """Add ``/docs`` and its assets to ``app`` (created with ``docs_url=None``)."""
    assert app.openapi_url is not None
    openapi_url = app.openapi_url

    @app.get(DOCS_PATH, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{DOCS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_PATH}/favicon.png",
            oauth2_redirect_url=None,  # bearer tokens only: no OAuth2 flow to come back from
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )

    for url_name, file_name in ASSETS.items():
        app.add_api_route(
            f"{DOCS_PATH}/{url_name}",
            _asset(file_name),
            methods=["GET"],
            include_in_schema=False,
        )


def _asset(file_name: str) -> Callable[[], Awaitable[FileResponse]]:
    path = swagger_ui_path / file_name
    if not path.is_file():  # a bundle without it: fail at startup, not on the first visit
        raise FileNotFoundError(path)

    async def asset() -> FileResponse:
        return FileResponse(path)

    return asset
