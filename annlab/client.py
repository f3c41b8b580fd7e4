"""The Python client of annlab's HTTP API: every route is a method of `Client`, named after its
OpenAPI operation id (`create_job`, `read_job`, `predict`, `sample`...).

    from annlab.client import Client

    api = Client()  # ANNLAB_URL (default http://127.0.0.1:8000), ANNLAB_API_KEY
    job = api.create_job({"family": "cnn", "dataset": {"name": "fashion_mnist"}})
    job = api.wait(job["id"])  # a progress bar (tqdm.auto): epoch, loss, ETA
    api.predict(job["id"], inputs=[[[0.0] * 28] * 28])

Hand-written, not generated, because what a generator gives is the wrong shape for both ends:
the job document is an eleven-way discriminated union of nested pydantic models, which a
generator (openapi-python-client) turns into hundreds of classes to regenerate whenever a
family's config changes, while users write jobs as the JSON the README shows; and what a user
needs most is what no generator writes: retries that cannot queue a job twice, `wait` with a
progress bar, paging that follows a cursor, errors that name the field. The cost of writing it
by hand is drift, and a test closes it (tests/annlab/test_client.py): it walks the app's OpenAPI
document and fails when an operation has no method of its name, when a method does not take
one of its operation's path, query, header or body parameters, or when a request the method
sends is refused by its operation's schema.

Conventions. A method that answers JSON returns the API's JSON as it is, a plain dict (`Job`,
`Page`... below are names for the reader, not classes); pictures and checkpoints are `bytes`,
CSV and Prometheus text `str`. Optional arguments left as None are not sent, so the server's
defaults apply. An answer that is not 2xx raises an `APIError` subclass (`ValidationError` for a
422, whose `errors` are the API's `{"field", "message", "type"}` and whose `str()` names each
field); no answer at all raises `Unreachable`, after retries.

Retries (tenacity). A request that never reached the server (no connection) is retried, always.
One that may have reached it (the connection dropped while waiting for the answer) is retried
only when doing it twice is harmless: reads, the model verbs, and POST /jobs, POST /sweeps and
POST /jobs/{id}/rerun, which send an `Idempotency-Key` made once per call and reused by its
retries, so the server answers a retry with what the first attempt created. Cancel and uploads
are not retried after they may have been sent.

This module needs only httpx, tenacity and (for `wait`) tqdm: none of the server's packages.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Literal, TypeAlias, overload
from urllib.parse import quote

import httpx
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})

JSON: TypeAlias = dict[str, Any]
Job: TypeAlias = JSON  # GET /jobs/{id}: id, status, spec, progress, n_params, result, error...
Page: TypeAlias = JSON  # {"items": [...], "total": n, "limit", "offset"} (and "next_cursor")
Sweep: TypeAlias = JSON
Model: TypeAlias = JSON
FileLike: TypeAlias = str | os.PathLike[str] | bytes | IO[bytes]


# --- errors ---------------------------------------------------------------------------------


class AnnlabError(Exception):
    """Anything this client raises about the service."""


class Unreachable(AnnlabError):
    """No answer: the connection failed (after the retries that were safe to make)."""


class APIError(AnnlabError):
    """The API answered with an error status. `detail` is the body's `detail` (a string, or
    the list of field errors); `errors` is that list (`[{"field", "message", "type"}]`, empty
    when the error blames no field)."""

    status_code: int = 0

    def __init__(self, status_code: int, body: Any, headers: Mapping[str, str] | None = None):
        self.status_code = status_code
        self.body = body
        self.headers = dict(headers or {})
        detail = body.get("detail") if isinstance(body, dict) else body
        self.detail: Any = detail
        self.errors: list[dict[str, Any]] = (
            [e for e in detail if isinstance(e, dict)] if isinstance(detail, list) else []
        )
        super().__init__(str(self))

    @property
    def field(self) -> str | None:
        """The first failing field's name, if the error names one."""
        return self.errors[0].get("field") if self.errors else None

    def __str__(self) -> str:
        if self.errors:
            what = "; ".join(f"{e.get('field', '?')}: {e.get('message', '')}" for e in self.errors)
        else:
            what = str(self.detail) if self.detail not in (None, "") else "(no detail)"
        return f"{self.status_code}: {what}"


class BadRequest(APIError):
    status_code = 400


