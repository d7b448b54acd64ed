"""Read a multipart upload into memory, streaming, with every size checked as bytes arrive.

No temporary files (nothing to clean up, nothing a client can name on disk): each file is capped
at ``max_file_bytes`` and the whole body at what ``max_files`` such files can need, so a 2 GB
upload is refused from its Content-Length before a byte is read, or after at most the cap when it
is sent without one. Client file names are only echoed back, reduced to a bare, printable name.
"""

from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from cardamage.serve.errors import ApiError

log = logging.getLogger(__name__)
#: python-multipart logs its parse error as a bare warning before raising it; the refusal is
#: logged here instead, saying which request it was.
logging.getLogger("python_multipart.multipart").setLevel(logging.ERROR)

FILES_FIELD = "files"
CLAIM_FIELD = "claim"  # POST /v1/claims: the claim's id
#: Form fields read besides the files; others are skipped.
KNOWN_FIELDS = frozenset({"explain", CLAIM_FIELD})
MAX_FIELD_BYTES = 1024
#: Multipart framing per part (boundary and headers) plus room for the small fields.
PART_OVERHEAD_BYTES = 16 * 1024
FIELDS_ALLOWANCE_BYTES = 64 * 1024
MAX_FILENAME_CHARS = 200
MAX_NAMED_FIELDS = 8  # skipped fields remembered for the 'missing files' message


@dataclass(frozen=True)
class Upload:
    filename: str
    data: bytes


@dataclass(frozen=True)
class UploadLimits:
    max_file_bytes: int
    max_files: int

    @property
    def max_body_bytes(self) -> int:
        return self.max_files * (self.max_file_bytes + PART_OVERHEAD_BYTES) + FIELDS_ALLOWANCE_BYTES


@dataclass
class Form:
    files: list[Upload] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)
    other_names: set[str] = field(default_factory=set)  # parts skipped: named in error messages


async def read_form(request: Request, limits: UploadLimits) -> Form:
    """The request's files and known fields; ApiError (4xx) for anything out of bounds."""
    boundary = _boundary(request.headers.get("content-type"))
    _check_declared_length(request.headers.get("content-length"), limits)
    reader = _PartReader(limits)
    parser = MultipartParser(boundary, reader.callbacks())
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limits.max_body_bytes:
                raise _body_too_large(limits)
            parser.write(chunk)
        parser.finalize()
    except FormParserError as e:
        error = ApiError(400, "bad_multipart", f"malformed multipart body: {e}")
        client = f"{request.client.host}:{request.client.port}" if request.client else "a client"
        log.warning(
            "%s %s from %s refused (400 %s): %s",
            request.method,
            request.url.path,
            client,
            error.code,
            error.message,
        )
        raise error from None
    except ClientDisconnect:
        raise ApiError(400, "client_disconnected", "the client went away mid-upload") from None
    if not reader.complete:
        raise ApiError(400, "bad_multipart", "incomplete multipart body (no closing boundary)")
    return _with_files(reader.form)


def _boundary(content_type: str | None) -> bytes:
    if not content_type:
        raise _missing_files(set())
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send multipart/form-data with images in the field '{FILES_FIELD}', "
            f"not {kind.decode('latin-1') or 'an unnamed type'}",
        )
    if not params.get(b"boundary"):
        raise ApiError(400, "bad_multipart", "multipart/form-data without a boundary")
    return params[b"boundary"]


def _check_declared_length(content_length: str | None, limits: UploadLimits) -> None:
    if content_length and content_length.isdigit() and int(content_length) > limits.max_body_bytes:
        raise _body_too_large(limits)


def _body_too_large(limits: UploadLimits) -> ApiError:
    return ApiError(
        413,
        "request_too_large",
        f"request body over {limits.max_body_bytes // 2**20} MB: send at most "
        f"{limits.max_files} files of at most {_mb(limits.max_file_bytes)} each",
    )


def _missing_files(other_names: set[str]) -> ApiError:
    got = f" (got: {', '.join(sorted(other_names))})" if other_names else ""
    return ApiError(
        422,
        "missing_files",
        f"no files: send one or more images in the multipart field '{FILES_FIELD}'{got}",
    )


def _with_files(form: Form) -> Form:
    if not form.files:
        raise _missing_files(form.other_names)
    return form


def _mb(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:g} MB"


def safe_filename(raw: bytes | None, index: int) -> str:
    """A bare, printable name to echo back: no folders, no control characters, bounded length."""
    name = (raw or b"").decode("utf-8", errors="replace").replace("\\", "/")
    name = PurePosixPath(name).name
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C")[:MAX_FILENAME_CHARS]
    return name.strip() or f"file-{index}"


class _PartReader:
    """Callbacks for python-multipart's streaming parser, building a Form under the limits."""

    def __init__(self, limits: UploadLimits) -> None:
        self.limits = limits
        self.form = Form()
        self.complete = False
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._name = ""
        self._filename = ""
        self._data = bytearray()
        self._cap = 0  # bytes allowed for the current part; 0: skip its data

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._on_part_begin,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
            "on_end": self._on_end,
        }

    def _on_part_begin(self) -> None:
        self._disposition = b""
        self._data = bytearray()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        self._name = options.get(b"name", b"").decode("utf-8", errors="replace")
        if self._name == FILES_FIELD:
            self._start_file(options.get(b"filename"))
        elif self._name in KNOWN_FIELDS:
            self._cap = MAX_FIELD_BYTES
        else:
            if len(self.form.other_names) < MAX_NAMED_FIELDS:
                self.form.other_names.add(self._name[:MAX_FILENAME_CHARS] or "(unnamed)")
            self._cap = 0

    def _start_file(self, raw_filename: bytes | None) -> None:
        count = len(self.form.files) + 1
        if count > self.limits.max_files:
            raise ApiError(
                413,
                "too_many_files",
                f"too many files: at most {self.limits.max_files} per request",
            )
        self._filename = safe_filename(raw_filename, count)
        self._cap = self.limits.max_file_bytes

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._cap:
            return
        if len(self._data) + (end - start) > self._cap:
            raise self._part_too_large()
        self._data += data[start:end]

    def _part_too_large(self) -> ApiError:
        if self._name == FILES_FIELD:
            return ApiError(
                413,
                "file_too_large",
                f"'{self._filename}' is over the limit of {_mb(self.limits.max_file_bytes)} "
                "per file",
            )
        return ApiError(
            413, "field_too_large", f"form field '{self._name}' is over {MAX_FIELD_BYTES} bytes"
        )

    def _on_part_end(self) -> None:
        if self._name == FILES_FIELD:
            self.form.files.append(Upload(self._filename, bytes(self._data)))
        elif self._name in KNOWN_FIELDS:
            self.form.fields[self._name] = self._data.decode("utf-8", errors="replace")

    def _on_end(self) -> None:
        self.complete = True
