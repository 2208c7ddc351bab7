"""Service classes: the SCU operations and SCP behaviour of each DICOM service class."""
