"""Email addresses and names that identify one person, and the look-alikes that are refused.

An identity is known by its email. Before an email is enrolled it is NFKC-normalized (so
full-width or ligature forms become plain letters) and must then be plain ASCII: a
Cyrillic ``а`` that looks like a Latin ``a`` is refused, not silently kept. A trailing dot
(``ada@lab.org.``), empty labels (``ada@lab..org``) and leading or trailing dots in the
local part are refused too. The domain is lower-cased; the local part keeps its case but
two addresses that differ only in case are the same person.

:func:`email_skeleton` maps an address to the form a reader sees: ``0`` and ``o``,
``1``, ``I`` and ``l``, ``rn`` and ``m``, ``vv`` and ``w`` look alike. A store refuses to
enroll an address whose skeleton equals another enrolled address's skeleton.

Examples
--------
>>> normalize_email("  Ada@LAB.org ")
'Ada@lab.org'
>>> normalize_email("ａｄａ@lab.org")  # full-width letters: NFKC makes them ASCII
'ada@lab.org'
>>> email_skeleton("ada@1ab.org") == email_skeleton("ada@lab.org")
True
>>> same_email("ADA@lab.org", "ada@LAB.org")
True
"""

from __future__ import annotations

import re
import unicodedata

from qemlflow.audit.errors import IdentityError

__all__ = [
    "email_skeleton",
    "looks_like",
    "name_skeleton",
    "normalize_email",
    "normalize_name",
    "same_email",
]

_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_NAME_FORBIDDEN = re.compile(r"[<>@\x00-\x1f\x7f]")
_EMAIL_FIX = "give a plain address like name@example.org (ASCII letters, no trailing dot)"
# Single characters a reader takes for another (after NFKC, before case folding).
_CONFUSABLE_CHARS = str.maketrans({"0": "o", "1": "l", "I": "l", "|": "l", "5": "s"})
_CONFUSABLE_PAIRS = (("rn", "m"), ("vv", "w"), ("cl", "d"))


def normalize_email(email: str) -> str:
    """Return ``email`` NFKC-normalized with its domain lower-cased, or refuse it.

    Raises
    ------
    IdentityError
        The address is not plain ASCII after NFKC (look-alike letters from another script),
        has no single ``@``, has a trailing dot, an empty or malformed label.

    Examples
    --------
    >>> normalize_email("аda@lab.org")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    qemlflow.audit.errors.IdentityError: email 'аda@lab.org' has a character that is not ...
    >>> normalize_email("ada@lab.org.")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    qemlflow.audit.errors.IdentityError: email 'ada@lab.org.' ends its domain with a dot...
    """
    text = unicodedata.normalize("NFKC", str(email)).strip()
    odd = [ch for ch in text if not ch.isascii() or not ch.isprintable()]
    if odd:
        names = ", ".join(f"{ch!r} ({unicodedata.name(ch, 'unnamed')})" for ch in odd[:3])
        raise IdentityError(
            f"email {email!r} has a character that is not plain ASCII: {names} - it would "
            "look like another address",
            _EMAIL_FIX,
        )
    if text.count("@") != 1:
        raise IdentityError(f"email {email!r} is not an email address", _EMAIL_FIX)
    local, domain = text.split("@")
    if domain.endswith("."):
        raise IdentityError(
            f"email {email!r} ends its domain with a dot - it would pass for "
            f"{local}@{domain.rstrip('.')}",
            "give the address without the trailing dot",
        )
    labels = domain.split(".")
    if (
        _LOCAL.fullmatch(local) is None
        or len(labels) < 2
        or not all(_LABEL.fullmatch(label) for label in labels)
    ):
        raise IdentityError(f"email {email!r} is not an email address", _EMAIL_FIX)
    return f"{local}@{domain.lower()}"


def same_email(a: str, b: str) -> bool:
    """Whether two normalized addresses name the same mailbox (case does not matter)."""
    return a.casefold() == b.casefold()


def _skeleton(text: str) -> str:
    # map before folding case: an upper-case I reads as l, a lower-case i does not
    folded = unicodedata.normalize("NFKC", text).translate(_CONFUSABLE_CHARS).casefold()
    for pair, single in _CONFUSABLE_PAIRS:
        folded = folded.replace(pair, single)
    return folded


def email_skeleton(email: str) -> str:
    """Return what a reader sees of an address: look-alike characters folded together.

    Examples
    --------
    >>> email_skeleton("Ada@LAB.org") == email_skeleton("ada@lab.org")
    True
    >>> email_skeleton("bob@lab.org") == email_skeleton("rob@lab.org")
    False
    """
    return _skeleton(email)


def looks_like(a: str, b: str) -> bool:
    """Whether two different addresses would pass for each other (same skeleton).

    Examples
    --------
    >>> looks_like("ada@lab.org", "ada@1ab.org"), looks_like("ada@lab.org", "ADA@lab.org")
    (True, False)
    """
    return not same_email(a, b) and email_skeleton(a) == email_skeleton(b)


def _scripts(text: str) -> set[str]:
    scripts: set[str] = set()
    for ch in text:
        if ch.isalpha():
            scripts.add(unicodedata.name(ch, "UNKNOWN").split(" ")[0])
    return scripts


def normalize_name(name: str) -> str:
    """Return a display name NFKC-normalized and trimmed, or refuse it.

    A name may be written in any script, but not in a mix of the look-alike Latin, Greek
    and Cyrillic alphabets (``Аda`` with a Cyrillic ``А``).

    Raises
    ------
    IdentityError
        The name is empty, holds ``<``, ``>``, ``@`` or control characters, or mixes
        Latin, Greek and Cyrillic letters.

    Examples
    --------
    >>> normalize_name("  Ada   Lovelace ")
    'Ada Lovelace'
    """
    text = " ".join(unicodedata.normalize("NFKC", str(name)).split())
    if not text or _NAME_FORBIDDEN.search(text):
        raise IdentityError(
            f"name {name!r} cannot name a person",
            "give a non-empty name without '<', '>', '@' or control characters",
        )
    mixed = _scripts(text) & {"LATIN", "GREEK", "CYRILLIC"}
    if len(mixed) > 1:
        raise IdentityError(
            f"name {name!r} mixes {', '.join(sorted(s.title() for s in mixed))} letters - "
            "it would look like another name",
            "write the name in one alphabet",
        )
    return text


def name_skeleton(name: str) -> str:
    """Return what a reader sees of a display name (see :func:`email_skeleton`)."""
    return _skeleton(" ".join(name.split()))
