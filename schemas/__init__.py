"""Event schemas: decoding and validation. Pure: no AWS, no I/O, no clock."""

from schemas.errors import InvalidEvent
from schemas.page_views import PageView, decode_page_view

__all__ = ["InvalidEvent", "PageView", "decode_page_view"]
