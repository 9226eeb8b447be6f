"""The HTTP/1.1 grammar, spelled once, as regular-expression source bytes.

Each name below is one rule of RFC 9110 (semantics) or RFC 9112 (HTTP/1.1
messages), or of RFC 5234's core rules they use, written as the bytes of a
`re` pattern: the head readers (http1.py, response_head.py) and the header
filters (headers.py) compile their expressions from these, once, at import.
No rule here has a capture group, so a user chooses its own groups.

Where a fast path takes less than the grammar allows (HTTP/1.0 and 1.1 only,
a status of 100 or more), the narrower piece is named for what it takes, next
to the rule it narrows; what it does not take goes to llhttp.

Every piece is a single character class, or a run of one, or a literal: an
expression built from them stays linear as long as two runs that follow one
another cannot match the same byte (tests/test_head_parsers_linear.py).
"""

from __future__ import annotations

# -- RFC 5234 Appendix B.1, core rules ----------------------------------------------
CRLF = rb"\r\n"
DIGIT = rb"[0-9]"
HEXDIG = rb"[0-9A-Fa-f]"
# VCHAR = %x21-7E, the visible characters. The range alone (no brackets) is what
# the classes below that join it with other characters are built from.
VCHAR_RANGE = rb"\x21-\x7e"
VCHAR = b"[" + VCHAR_RANGE + b"]"

# -- RFC 9110 §5.6.3: whitespace -------------------------------------------------------
# OWS = *( SP / HTAB ): optional whitespace.
OWS = rb"[ \t]*"

# -- RFC 9110 §5.6.4: obs-text = %x80-FF -------------------------------------------------
OBS_TEXT_RANGE = rb"\x80-\xff"
OBS_TEXT = b"[" + OBS_TEXT_RANGE + b"]"

# -- RFC 9110 §5.6.2: tokens -------------------------------------------------------------
# tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`"
#       / "|" / "~" / DIGIT / ALPHA   (any VCHAR except the delimiters)
# token = 1*tchar
TCHAR_SET = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
TCHAR = b"[" + TCHAR_SET + b"]"
TOKEN = TCHAR + b"+"

# -- RFC 9110 §5.1, §5.5: fields -----------------------------------------------------------
# field-name = token
FIELD_NAME = TOKEN
# field-vchar = VCHAR / obs-text
FIELD_VCHAR = b"[" + VCHAR_RANGE + OBS_TEXT_RANGE + b"]"
# field-value = *field-content; field-content = field-vchar [ 1*( SP / HTAB / field-vchar )
# field-vchar ]. A value may not begin or end with whitespace, but a field line's
# value with its OWS around it (RFC 9112 §5: field-line = field-name ":" OWS field-value
# OWS) is any run of HTAB / SP / field-vchar: one class, one run, which cannot
# backtrack. Whoever needs the value trims the whitespace around it.
FIELD_LINE_VALUE = rb"[\t " + VCHAR_RANGE + OBS_TEXT_RANGE + b"]*"
# RFC 9112 §5: field-line = field-name ":" OWS field-value OWS (obs-fold, §5.2, is left
# to llhttp: these expressions do not take it).
FIELD_LINE = FIELD_NAME + b":" + FIELD_LINE_VALUE

# -- RFC 9112 §2.3: HTTP-version = HTTP-name "/" DIGIT "." DIGIT; HTTP-name = "HTTP" ------
HTTP_NAME = rb"HTTP"
HTTP_VERSION = HTTP_NAME + b"/" + DIGIT + rb"\." + DIGIT
# The versions the fast paths take, HTTP/1.0 and HTTP/1.1 (llhttp reads the others):
# the part before the minor digit, and the minor digit (which the readers capture).
HTTP_1_PREFIX = HTTP_NAME + rb"/1\."
HTTP_1_MINOR = rb"[01]"
HTTP_1_VERSION = HTTP_1_PREFIX + HTTP_1_MINOR

# -- RFC 9110 §15: status-code = 3DIGIT ------------------------------------------------------
STATUS_CODE = DIGIT * 3
# The codes the fast path of a response head takes: 100 to 999 (a leading 0 goes to llhttp).
STATUS_CODE_FROM_100 = rb"[1-9]" + DIGIT * 2

# -- RFC 9112 §4: reason-phrase = 1*( HTAB / SP / VCHAR / obs-text ) -----------------------
# (RFC 9112 §4 also lets the phrase be empty after its SP: `status-line = HTTP-version
# SP status-code SP [ reason-phrase ]`.) The run of any length covers both.
REASON_PHRASE = FIELD_LINE_VALUE

# -- RFC 9112 §3.2.1: origin-form = absolute-path [ "?" query ] ------------------------------
# Loosely: a "/" and then any visible characters, as the fast path takes it (the path is
# checked afterwards; llhttp reads any other form).
ORIGIN_FORM = b"/" + VCHAR + b"*"

# -- RFC 9112 §7.1: chunk-size = 1*HEXDIG ------------------------------------------------------
CHUNK_SIZE = HEXDIG + b"+"
