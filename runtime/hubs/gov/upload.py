"""Upload: the spreadsheet upload as a page for gov-editors (``/gov/<slug>/upload``).

Choose one of the municipality's datasets and a CSV/XLSX file, see the preview (detected
header, columns, types, decimal marks, warnings), override header row, sheet and decimal
mark, map columns, import, then see rows stored and rejected with reasons.

Parsing, limits and publishing are the ingest service's own (:class:`Uploads` in
``runtime/ingest/push.py``, ``hub.extras["ingest"]``; ``urbanstack serve`` passes the one it
builds): the session's principal is the caller, so the tenant is the session's, never the
form's. Between preview and import the file waits server-side in ``<state_dir>/hub-uploads``
under a random id tied to the session (never in a cookie or a form field); it is deleted
after the import, when the session starts another upload, or after an hour.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import time
from datetime import date
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import HTTPException
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from urbanstack.runtime.ingest.push import Caller, IngestError, MAX_UPLOAD_BYTES, _options, table_mapping
from urbanstack.runtime.web import i18n
from urbanstack.runtime.web.sessions import Session

from .app import GovHub, staff_session

log = logging.getLogger("urbanstack.govhub.upload")
KEEP_SECONDS = 3600
MULTIPART_SLACK = 64 * 1024     # form fields and boundaries around the file
_ID_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class PendingUploads:
    """Files between preview and import: one per session, at most an hour old."""

    def __init__(self, folder: Path):
        self.folder = folder

    def _paths(self, upload_id: str) -> tuple[Path, Path]:
        return self.folder / f"{upload_id}.data", self.folder / f"{upload_id}.json"

    def purge(self) -> None:
        if not self.folder.is_dir():
            return
        cutoff = time.time() - KEEP_SECONDS
        for path in self.folder.iterdir():
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except FileNotFoundError:
                pass

    def keep(self, session: Session, source, meta: dict) -> str:
        """Copies ``source`` (a file object at its start) into the folder; the session's
        earlier upload goes."""
        self.purge()
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        for path in self.folder.glob("*.json"):
            try:
                if json.loads(path.read_text()).get("session") == session.key:
                    self.drop(path.stem)
            except (OSError, ValueError):
                continue
        upload_id = secrets.token_urlsafe(18)
        data, info = self._paths(upload_id)
        fd = os.open(data, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(source, out, 1024 * 1024)
        info.write_text(json.dumps(meta | {"session": session.key, "tenant": session.tenant}))
        return upload_id

    def get(self, session: Session, upload_id: str) -> tuple[Path, dict]:
        """The session's upload; 404 for an unknown, expired or someone else's id."""
        if not upload_id or set(upload_id) - _ID_CHARS or len(upload_id) > 64:
            raise HTTPException(404)
        data, info = self._paths(upload_id)
        try:
            meta = json.loads(info.read_text())
            fresh = time.time() - data.stat().st_mtime < KEEP_SECONDS
        except (OSError, ValueError):
            raise HTTPException(404) from None
        if not fresh or meta.get("session") != session.key or meta.get("tenant") != session.tenant:
            raise HTTPException(404)
        return data, meta

    def drop(self, upload_id: str) -> None:
        for path in self._paths(upload_id):
            path.unlink(missing_ok=True)


def _uploads(hub: GovHub):
    uploads = hub.extras.get("ingest")
    if uploads is None:
        raise HTTPException(503, "The upload is not available in this installation (no ingest service).")
    return uploads


def _caller(session: Session) -> Caller:
    return Caller(tenant=session.tenant, via="gov-hub", subject=session.subject or "")


def _int(value, low: int, high: int) -> int | None:
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if low <= number <= high else None


def _form_options(form) -> dict:
    """Header row, header rows, data start, sheet and decimal mark as the page's form sends them."""
    decimal = str(form.get("decimal") or "")
    return {"header_row": _int(form.get("header_row"), 1, 1_000_000),
            "header_rows": _int(form.get("header_rows"), 1, 20) or 1,
            "data_start_row": _int(form.get("data_start_row"), 1, 10_000_000),
            "sheet": str(form.get("sheet") or "") or None,
            "decimal": decimal if decimal in (",", ".") else ""}


