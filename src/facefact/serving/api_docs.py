"""The API's interactive docs (`/docs`, Swagger UI) served from this machine.

FastAPI's own `/docs` page loads Swagger UI's script and styles from a CDN, so on a machine without
internet it is blank - while every API error hint points there. The `fastapi-swagger` wheel ships
Swagger UI 5 (OpenAPI 3.1, as FastAPI writes); its files are served under `/docs/assets/`.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/docs"
ASSETS = "/docs/assets"


def swagger_ui_files() -> Path:
    """The folder of Swagger UI's bundle, CSS and icon (from the `fastapi-swagger` wheel)."""
    return Path(str(files("fastapi_swagger") / "resources"))


def add_docs_routes(app: FastAPI) -> None:
    """`/docs` with local assets; create the app with `docs_url=None` so FastAPI adds no CDN page."""
    app.mount(ASSETS, StaticFiles(directory=swagger_ui_files()), name="swagger-ui-assets")

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request):
        root = request.scope.get("root_path", "").rstrip("/")  # behind a proxy that strips a prefix
        return get_swagger_ui_html(openapi_url=root + app.openapi_url, title=f"{app.title} - API docs",
                                   swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{root}{ASSETS}/favicon-32x32.png")
