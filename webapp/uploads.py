"""Read the uploaded slice into memory; it is never written to disk.

Werkzeug spools a multipart file part to a temporary file once a request passes 500 KB, which
would leave patient images in /tmp. ``InMemoryRequest`` keeps every part in a ``BytesIO``;
``MAX_CONTENT_LENGTH`` (the upload limit) bounds what that can cost.
"""

from __future__ import annotations

from io import BytesIO
from typing import IO

from flask import Request

from webapp.errors import Refusal

FIELD = "file"


class InMemoryRequest(Request):
    def _get_file_stream(self, total_content_length: int | None, content_type: str | None,
                         filename: str | None = None,
                         content_length: int | None = None) -> IO[bytes]:
        return BytesIO()


def read_upload(request: Request, allow_raw_body: bool) -> bytes:
    """The bytes of the multipart field ``file`` or, for the API, of the raw request body."""
    if request.mimetype == "multipart/form-data":
        storage = request.files.get(FIELD)
        if storage is None:
            raise Refusal(400, "missing_file",
                          f"No file in the upload: send the image in the form field '{FIELD}'.")
        data = storage.read()
        # A browser submits an empty part with no name when no file was chosen.
        if not data and not storage.filename:
            raise Refusal(400, "missing_file", "No file was chosen: pick an MRI slice first.")
    elif allow_raw_body:
        data = request.get_data(cache=False)
        if not data:
            raise Refusal(400, "missing_file",
                          f"No image in the request: send it as the request body, or as the "
                          f"multipart/form-data field '{FIELD}'.")
    else:
        raise Refusal(400, "missing_file",
                      "The form must be sent as multipart/form-data with a file.")
    if not data:
        raise Refusal(400, "empty_file", "The uploaded file is empty (0 bytes).")
    return data
