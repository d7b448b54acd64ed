"""What `predict --ray` reads: photos named by local paths or URIs (s3://, gs://, any
filesystem pyarrow or fsspec knows), given one by one, as folders, or in a manifest or list.

Every location is resolved on the driver to an absolute URI that any worker can open, beside
the name the output rows show (as the user wrote it, as `cardamage predict` shows it).
"""

from __future__ import annotations

import csv
import io
import posixpath
from dataclasses import dataclass
from pathlib import Path

from cardamage.errors import CardamageError
from cardamage.inference.batch import IMAGE_SUFFIXES

#: A SOURCE ending so is a list of photos, one a line (blank lines and `#` comments skipped).
LIST_SUFFIX = ".txt"
#: A SOURCE ending so is a manifest: its `image` column (tidy) or `name` column (the original's).
MANIFEST_SUFFIX = ".csv"
MANIFEST_COLUMNS = ("image", "name")


@dataclass(frozen=True)
class Photo:
    image: str  # the name the row shows
    uri: str  # what a worker opens


def is_uri(location: str) -> bool:
    return "://" in location


def absolute(location: str) -> str:
    """A location any worker can open: URIs as they are, local paths made absolute."""
    return location if is_uri(location) else str(Path(location).expanduser().resolve())


def filesystem(uri: str):
    """(pyarrow filesystem, path in it) for a URI or absolute path; fsspec for what pyarrow
    does not know itself (its scheme needs that fsspec package installed)."""
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except ValueError:  # pyarrow's ArrowInvalid: a scheme it does not know
        pass
    except OSError as e:
        raise CardamageError(f"cannot open {uri}: {e}") from None
    try:
        import fsspec

        fs, path = fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as e:
        raise CardamageError(f"no filesystem reads {uri}: {e}") from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    with fs.open_input_stream(path) as f:
        return f.read()


def find_photos(sources: list[str], recursive: bool) -> list[Photo]:
    """Every photo the sources name, folders listed in sorted order, in the order given."""
    photos: list[Photo] = []
    for source in sources:
        photos.extend(_expand(source, recursive))
    return photos


def _expand(source: str, recursive: bool) -> list[Photo]:
    import pyarrow.fs as pafs

    uri = absolute(source)
    fs, path = filesystem(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        return _listed(source, uri, fs, path, recursive)
    suffix = posixpath.splitext(path)[1].lower()
    if info.type == pafs.FileType.File and suffix in (LIST_SUFFIX, MANIFEST_SUFFIX):
        return _from_list(source, uri, fs, path)
    return [Photo(source, uri)]  # a missing or unreadable file becomes an error row


def _listed(source: str, uri: str, fs, path: str, recursive: bool) -> list[Photo]:
    import pyarrow.fs as pafs

    selector = pafs.FileSelector(path, recursive=recursive)
    found = sorted(
        i.path
        for i in fs.get_file_info(selector)
        if i.type == pafs.FileType.File and posixpath.splitext(i.path)[1].lower() in IMAGE_SUFFIXES
    )
    root = path.rstrip("/")
    return [Photo(_join(source, p[len(root) + 1 :]), _join(uri, p[len(root) + 1 :])) for p in found]


def _from_list(source: str, uri: str, fs, path: str) -> list[Photo]:
    """A manifest's or list's photos, relative ones relative to the file's folder."""
    with fs.open_input_stream(path) as f:
        text = f.read().decode("utf-8-sig")
    if path.lower().endswith(MANIFEST_SUFFIX):
        names = _manifest_names(source, text)
    else:
        lines = (line.strip() for line in text.splitlines())
        names = [line for line in lines if line and not line.startswith("#")]
    folder, folder_uri = _parent(source), _parent(uri)
    return [
        Photo(n, n)
        if is_uri(n) or Path(n).is_absolute()
        else Photo(_join(folder, n), _join(folder_uri, n))
        for n in names
    ]


def _manifest_names(source: str, text: str) -> list[str]:
    reader = csv.DictReader(io.StringIO(text))
    column = next((c for c in MANIFEST_COLUMNS if c in (reader.fieldnames or [])), None)
    if column is None:
        raise CardamageError(f"{source}: no 'image' column (nor the original's 'name')")
    return [row[column].strip() for row in reader if (row[column] or "").strip()]


def _join(base: str, relative: str) -> str:
    if not base:
        return relative
    return base.rstrip("/") + "/" + relative if is_uri(base) else str(Path(base) / relative)


def _parent(location: str) -> str:
    return posixpath.dirname(location) if is_uri(location) else str(Path(location).parent)
