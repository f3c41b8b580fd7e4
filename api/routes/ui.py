"""The dashboard: plain HTML pages whose scripts read the JSON API with fetch().

The pages hold no data and need no key: their scripts send the key the user typed (kept in the
browser's localStorage) with every API call, so what a page shows is what that key may see.
Charts are uPlot, served from api/static/vendor (no CDN, no build step). None of this is in
the OpenAPI document: it is not part of the API.
"""

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

HERE = Path(__file__).resolve().parent.parent
templates = Jinja2Templates(directory=HERE / "templates")
static_files = StaticFiles(directory=HERE / "static")

router = APIRouter(include_in_schema=False)


@router.get("/")
def root(request: Request) -> RedirectResponse:
    return RedirectResponse(request.url_for("job_list").path)


@router.get("/ui", response_class=HTMLResponse)
def job_list(request: Request) -> HTMLResponse:
    """Jobs with live status and progress, filtered and searched; select some to compare."""
    from models.specs import FAMILY_NAMES

    context = {"page": "list", "families": sorted(FAMILY_NAMES)}
    return templates.TemplateResponse(request, "list.html", context)


@router.get("/ui/new", response_class=HTMLResponse)
def new_job(request: Request) -> HTMLResponse:
    """A job document to submit, with each family's example to start from."""
    return templates.TemplateResponse(request, "new.html", {"page": "new"})


@router.get("/ui/compare", response_class=HTMLResponse)
def compare(request: Request) -> HTMLResponse:
    """Several jobs' learning curves on the same axes (?ids=a,b,c)."""
    return templates.TemplateResponse(request, "compare.html", {"page": "compare"})


@router.get("/ui/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: Annotated[str, PathParam(max_length=64)]) -> HTMLResponse:
    """One job: status, live curves, result, pictures, document."""
    return templates.TemplateResponse(request, "job.html", {"page": "job", "job_id": job_id})


@router.get("/ui/sweeps", response_class=HTMLResponse)
def sweep_list(request: Request) -> HTMLResponse:
    """Sweeps with live status and progress."""
    return templates.TemplateResponse(request, "sweeps.html", {"page": "sweeps"})


@router.get("/ui/sweeps/{sweep_id}", response_class=HTMLResponse)
def sweep_page(
    request: Request, sweep_id: Annotated[str, PathParam(max_length=64)]
) -> HTMLResponse:
    """One sweep: progress, its table (mean ± std and n per cell), its figures, its cells."""
    return templates.TemplateResponse(
        request, "sweep.html", {"page": "sweep", "sweep_id": sweep_id}
    )
