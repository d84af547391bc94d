"""The Accept header, honoured: an answer whose media type the client did not accept is a
406 naming both, never a body the client cannot read (SageMaker sends the Accept of a
transform job; a client asking for text/csv must not get JSON silently)."""

from __future__ import annotations

from sheaf_server.engine.errors import NotAcceptable


def accepts(accept: str | None, media_type: str) -> bool:
    """Whether `media_type` satisfies the Accept header (absent: anything). Ranges
    (`*/*`, `application/*`) match; an entry with `q=0` excludes its type."""
    if not accept or accept == "*/*" or not accept.strip():  # most clients: no parsing
        return True
    kind = media_type.split(";", 1)[0].strip().lower()
    family = kind.split("/", 1)[0]
    for entry in accept.split(","):
        name, *params = (part.strip().lower() for part in entry.split(";"))
        if any(p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in params):
            continue
        if name in ("*/*", f"{family}/*", kind):
            return True
    return False


def check_accept(accept: str | None, media_type: str) -> None:
    """NotAcceptable (406) unless `accepts(accept, media_type)`."""
    if not accepts(accept, media_type):
        raise NotAcceptable(f"Accept {accept!r} does not include {media_type}, the type "
                            "this answer is in; accept it (or */*)")
