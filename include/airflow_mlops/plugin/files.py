"""Serve one file from a base folder, never anything outside it.

`safe_file(base, relpath)` takes the `{path:path}` parameter of a route (already percent-decoded
once by the server; it is never decoded again) and refuses, before touching the file system:

- 400: a NUL byte, a backslash, an absolute path, an empty, `.` or `..` segment;
- 404: a hidden segment (`.name`: temp files of atomic writes), a path that resolves outside the
  base (a symlink pointing out), a directory, or a file that does not exist.

`file_response(path)` streams it with an explicit content type (no sniffing, no guessing from the
host's mime database), `X-Content-Type-Options: nosniff`, `Cache-Control: private, no-cache` (files
are rewritten in place and are only for authenticated users) and a Content-Security-Policy: HTML
gets the caller's policy, everything else `default-src 'none'; sandbox`.
"""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath

from fastapi import HTTPException, status
from fastapi.responses import FileResponse

log = logging.getLogger(__name__)

# Self-contained reports: inline <style>/style="", inline SVG and data: images, no script, no
# network, no forms. `sandbox` (no allow-scripts, no allow-same-origin) gives the page an opaque
# origin, so even a script that slipped into a report could not use the Airflow session cookie.
# Links still work (plain navigation); frame-ancestors lets our own UI embed a report.
HTML_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'self'; sandbox allow-popups allow-popups-to-escape-sandbox"
)
OTHER_CSP = "default-src 'none'; sandbox"

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".json": "application/json",
    ".csv": "text/csv; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".log": "text/plain; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
}
DOWNLOAD_TYPE = "application/octet-stream"
MAX_NAME_BYTES = 255  # NAME_MAX of Linux file systems: a longer segment makes every lookup raise ENAMETOOLONG


def _bad_request(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_400_BAD_REQUEST, detail)


def _not_found(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail)


def checked_relpath(relpath: str) -> PurePosixPath:
    """The relative path, or 400 naming the rule it broke (no file-system access)."""
    if "\x00" in relpath:
        raise _bad_request("invalid file path: it contains a NUL byte")
    if "\\" in relpath:
        raise _bad_request("invalid file path: use '/' as separator, backslashes are not allowed")
    if relpath.startswith("/"):
        raise _bad_request("invalid file path: it must be relative, not absolute")
    parts = relpath.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise _bad_request("invalid file path: empty, '.' and '..' segments are not allowed")
    if any(len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES for part in parts):
        raise _bad_request(f"invalid file path: a segment is longer than {MAX_NAME_BYTES} bytes, "
                           "which no file name can be")
    return PurePosixPath(*parts)


def safe_file(base: Path, relpath: str, what: str = "file") -> Path:
    """The regular file `base/relpath`, resolved and proven to be inside `base`; else 400/404.

    `what` names the file in the 404 message, e.g. "validation report" -> "no validation report
    'rides/x/report.html'".
    """
    if not relpath:
        raise _not_found(f"no {what} named: add its path to the URL")
    rel = checked_relpath(relpath)
    if any(part.startswith(".") for part in rel.parts):
        raise _not_found(f"no {what} {relpath!r}: hidden files are not served")
    root = Path(base).resolve()
    target = (root / rel).resolve()
    if not target.is_relative_to(root):
        log.warning("refused %s %r: it resolves to %s, outside %s", what, relpath, target, root)
        raise _not_found(f"no {what} {relpath!r}")
    if not target.is_file():
        raise _not_found(f"no {what} {relpath!r}" + (" (it is a directory)" if target.is_dir() else ""))
    return target


def file_response(path: Path, html_csp: str = HTML_CSP) -> FileResponse:
    """Stream `path` with its content type and the security headers of the module doc."""
    media_type = MEDIA_TYPES.get(path.suffix.lower(), DOWNLOAD_TYPE)
    headers = {
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, no-cache",
        "Content-Security-Policy": html_csp if media_type.startswith("text/html") else OTHER_CSP,
    }
    # Unknown types are offered as a download (Content-Disposition: attachment), never rendered.
    filename = path.name if media_type == DOWNLOAD_TYPE else None
    return FileResponse(path, media_type=media_type, headers=headers, filename=filename)