def router(hub: GovHub) -> APIRouter:
    routes = APIRouter(prefix=hub.prefix)
    editor = staff_session(hub, "gov-editor")
    pending = PendingUploads(Path(hub.settings.state_dir) / "hub-uploads")

    async def bounded(request: Request) -> None:
        """Refuses a body over the ingest limit before the form (and its file) is read."""
        if request.method != "POST":
            return
        declared = request.headers.get("content-length")
        if declared is None or not declared.isdigit():
            raise HTTPException(411, "Send the file from the form (the request had no length).")
        limit = getattr(hub.extras.get("ingest"), "max_bytes", MAX_UPLOAD_BYTES)
        if int(declared) > limit + MULTIPART_SLACK:
            translate = i18n.translations(i18n.language(request.query_params.get("lang"))).gettext
            raise HTTPException(413, translate("The file is too large: at most %(mb)s MB can be uploaded at "
                                               "once. Split it into smaller files.") % {"mb": limit // (1024 * 1024)})

    def datasets(session: Session) -> list:
        own = [d for d in hub.engine.datasets(session.principal) if d.owner == session.tenant]
        return sorted(own, key=lambda d: (d.tool, d.name))[:200]

    def render(request: Request, slug: str, session: Session, *, status: int = 200, **context):
        base = {"datasets": datasets(session), "preview": None, "upload_id": "", "meta": {}, "options": {},
                "result": None, "problem": "", "field_errors": {}, "choice": "", "mapping": {}, "messages": []}
        return hub.page(request, "gov/upload.html", status=status, municipality=hub.municipality(slug), slug=slug,
                        **(base | context))

    def problem_of(request: Request, error: IngestError) -> str:
        return error.message

    def preview_page(request: Request, slug: str, session: Session, upload_id: str, meta: dict, options: dict,
                     path: Path, status: int = 200, **extra):
        uploads = _uploads(hub)
        tool, dataset = meta["tool"], meta["dataset"]
        try:
            table_options = _options(options["header_row"], options["header_rows"], options["data_start_row"],
                                     options["sheet"], [options["decimal"]] if options["decimal"] else [])
            with path.open("rb") as handle:
                shown = uploads.preview(_caller(session), tool, dataset, handle, filename=meta.get("filename"),
                                        sheet=options["sheet"], rows=20, options=table_options)
        except IngestError as error:
            return render(request, slug, session, status=error.status, problem=problem_of(request, error),
                          upload_id=upload_id, meta=meta, options=options)
        return render(request, slug, session, status=status, preview=shown, upload_id=upload_id, meta=meta,
                      options=options, **extra)

    @routes.get("/{slug}/upload", response_class=HTMLResponse)
    def page(request: Request, slug: str, session: Session = Depends(editor)):
        return render(request, slug, session)

    @routes.post("/{slug}/upload", response_class=HTMLResponse, dependencies=[Depends(bounded)])
    async def preview(request: Request, slug: str, session: Session = Depends(editor)):
        form = await request.form()
        choice = str(form.get("dataset") or "")
        tool, _, dataset = choice.partition("/")
        mine = {f"{d.tool}/{d.name}" for d in datasets(session)}
        file = form.get("file")
        errors = {}
        if choice not in mine:
            errors["dataset"] = i18n.translations(request.state.lang).gettext("Choose one of your datasets.")
        if file is None or isinstance(file, str) or not file.filename:
            errors["file"] = i18n.translations(request.state.lang).gettext("Choose a CSV or Excel file.")
        if errors:
            return render(request, slug, session, status=422, field_errors=errors, choice=choice)
        limit = getattr(_uploads(hub), "max_bytes", MAX_UPLOAD_BYTES)
        file.file.seek(0, os.SEEK_END)
        size = file.file.tell()
        file.file.seek(0)
        if size > limit:
            raise HTTPException(413, "The file is too large: at most %(mb)s MB can be uploaded at once. Split it "
                                     "into smaller files." % {"mb": limit // (1024 * 1024)})
        meta = {"tool": tool, "dataset": dataset, "filename": Path(file.filename).name[:200]}
        upload_id = await run_in_threadpool(pending.keep, session, file.file, meta)
        options = _form_options(form)
        path, meta = pending.get(session, upload_id)
        return await run_in_threadpool(preview_page, request, slug, session, upload_id, meta, options, path)

    @routes.post("/{slug}/upload/{upload_id}/preview", response_class=HTMLResponse)
    async def again(request: Request, slug: str, upload_id: str, session: Session = Depends(editor)):
        form = await request.form()
        path, meta = pending.get(session, upload_id)
        return await run_in_threadpool(preview_page, request, slug, session, upload_id, meta, _form_options(form),
                                       path)

    @routes.post("/{slug}/upload/{upload_id}/import", response_class=HTMLResponse)
    async def run_import(request: Request, slug: str, upload_id: str, session: Session = Depends(editor)):
        form = await request.form()
        path, meta = pending.get(session, upload_id)
        options = _form_options(form)
        fields = [str(v) for v in form.getlist("field") if str(v).strip()]
        renamed = []
        for column in fields:
            target = str(form.get(f"target:{column}") or "").strip()
            renamed.append(f"{column}={target}" if target and target != column else column)
        sensor_column = str(form.get("sensor_column") or "") or None
        sensor_id = str(form.get("sensor_id") or "").strip() or None
        timestamp_column = str(form.get("timestamp_column") or "") or None
        reference = str(form.get("reference_date") or "").strip()
        sensor_map = [line.strip() for line in str(form.get("sensor_map") or "").splitlines() if line.strip()]
        mapping_form = {"fields": fields, "sensor_column": sensor_column or "", "sensor_id": sensor_id or "",
                        "timestamp_column": timestamp_column or "", "reference_date": reference,
                        "sensor_map": "\n".join(sensor_map)}
        uploads = _uploads(hub)

        def run():
            try:
                reference_date = date.fromisoformat(reference) if reference else None
            except ValueError:
                raise IngestError(422, "invalid_parameter", f"reference date: expected YYYY-MM-DD, got {reference!r}")
            mapping = table_mapping(meta["dataset"], renamed, sensor_column, sensor_id, timestamp_column,
                                    reference_date, "Europe/Berlin", [], sensor_map)
            table_options = _options(options["header_row"], options["header_rows"], options["data_start_row"],
                                     options["sheet"], [options["decimal"]] if options["decimal"] else [])
            with path.open("rb") as handle:
                return uploads.import_file(_caller(session), meta["tool"], meta["dataset"], handle, mapping,
                                           filename=meta.get("filename"), sheet=options["sheet"],
                                           options=table_options)

        try:
            report = await run_in_threadpool(run)
        except IngestError as error:
            if error.status in (422,) and error.code in ("invalid_parameter", "invalid_mapping"):
                return await run_in_threadpool(preview_page, request, slug, session, upload_id, meta, options, path,
                                               error.status, problem=error.message, mapping=mapping_form)
            return render(request, slug, session, status=error.status, problem=error.message, upload_id=upload_id,
                          meta=meta, options=options)
        pending.drop(upload_id)
        log.info("%s imported %s into %s/%s/%s: %d stored, %d rejected", session.subject, meta.get("filename"),
                 slug, meta["tool"], meta["dataset"], report.accepted, report.rejected)
        return render(request, slug, session, result=report, meta=meta)

    return routes
