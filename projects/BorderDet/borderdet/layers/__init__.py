from .border_align import border_align, border_align_reference, load_extension

__all__ = ["border_align", "border_align_reference", "load_extension"]
