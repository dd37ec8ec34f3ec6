"""facefact: one photo of a person -> new portraits from a text prompt (FaceChain-FACT)."""
from facefact.errors import FacefactError

__version__ = "0.1.0"
__all__ = ["FacefactError", "__version__"]
