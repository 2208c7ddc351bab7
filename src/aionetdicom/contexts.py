"""Presentation contexts to propose (SCU) or support (SCP), and the common UIDs.

Contexts are values; lists of them add up::

    contexts.VERIFICATION + (contexts.PresentationContext(CT_IMAGE_STORAGE),)
"""

from aionetdicom.acse.contexts import (
    DEFAULT_TRANSFER_SYNTAXES,
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    JPEG_2000,
    JPEG_2000_LOSSLESS,
    JPEG_BASELINE_8BIT,
    JPEG_EXTENDED_12BIT,
    JPEG_LOSSLESS_SV1,
    JPEG_LS_LOSSLESS,
    JPEG_LS_NEAR_LOSSLESS,
    RLE_LOSSLESS,
    VERIFICATION,
    VERIFICATION_SOP_CLASS,
    NegotiatedContext,
    PresentationContext,
)

__all__ = [
    "DEFAULT_TRANSFER_SYNTAXES",
    "DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN",
    "EXPLICIT_VR_BIG_ENDIAN",
    "EXPLICIT_VR_LITTLE_ENDIAN",
    "IMPLICIT_VR_LITTLE_ENDIAN",
    "JPEG_2000",
    "JPEG_2000_LOSSLESS",
    "JPEG_BASELINE_8BIT",
    "JPEG_EXTENDED_12BIT",
    "JPEG_LOSSLESS_SV1",
    "JPEG_LS_LOSSLESS",
    "JPEG_LS_NEAR_LOSSLESS",
    "RLE_LOSSLESS",
    "VERIFICATION",
    "VERIFICATION_SOP_CLASS",
    "NegotiatedContext",
    "PresentationContext",
]
