"""The dashboard (docs/dashboard.md): server-rendered pages every server serves at ``/``
(for a browser) and under ``/ui/``, built from the cache's state by the same views as the
API, live through one server-sent-events stream per tab.

``views`` (pure view models), ``session`` (pure: sign-in cookie, CSRF), ``common`` (who is
looking, rendering), ``pages`` (GET), ``actions`` (POST), ``live`` (the stream, task logs);
``templates/`` and ``static/`` (one script, one style sheet, no build) are package files.
``theseus.server.app`` includes ``router`` and calls ``install``."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from theseus.server.ui import actions, live, pages

router = APIRouter(include_in_schema=False)
router.include_router(pages.router)
router.include_router(actions.router)
router.include_router(live.router)


def install(app: FastAPI) -> None:
    app.include_router(router)
    pages.install_sign_in_redirect(app)
