"""Emergency alerts from OASIS CAP 1.2 (issue 19): receive, check, decide, air, prove.

Layering: this package sits above ``loa``, ``registry``, ``scheduler`` and
``broadcasts``; only ``dashboard`` and the command line import it."""
