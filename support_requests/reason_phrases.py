"""The reason phrase of each HTTP status, as RFC 9110 (section 15) names it: problem titles.

Python's ``http.HTTPStatus`` before 3.13 still carries RFC 7231's older phrases for some
codes ("Unprocessable Entity", "Request Entity Too Large", "Requested Range Not
Satisfiable"), so the service does not take its titles from there. 429 is RFC 6585's.
"""

from __future__ import annotations

from http import HTTPStatus

# RFC 9110, 15.5 (client errors) and 15.6 (server errors); 418 is "(Unused)" there.
REASON_PHRASES: dict[int, str] = {
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    409: "Conflict",
    410: "Gone",
    411: "Length Required",
    412: "Precondition Failed",
    413: "Content Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    416: "Range Not Satisfiable",
    417: "Expectation Failed",
    421: "Misdirected Request",
    422: "Unprocessable Content",
    426: "Upgrade Required",
    429: "Too Many Requests",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}


def reason_phrase(status: int) -> str:
    """RFC 9110's phrase for ``status`` (Python's for a code RFC 9110 does not define)."""
    return REASON_PHRASES.get(status) or HTTPStatus(status).phrase
