"""Triptych galleries for triage. The rendering lives in ``evaluate.gallery`` (reports embed the same panels);
this module is the triage-side entry point."""

from evaluate.gallery import identity_order, make_triptychs, triptych

__all__ = ["identity_order", "make_triptychs", "triptych"]
