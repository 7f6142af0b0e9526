"""Artifact formats, one module each behind one interface (base.Format), and the variant table."""
from .base import GROUPS, VARIANTS, Converted, ConvertJob, Format, Variant, formats, resolve_formats

__all__ = ["GROUPS", "VARIANTS", "Converted", "ConvertJob", "Format", "Variant", "formats", "resolve_formats"]
