"""Command-line DICOM applications (echoscu, echoscp, ...) in the style of DCMTK's tools.

Run them as ``python -m aionetdicom <app> [options]`` or through their console scripts.
"""