class Unauthorized(APIError):
    """No API key, or an unknown or revoked one (401)."""

    status_code = 401


class Forbidden(APIError):
    status_code = 403


class NotFound(APIError):
    """No such job, sweep, model, plot or picture, or another owner's (404)."""

    status_code = 404


class Conflict(APIError):
    """Not in this state: the job already ended, has no epoch yet, a name is taken (409)."""

    status_code = 409


class PayloadTooLarge(APIError):
    status_code = 413


class ValidationError(APIError):
    """A request the API refused field by field (422); `errors` names each field."""

    status_code = 422


class RateLimited(APIError):
    """Over a quota of the caller's (429); `retry_after` is the seconds the API asks to wait."""

    status_code = 429

    @property
    def retry_after(self) -> float | None:
        try:
            return float(self.headers.get("retry-after", ""))
        except ValueError:
            return None


class ServerError(APIError):
    status_code = 500


class ServiceUnavailable(ServerError):
    status_code = 503


_ERRORS: dict[int, type[APIError]] = {
    cls.status_code: cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        PayloadTooLarge,
        ValidationError,
        RateLimited,
        ServerError,
        ServiceUnavailable,
    )
}


def error_for(response: httpx.Response) -> APIError:
    """The APIError subclass for an error answer, with its JSON body (or text)."""
    try:
        body: Any = response.json()
    except ValueError:
        body = {"detail": response.text.strip() or response.reason_phrase}
    status = response.status_code
    cls = _ERRORS.get(status) or (ServerError if status >= 500 else APIError)
    return cls(status, body, response.headers)


# --- the client -----------------------------------------------------------------------------


def _never_sent(exc: BaseException) -> bool:
    """The request did not reach the server: retrying it cannot do anything twice."""
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


def _transport_failure(exc: BaseException) -> bool:
    return isinstance(exc, httpx.TransportError)


class Client:
    """annlab's API over httpx. `base_url` and `api_key` default to ANNLAB_URL and
    ANNLAB_API_KEY; `timeout` is seconds per request; `retries` is how many times a failed
    connection is tried again. `http` replaces the httpx client (its own base URL and
    timeout apply; a `fastapi.testclient.TestClient` serves the app in process); the key is
    sent with each request, so a given client is used as it is."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        retry_wait: float = 0.5,
        http: httpx.Client | None = None,
    ) -> None:
        self.base_url = (base_url or os.environ.get("ANNLAB_URL") or DEFAULT_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("ANNLAB_API_KEY")
        self.timeout = timeout
        self.retries = retries
        self.retry_wait = retry_wait
        self._owns_http = http is None
        self.http = http or httpx.Client(base_url=self.base_url, timeout=timeout)

    def close(self) -> None:
        if self._owns_http:
            self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.base_url!r})"

    # --- one request ----------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        files: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        repeatable: bool = True,
    ) -> httpx.Response:
        """Send with retries and raise for an error answer. `repeatable`: doing the request
        twice is harmless, so it is retried even after it may have reached the server."""
        all_headers = dict(headers or {})
        if self.api_key:
            all_headers["Authorization"] = f"Bearer {self.api_key}"
        query = {k: v for k, v in (params or {}).items() if v is not None}
        form = {k: v for k, v in (data or {}).items() if v is not None} or None
        retrying = Retrying(
            stop=stop_after_attempt(self.retries + 1),
            wait=wait_exponential(multiplier=self.retry_wait, max=8 * self.retry_wait)
            + wait_random(0, self.retry_wait),
            retry=retry_if_exception(_transport_failure if repeatable else _never_sent),
            reraise=True,
        )
        try:
            response = retrying(
                self.http.request,
                method,
                path,
                params=query,
                json=json,
                files=files,
                data=form,
                headers=all_headers,
            )
        except httpx.TransportError as exc:
            raise Unreachable(
                f"{method} {self.base_url}{path}: {exc or type(exc).__name__}"
            ) from exc
        if response.is_error:
            raise error_for(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    def _verb(self, job_id: str, verb: str, body: Mapping[str, Any]) -> JSON:
        """A model verb: POST /models/{id}/{verb}, fields left as None not sent."""
        payload = {k: v for k, v in body.items() if v is not None}
        return self._json("POST", f"/models/{_segment(job_id)}/{verb}", json=payload)

    # --- jobs -----------------------------------------------------------------------------

    def create_job(self, document: Mapping[str, Any], *, idempotency_key: str | None = None) -> Job:
        """Queue a job (POST /jobs): the job as stored, `status: "queued"`, every default
        filled in. One Idempotency-Key per call (yours, or a new uuid) goes with each retry."""
        key = idempotency_key or str(uuid.uuid4())
        return self._json("POST", "/jobs", json=dict(document), headers={"Idempotency-Key": key})

    def list_jobs(
        self,
        *,
        status: str | None = None,
        family: str | None = None,
        dataset: str | None = None,
        sweep: str | None = None,
        tag: str | None = None,
        q: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
        cursor: str | None = None,
        count: bool | None = None,
    ) -> Page:
        """One page of the caller's jobs, newest first: `{"items", "total", "next_cursor"}`;
        pass a page's `next_cursor` as `cursor` for the next. `total` is counted for a page
        without a cursor, or with `count=True` (null otherwise: counting costs at scale).
        Filters: status, family, dataset name, sweep id, a tag, words (`q`) in id, tags, note."""
        params = {"status": status, "family": family, "dataset": dataset, "sweep": sweep}
        params |= {"tag": tag, "q": q, "limit": limit, "offset": offset}
        return self._json("GET", "/jobs", params={**params, "cursor": cursor, "count": count})

    def iter_jobs(
        self, *, status: str | None = None, family: str | None = None, page_size: int = 100
    ) -> Iterator[Job]:
        """Every job that matches, newest first, page after page by `next_cursor` (jobs
        submitted meanwhile neither shift the pages nor show up twice)."""
        cursor: str | None = None
        while True:
            page = self.list_jobs(
                status=status, family=family, limit=page_size, cursor=cursor, count=False
            )
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor or not page["items"]:
                return

    def update_job(
        self,
        job_id: str,
        *,
        name: str | None = None,
        tags: Sequence[str] | None = None,
        note: str | None = None,
    ) -> Job:
        """Set the job's name, its tags (replacing them) and its note; only those given change."""
        body: dict[str, Any] = {}
        if name is not None:
            body["name"] = name
        if tags is not None:
            body["tags"] = list(tags)
        if note is not None:
            body["note"] = note
        return self._json("PATCH", f"/jobs/{_segment(job_id)}", json=body)

    def read_job(self, job_id: str) -> Job:
        """The job: status, spec, progress (epoch, step, percent, eta_seconds), result..."""
        return self._json("GET", f"/jobs/{_segment(job_id)}")

    def read_metrics(self, job_id: str) -> JSON:
        """`{"history": [{"epoch", "seconds", "attempt", "train_loss", ...}, ...]}`."""
        return self._json("GET", f"/jobs/{_segment(job_id)}/metrics")

    def read_job_plot(
        self, job_id: str, name: str = "learning_curves", *, n: int | None = None
    ) -> bytes:
        """A PNG of the job's record: `learning_curves`, or `samples` (GAN, VAE; `n` per
        epoch)."""
        path = f"/jobs/{_segment(job_id)}/plots/{_segment(name)}.png"
        return self._request("GET", path, params={"n": n}).content

    def rerun_job(self, job_id: str, *, idempotency_key: str | None = None) -> Job:
        """Queue the job's stored document again as a new job (`rerun_of` names this one).
        One Idempotency-Key per call goes with each retry, as for create_job."""
        key = idempotency_key or str(uuid.uuid4())
        return self._json(
            "POST", f"/jobs/{_segment(job_id)}/rerun", headers={"Idempotency-Key": key}
        )

    def cancel_job(self, job_id: str) -> Job:
        """Ask the job to stop: a queued one ends at once, a running one within seconds."""
        return self._json("POST", f"/jobs/{_segment(job_id)}/cancel", repeatable=False)

    def compare_jobs(self, ids: Sequence[str]) -> JSON:
        """Jobs side by side and the result and provenance entries that differ."""
        return self._json("GET", "/jobs/compare", params={"ids": list(ids)})

    def wait(
        self,
        job_id: str,
        *,
        progress: bool = True,
        poll: float = 1.0,
        timeout: float | None = None,
    ) -> Job:
        """Poll the job until it ends (succeeded, failed or cancelled) and return it; with
        `progress`, a tqdm.auto bar (terminal or notebook) shows percent, epoch, step, the
        last epoch's loss, the phase besides training (evaluating, scoring samples...) and
        the API's ETA. `timeout` seconds: raise TimeoutError."""
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = None
        seen_epoch, loss = 0, None
        try:
            while True:
                job = self.read_job(job_id)
                if progress:
                    if bar is None:
                        from tqdm.auto import tqdm

                        bar = tqdm(
                            total=100,
                            desc=f"{job.get('family', 'job')} {job_id[:8]}",
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}{postfix}",
                        )
                    epoch = (job.get("progress") or {}).get("epoch") or 0
                    if epoch != seen_epoch:
                        seen_epoch, loss = epoch, last_loss(self.read_metrics(job_id))
                    bar.n = bar_percent(job)
                    bar.set_postfix_str(describe_progress(job, loss), refresh=False)
                    bar.refresh()
                if job["status"] in TERMINAL:
                    return job
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"job {job_id} is still {job['status']} after {timeout}s")
                time.sleep(poll)
        finally:
            if bar is not None:
                bar.close()

    # --- sweeps ---------------------------------------------------------------------------

    def create_sweep(
        self, document: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> Sweep:
        """Queue a sweep (POST /sweeps): base job, axes, repeats...; idempotent like
        `create_job`."""
        key = idempotency_key or str(uuid.uuid4())
        return self._json("POST", "/sweeps", json=dict(document), headers={"Idempotency-Key": key})

    def list_sweeps(
        self, *, family: str | None = None, limit: int | None = None, offset: int | None = None
    ) -> Page:
        """Newest first; `family`: the sweeps with a cell of that family."""
        params = {"family": family, "limit": limit, "offset": offset}
        return self._json("GET", "/sweeps", params=params)

    def read_sweep(self, sweep_id: str) -> Sweep:
        """Counts by status, cells done, eta_seconds, each cell's jobs."""
        return self._json("GET", f"/sweeps/{_segment(sweep_id)}")

    def cancel_sweep(self, sweep_id: str) -> Sweep:
        return self._json("POST", f"/sweeps/{_segment(sweep_id)}/cancel", repeatable=False)

    @overload
    def read_sweep_table(self, sweep_id: str, format: Literal["json"] = "json") -> JSON: ...

    @overload
    def read_sweep_table(
        self,
        sweep_id: str,
        format: Literal["csv", "markdown", "latex"],
        *,
        precision: int | None = None,
    ) -> str: ...

    def read_sweep_table(
        self, sweep_id: str, format: str = "json", *, precision: int | None = None
    ) -> JSON | str:
        """Mean and std of every figure per cell: `{"columns", "rows"}`, or CSV, Markdown or
        LaTeX text (those two to `precision` significant digits, the best of each column in
        bold)."""
        response = self._request(
            "GET",
            f"/sweeps/{_segment(sweep_id)}/table",
            params={"format": format, "precision": precision},
        )
        return response.json() if format == "json" else response.text

    def read_sweep_report(self, sweep_id: str, *, precision: int | None = None) -> bytes:
        """A zip: the table (CSV, Markdown, LaTeX), the figures (PNG, SVG), the sweep's
        document and every job's provenance."""
        path = f"/sweeps/{_segment(sweep_id)}/report.zip"
        return self._request("GET", path, params={"precision": precision}).content

    def read_sweep_plot(
        self,
        sweep_id: str,
        name: str = "curves",
        *,
        metric: str | None = None,
        axis: str | None = None,
        panel: str | None = None,
        scale: str | None = None,
    ) -> bytes:
        """A PNG: `curves` (a panel per value of `panel`'s axis, a std band per line; `scale`
        auto, linear or log) or `metric` (a figure against `axis`)."""
        path = f"/sweeps/{_segment(sweep_id)}/plots/{_segment(name)}.png"
        params = {"metric": metric, "axis": axis, "panel": panel, "scale": scale}
        return self._request("GET", path, params=params).content

    def wait_sweep(
        self,
        sweep_id: str,
        *,
        progress: bool = True,
        poll: float = 2.0,
        timeout: float | None = None,
    ) -> Sweep:
        """Poll the sweep until every job of it has ended; a bar counts the jobs ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = None
        try:
            while True:
                sweep = self.read_sweep(sweep_id)
                counts = sweep.get("counts", {})
                ended = sum(counts.get(s, 0) for s in TERMINAL)
                if progress:
                    if bar is None:
                        from tqdm.auto import tqdm

                        bar = tqdm(total=sweep["n_jobs"], desc=f"sweep {sweep_id[:8]}", unit="job")
                    bar.n = ended
                    eta = sweep.get("eta_seconds")
                    bar.set_postfix_str(
                        f"{counts.get('running', 0)} running"
                        + (f", eta {_duration(eta)}" if eta is not None else ""),
                        refresh=False,
                    )
                    bar.refresh()
                if sweep["status"] in TERMINAL and ended == sweep["n_jobs"]:
                    return sweep
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"sweep {sweep_id} is still {sweep['status']}")
                time.sleep(poll)
        finally:
            if bar is not None:
                bar.close()

    # --- models ---------------------------------------------------------------------------

    def list_models(
        self, *, family: str | None = None, limit: int | None = None, offset: int | None = None
    ) -> Page:
        """Succeeded jobs and the verbs and pictures their models serve."""
        return self._json(
            "GET", "/models", params={"family": family, "limit": limit, "offset": offset}
        )

    def read_model(self, job_id: str) -> Model:
        return self._json("GET", f"/models/{_segment(job_id)}")

    def download_checkpoint(self, job_id: str) -> bytes:
        """The final weights as safetensors (the job's spec in the header metadata)."""
        return self._request("GET", f"/models/{_segment(job_id)}/checkpoint").content

    def predict(
        self,
        job_id: str,
        inputs: Sequence[Any],
        *,
        raw: bool | None = None,
        attention: bool | None = None,
    ) -> JSON:
        """Labels and probabilities (classifiers) or values; `raw`: inputs in the dataset's
        original scale; `attention` (ViT): attention maps too."""
        return self._verb(job_id, "predict", {"inputs": inputs, "raw": raw, "attention": attention})

    def forecast(self, job_id: str, steps: int, *, history: Sequence[float] | None = None) -> JSON:
        """A recursive forecast of `steps` values (from the end of the test series, or
        after `history`), with the true continuation."""
        return self._verb(job_id, "forecast", {"steps": steps, "history": history})

    def reconstruct(
        self,
        job_id: str,
        inputs: Sequence[Any],
        *,
        raw: bool | None = None,
        mask: Sequence[Any] | None = None,
        steps: int | None = None,
        seed: int | None = None,
    ) -> JSON:
        """Autoencoders, VAE, RBM, DBM; `mask` (RBM, DBM): inpaint where it is 0."""
        body = {"inputs": inputs, "raw": raw, "mask": mask, "steps": steps, "seed": seed}
        return self._verb(job_id, "reconstruct", body)

    def encode(self, job_id: str, inputs: Sequence[Any], *, raw: bool | None = None) -> JSON:
        return self._verb(job_id, "encode", {"inputs": inputs, "raw": raw})

    def decode(
        self,
        job_id: str,
        codes: Sequence[Sequence[float]] | None = None,
        *,
        mean_of: Literal["train", "test"] | None = None,
    ) -> JSON:
        """Images from latent `codes`, or from the mean code of a split (`mean_of`)."""
        return self._verb(job_id, "decode", {"codes": codes, "mean_of": mean_of})

    def sample(
        self,
        job_id: str,
        n: int | None = None,
        *,
        seed: int | None = None,
        steps: int | None = None,
        latents: Sequence[Sequence[float]] | None = None,
    ) -> JSON:
        """New examples: RBM/DBM after `steps` Gibbs steps; GAN/VAE from the prior, or
        these `latents`. The same seed gives the same samples."""
        body = {"n": n, "seed": seed, "steps": steps, "latents": latents}
        return self._verb(job_id, "sample", body)

    def interpolate(
        self,
        job_id: str,
        *,
        start: Sequence[float] | None = None,
        end: Sequence[float] | None = None,
        inputs: Sequence[Any] | None = None,
        steps: int | None = None,
        seed: int | None = None,
        raw: bool | None = None,
    ) -> JSON:
        """GAN, VAE: decoded points on the line from `start` to `end` (or between the codes
        of two `inputs`, VAE)."""
        body = {
            "start": start,
            "end": end,
            "inputs": inputs,
            "steps": steps,
            "seed": seed,
            "raw": raw,
        }
        return self._verb(job_id, "interpolate", body)

    def score(
        self,
        job_id: str,
        inputs: Sequence[Any],
        *,
        raw: bool | None = None,
        seed: int | None = None,
    ) -> JSON:
        """RBM: log pseudo-likelihood and free energy of each input."""
        return self._verb(job_id, "score", {"inputs": inputs, "raw": raw, "seed": seed})

    def recall(
        self,
        job_id: str,
        inputs: Sequence[Any] | None = None,
        *,
        patterns: Sequence[int] | None = None,
        noise: float | None = None,
        seed: int | None = None,
        mode: Literal["async", "sync", "flow"] | None = None,
        max_iterations: int | None = None,
        trajectory: bool | None = None,
        step_size: float | None = None,
    ) -> JSON:
        """Hopfield: run from `inputs` or from stored `patterns` with `noise`."""
        body = {
            "inputs": inputs,
            "patterns": patterns,
            "noise": noise,
            "seed": seed,
            "mode": mode,
            "max_iterations": max_iterations,
            "trajectory": trajectory,
            "step_size": step_size,
        }
        return self._verb(job_id, "recall", body)

    def attractors(
        self,
        job_id: str,
        *,
        mode: Literal["async", "sync", "flow"] | None = None,
        max_iterations: int | None = None,
        seed: int | None = None,
        step_size: float | None = None,
        grid: int | None = None,
        n_random: int | None = None,
    ) -> JSON:
        """Hopfield: every fixed point, its basin, whether it is stored (binary: up to 16
        neurons); continuous (up to 10 neurons): also its stability, from `grid` points per
        axis and `n_random` random starts."""
        body = {
            "mode": mode,
            "max_iterations": max_iterations,
            "seed": seed,
            "step_size": step_size,
            "grid": grid,
            "n_random": n_random,
        }
        return self._verb(job_id, "attractors", body)

    def read_image(
        self,
        job_id: str,
        name: str,
        *,
        n: int | None = None,
        seed: int | None = None,
        steps: int | None = None,
        layer: int | None = None,
    ) -> bytes:
        """A PNG the model's family draws (`read_model(id)["images"]` lists them): samples,
        reconstructions, filters, forecast..."""
        path = f"/models/{_segment(job_id)}/images/{_segment(name)}.png"
        params = {"n": n, "seed": seed, "steps": steps, "layer": layer}
        return self._request("GET", path, params=params).content

    # --- datasets -------------------------------------------------------------------------

    def list_datasets(self) -> JSON:
        """`{"items": [...]}`: built-in datasets (whether here, how to get them), uploads."""
        return self._json("GET", "/datasets")

    def upload_dataset(
        self,
        file: FileLike,
        name: str,
        *,
        kind: Literal["classification", "regression"] | None = None,
        filename: str | None = None,
    ) -> JSON:
        """Upload an `.npz` (arrays X, y) or a one-column `.csv` series; jobs then name it
        `upload:<name>`. `file`: a path, bytes or a binary file; `filename` (its suffix says
        the format) defaults to the path's name."""
        if isinstance(file, str | os.PathLike):
            filename = filename or Path(file).name
            content = Path(file).read_bytes()
        elif isinstance(file, bytes):
            content = file
        else:
            filename = filename or Path(getattr(file, "name", "") or "").name or None
            content = file.read()
        if not filename:
            raise ValueError("upload_dataset needs a filename ending in .npz or .csv")
        return self._json(
            "POST",
            "/datasets",
            files={"file": (filename, content)},
            data={"name": name, "kind": kind},
            repeatable=False,
        )

    # --- tools ----------------------------------------------------------------------------

    def architecture_summary(self, document: Mapping[str, Any]) -> JSON:
        """Shapes, parameters, receptive fields and training memory of a job's model,
        without training it."""
        return self._json("POST", "/architectures/summary", json=dict(document))

    def architecture_forward(
        self,
        input: Sequence[Any],
        layers: Sequence[Mapping[str, Any]],
        *,
        seed: int | None = None,
    ) -> JSON:
        """Every layer's output (float64) for given weights and one input; weights left out
        are drawn from `seed` and returned."""
        body: dict[str, Any] = {"input": list(input), "layers": [dict(layer) for layer in layers]}
        if seed is not None:
            body["seed"] = seed
        return self._json("POST", "/architectures/forward", json=body)

    def optimizer_trace(
        self,
        *,
        optimizer: Mapping[str, Any] | None = None,
        function: str | None = None,
        height: float | None = None,
        x0: float | None = None,
        steps: int | None = None,
    ) -> JSON:
        """An optimizer's state (g, m, v, m_hat, v_hat, x...) per step on a 1-D function."""
        body = _trace_body(optimizer, function, height, x0, steps)
        return self._json("POST", "/optimizers/trace", json=body)

    def optimizer_trace_png(
        self,
        *,
        optimizer: Mapping[str, Any] | None = None,
        function: str | None = None,
        height: float | None = None,
        x0: float | None = None,
        steps: int | None = None,
    ) -> bytes:
        """The same trace drawn: the function and the optimizer's path on it (PNG)."""
        body = _trace_body(optimizer, function, height, x0, steps)
        return self._request("POST", "/optimizers/trace.png", json=body).content

    # --- the service ----------------------------------------------------------------------

    def healthz(self) -> JSON:
        """`{"status", "database", "broker"}`; a degraded service (503) is returned too, not
        raised: the body says which part failed."""
        try:
            return self._json("GET", "/healthz")
        except ServiceUnavailable as exc:
            if isinstance(exc.body, dict) and "status" in exc.body:
                return exc.body
            raise

    def read_metrics_text(self) -> str:
        """GET /metrics: the Prometheus exposition text."""
        return self._request("GET", "/metrics").text


# --- helpers ----------------------------------------------------------------------------------


def _segment(value: str) -> str:
    """A path segment, escaped (an id or a name never changes the route)."""
    return quote(str(value), safe="")


def _trace_body(
    optimizer: Mapping[str, Any] | None,
    function: str | None,
    height: float | None,
    x0: float | None,
    steps: int | None,
) -> JSON:
    body = {
        "optimizer": dict(optimizer) if optimizer is not None else None,
        "function": function,
        "height": height,
        "x0": x0,
        "steps": steps,
    }
    return {k: v for k, v in body.items() if v is not None}


def last_loss(metrics: Mapping[str, Any]) -> float | None:
    """The newest epoch's training loss (`train_loss`, else its first `*loss*` figure)."""
    history = metrics.get("history") or []
    if not history:
        return None
    row = history[-1]
    if isinstance(row.get("train_loss"), int | float):
        return float(row["train_loss"])
    for key, value in row.items():
        if "loss" in key and isinstance(value, int | float):
            return float(value)
    return None


def describe_progress(job: Mapping[str, Any], loss: float | None = None) -> str:
    """`epoch 2/3, step 40/94, loss 0.412, eta 12s` for a running job, or the phase it is in
    besides training (`epoch 3/3, scoring samples 45% (step 360/800), eta 3m00s`); its status
    else."""
    status = job.get("status", "?")
    progress = job.get("progress") or {}
    phase = progress.get("phase")
    if status == "running" and phase == "loading":
        return "loading data"
    if status != "running" or not progress.get("epochs"):
        return status
    if not progress.get("epoch"):
        return "starting"
    parts = [f"epoch {progress['epoch']}/{progress['epochs']}"]
    if phase in (None, "training"):
        if progress.get("steps"):
            parts.append(f"step {progress.get('step') or 0}/{progress['steps']}")
    elif progress.get("phase_steps"):
        parts.append(
            f"{phase} {progress.get('phase_percent') or 0:.0f}% "
            f"(step {progress.get('phase_step') or 0}/{progress['phase_steps']})"
        )
    else:
        parts.append(phase)
    if loss is not None:
        parts.append(f"loss {loss:.4g}")
    if progress.get("eta_seconds") is not None:
        parts.append(f"eta {_duration(progress['eta_seconds'])}")
    return ", ".join(parts)


def bar_percent(job: Mapping[str, Any]) -> float:
    """What a progress bar shows: training's percent, or the phase's own while a phase counted
    in steps (scoring samples) runs after training."""
    progress = job.get("progress") or {}
    if job.get("status") == "running" and progress.get("phase_steps"):
        return min(float(progress.get("phase_percent") or 0), 100.0)
    return min(float(progress.get("percent") or 0), 100.0)


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
