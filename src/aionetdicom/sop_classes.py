"""SOP Class UIDs grouped by service class, from pydicom's UID dictionary and PS3.4."""

from __future__ import annotations

from pydicom._uid_dict import UID_dictionary

_BY_KEYWORD: dict[str, str] = {entry[4]: uid for uid, entry in UID_dictionary.items()}


def uid_for_keyword(keyword: str) -> str:
    """The UID pydicom's dictionary gives a keyword (``"UnifiedProcedureStepPush"`` …)."""
    try:
        return _BY_KEYWORD[keyword]
    except KeyError:
        raise KeyError(f"pydicom knows no UID with keyword {keyword!r}") from None


VERIFICATION = "1.2.840.10008.1.1"

#: Every Storage SOP Class pydicom knows (PS3.4 Annex B), retired ones included.
STORAGE_SOP_CLASSES: tuple[str, ...] = tuple(
    sorted(
        (
            uid
            for uid, (_, kind, _, _, keyword) in UID_dictionary.items()
            if kind == "SOP Class"
            and "Storage" in keyword
            and not keyword.startswith("StorageCommitment")
            and keyword != "MediaStorageDirectoryStorage"
        ),
        key=lambda uid: tuple(int(part) for part in uid.split(".")),
    )
)

PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
PATIENT_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.1.2"
PATIENT_ROOT_GET = "1.2.840.10008.5.1.4.1.2.1.3"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
PATIENT_STUDY_ONLY_FIND = "1.2.840.10008.5.1.4.1.2.3.1"
PATIENT_STUDY_ONLY_MOVE = "1.2.840.10008.5.1.4.1.2.3.2"
PATIENT_STUDY_ONLY_GET = "1.2.840.10008.5.1.4.1.2.3.3"
COMPOSITE_INSTANCE_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.4.2"
COMPOSITE_INSTANCE_ROOT_GET = "1.2.840.10008.5.1.4.1.2.4.3"
COMPOSITE_INSTANCE_RETRIEVE_WITHOUT_BULK_DATA_GET = "1.2.840.10008.5.1.4.1.2.5.3"
MODALITY_WORKLIST_FIND = "1.2.840.10008.5.1.4.31"


def _by_keyword(keyword: str) -> str:
    """The UID pydicom's dictionary lists under ``keyword`` (KeyError if it has none)."""
    for uid, entry in UID_dictionary.items():
        if entry[4] == keyword:
            return uid
    raise KeyError(keyword)


# The other services built on C-FIND (and their C-MOVE/C-GET retrieve SOP classes):
# PS3.4 Annex K (worklist), Q (relevant patient information), U (hanging protocol),
# X (color palette), BB (implant templates), HH (defined procedure protocol),
# II (protocol approval), KK (inventory), and the product characteristics and
# substance approval queries.
GENERAL_RELEVANT_PATIENT_INFORMATION_FIND = _by_keyword("GeneralRelevantPatientInformationQuery")
BREAST_IMAGING_RELEVANT_PATIENT_INFORMATION_FIND = _by_keyword(
    "BreastImagingRelevantPatientInformationQuery"
)
CARDIAC_RELEVANT_PATIENT_INFORMATION_FIND = _by_keyword("CardiacRelevantPatientInformationQuery")
HANGING_PROTOCOL_FIND = _by_keyword("HangingProtocolInformationModelFind")
HANGING_PROTOCOL_MOVE = _by_keyword("HangingProtocolInformationModelMove")
HANGING_PROTOCOL_GET = _by_keyword("HangingProtocolInformationModelGet")
COLOR_PALETTE_FIND = _by_keyword("ColorPaletteQueryRetrieveInformationModelFind")
COLOR_PALETTE_MOVE = _by_keyword("ColorPaletteQueryRetrieveInformationModelMove")
COLOR_PALETTE_GET = _by_keyword("ColorPaletteQueryRetrieveInformationModelGet")
GENERIC_IMPLANT_TEMPLATE_FIND = _by_keyword("GenericImplantTemplateInformationModelFind")
GENERIC_IMPLANT_TEMPLATE_MOVE = _by_keyword("GenericImplantTemplateInformationModelMove")
GENERIC_IMPLANT_TEMPLATE_GET = _by_keyword("GenericImplantTemplateInformationModelGet")
IMPLANT_ASSEMBLY_TEMPLATE_FIND = _by_keyword("ImplantAssemblyTemplateInformationModelFind")
IMPLANT_ASSEMBLY_TEMPLATE_MOVE = _by_keyword("ImplantAssemblyTemplateInformationModelMove")
IMPLANT_ASSEMBLY_TEMPLATE_GET = _by_keyword("ImplantAssemblyTemplateInformationModelGet")
IMPLANT_TEMPLATE_GROUP_FIND = _by_keyword("ImplantTemplateGroupInformationModelFind")
IMPLANT_TEMPLATE_GROUP_MOVE = _by_keyword("ImplantTemplateGroupInformationModelMove")
IMPLANT_TEMPLATE_GROUP_GET = _by_keyword("ImplantTemplateGroupInformationModelGet")
DEFINED_PROCEDURE_PROTOCOL_FIND = _by_keyword("DefinedProcedureProtocolInformationModelFind")
DEFINED_PROCEDURE_PROTOCOL_MOVE = _by_keyword("DefinedProcedureProtocolInformationModelMove")
DEFINED_PROCEDURE_PROTOCOL_GET = _by_keyword("DefinedProcedureProtocolInformationModelGet")
PROTOCOL_APPROVAL_FIND = _by_keyword("ProtocolApprovalInformationModelFind")
PROTOCOL_APPROVAL_MOVE = _by_keyword("ProtocolApprovalInformationModelMove")
PROTOCOL_APPROVAL_GET = _by_keyword("ProtocolApprovalInformationModelGet")
PRODUCT_CHARACTERISTICS_FIND = _by_keyword("ProductCharacteristicsQuery")
SUBSTANCE_APPROVAL_FIND = _by_keyword("SubstanceApprovalQuery")
INVENTORY_FIND = _by_keyword("InventoryFind")
INVENTORY_MOVE = _by_keyword("InventoryMove")
INVENTORY_GET = _by_keyword("InventoryGet")
REPOSITORY_QUERY_FIND = _by_keyword("RepositoryQuery")

#: The C-FIND SOP Classes of the Query/Retrieve service class proper (PS3.4 Annex C).
QR_FIND_SOP_CLASSES: tuple[str, ...] = (
    PATIENT_ROOT_FIND,
    STUDY_ROOT_FIND,
    PATIENT_STUDY_ONLY_FIND,
)
#: Its C-MOVE SOP Classes.
QR_MOVE_SOP_CLASSES: tuple[str, ...] = (
    PATIENT_ROOT_MOVE,
    STUDY_ROOT_MOVE,
    PATIENT_STUDY_ONLY_MOVE,
    COMPOSITE_INSTANCE_ROOT_MOVE,
)
#: Its C-GET SOP Classes.
QR_GET_SOP_CLASSES: tuple[str, ...] = (
    PATIENT_ROOT_GET,
    STUDY_ROOT_GET,
    PATIENT_STUDY_ONLY_GET,
    COMPOSITE_INSTANCE_ROOT_GET,
    COMPOSITE_INSTANCE_RETRIEVE_WITHOUT_BULK_DATA_GET,
)
#: Every SOP Class whose SCP answers C-FIND: Q/R and the other C-FIND-based services.
FIND_SOP_CLASSES: tuple[str, ...] = (
    *QR_FIND_SOP_CLASSES,
    MODALITY_WORKLIST_FIND,
    GENERAL_RELEVANT_PATIENT_INFORMATION_FIND,
    BREAST_IMAGING_RELEVANT_PATIENT_INFORMATION_FIND,
    CARDIAC_RELEVANT_PATIENT_INFORMATION_FIND,
    HANGING_PROTOCOL_FIND,
    COLOR_PALETTE_FIND,
    GENERIC_IMPLANT_TEMPLATE_FIND,
    IMPLANT_ASSEMBLY_TEMPLATE_FIND,
    IMPLANT_TEMPLATE_GROUP_FIND,
    DEFINED_PROCEDURE_PROTOCOL_FIND,
    PROTOCOL_APPROVAL_FIND,
    PRODUCT_CHARACTERISTICS_FIND,
    SUBSTANCE_APPROVAL_FIND,
    INVENTORY_FIND,
    REPOSITORY_QUERY_FIND,
)
#: Every SOP Class whose SCP answers C-MOVE.
MOVE_SOP_CLASSES: tuple[str, ...] = (
    *QR_MOVE_SOP_CLASSES,
    HANGING_PROTOCOL_MOVE,
    COLOR_PALETTE_MOVE,
    GENERIC_IMPLANT_TEMPLATE_MOVE,
    IMPLANT_ASSEMBLY_TEMPLATE_MOVE,
    IMPLANT_TEMPLATE_GROUP_MOVE,
    DEFINED_PROCEDURE_PROTOCOL_MOVE,
    PROTOCOL_APPROVAL_MOVE,
    INVENTORY_MOVE,
)
#: Every SOP Class whose SCP answers C-GET.
GET_SOP_CLASSES: tuple[str, ...] = (
    *QR_GET_SOP_CLASSES,
    HANGING_PROTOCOL_GET,
    COLOR_PALETTE_GET,
    GENERIC_IMPLANT_TEMPLATE_GET,
    IMPLANT_ASSEMBLY_TEMPLATE_GET,
    IMPLANT_TEMPLATE_GROUP_GET,
    DEFINED_PROCEDURE_PROTOCOL_GET,
    PROTOCOL_APPROVAL_GET,
    INVENTORY_GET,
)
#: The Query/Retrieve service class (Annex C): FIND, MOVE and GET models.
QR_SOP_CLASSES: tuple[str, ...] = (
    *QR_FIND_SOP_CLASSES,
    *QR_MOVE_SOP_CLASSES,
    *QR_GET_SOP_CLASSES,
)
#: Every C-FIND, C-MOVE and C-GET SOP Class above.
QUERY_RETRIEVE_SOP_CLASSES: tuple[str, ...] = (
    *FIND_SOP_CLASSES,
    *MOVE_SOP_CLASSES,
    *GET_SOP_CLASSES,
)

STORAGE_COMMITMENT_PUSH = "1.2.840.10008.1.20.1"
MODALITY_PERFORMED_PROCEDURE_STEP = "1.2.840.10008.3.1.2.3.3"

# The SOP classes of the DIMSE-N services (PS3.4), with their well-known instances.

#: Storage commitment push model (PS3.4 J): the well-known instance of N-ACTION/N-EVENT-REPORT.
STORAGE_COMMITMENT_PUSH_INSTANCE = uid_for_keyword("StorageCommitmentPushModelInstance")
#: Modality performed procedure step (PS3.4 F): retrieve (N-GET) and notification.
MODALITY_PERFORMED_PROCEDURE_STEP_RETRIEVE = uid_for_keyword(
    "ModalityPerformedProcedureStepRetrieve"
)
MODALITY_PERFORMED_PROCEDURE_STEP_NOTIFICATION = uid_for_keyword(
    "ModalityPerformedProcedureStepNotification"
)

# Unified procedure step (PS3.4 CC). Every UPS instance is of the Push SOP class (CC.3.1),
# so N-GET/N-SET/N-ACTION/N-EVENT-REPORT name UPS_PUSH on whichever UPS context is used.
UPS_PUSH = uid_for_keyword("UnifiedProcedureStepPush")
UPS_WATCH = uid_for_keyword("UnifiedProcedureStepWatch")
UPS_PULL = uid_for_keyword("UnifiedProcedureStepPull")
UPS_EVENT = uid_for_keyword("UnifiedProcedureStepEvent")
UPS_QUERY = uid_for_keyword("UnifiedProcedureStepQuery")
#: The UPS SOP classes whose contexts carry DIMSE-N requests naming UPS_PUSH.
UPS_N_SOP_CLASSES: tuple[str, ...] = (UPS_PUSH, UPS_WATCH, UPS_PULL, UPS_EVENT)
UPS_GLOBAL_SUBSCRIPTION_INSTANCE = uid_for_keyword("UPSGlobalSubscriptionInstance")
UPS_FILTERED_GLOBAL_SUBSCRIPTION_INSTANCE = uid_for_keyword("UPSFilteredGlobalSubscriptionInstance")

# Print management (PS3.4 H): the meta SOP classes negotiated, the SOP classes commands name.
BASIC_GRAYSCALE_PRINT_MANAGEMENT_META = uid_for_keyword("BasicGrayscalePrintManagementMeta")
BASIC_COLOR_PRINT_MANAGEMENT_META = uid_for_keyword("BasicColorPrintManagementMeta")
BASIC_FILM_SESSION = uid_for_keyword("BasicFilmSession")
BASIC_FILM_BOX = uid_for_keyword("BasicFilmBox")
BASIC_GRAYSCALE_IMAGE_BOX = uid_for_keyword("BasicGrayscaleImageBox")
BASIC_COLOR_IMAGE_BOX = uid_for_keyword("BasicColorImageBox")
BASIC_ANNOTATION_BOX = uid_for_keyword("BasicAnnotationBox")
PRINT_JOB = uid_for_keyword("PrintJob")
PRINTER = uid_for_keyword("Printer")
PRINTER_INSTANCE = uid_for_keyword("PrinterInstance")
PRINTER_CONFIGURATION_RETRIEVAL = uid_for_keyword("PrinterConfigurationRetrieval")
PRINTER_CONFIGURATION_RETRIEVAL_INSTANCE = uid_for_keyword("PrinterConfigurationRetrievalInstance")
PRESENTATION_LUT = uid_for_keyword("PresentationLUT")

#: Display system management (PS3.4 EE).
DISPLAY_SYSTEM = uid_for_keyword("DisplaySystem")
DISPLAY_SYSTEM_INSTANCE = uid_for_keyword("DisplaySystemInstance")
#: RT machine verification (PS3.4 DD).
RT_CONVENTIONAL_MACHINE_VERIFICATION = uid_for_keyword("RTConventionalMachineVerification")
RT_ION_MACHINE_VERIFICATION = uid_for_keyword("RTIonMachineVerification")
#: Media creation management (PS3.4 S).
MEDIA_CREATION_MANAGEMENT = uid_for_keyword("MediaCreationManagement")
#: Instance availability notification (PS3.4 R).
INSTANCE_AVAILABILITY_NOTIFICATION = uid_for_keyword("InstanceAvailabilityNotification")
#: Application event logging (PS3.4 P).
PROCEDURAL_EVENT_LOGGING = uid_for_keyword("ProceduralEventLogging")
PROCEDURAL_EVENT_LOGGING_INSTANCE = uid_for_keyword("ProceduralEventLoggingInstance")
SUBSTANCE_ADMINISTRATION_LOGGING = uid_for_keyword("SubstanceAdministrationLogging")
SUBSTANCE_ADMINISTRATION_LOGGING_INSTANCE = uid_for_keyword(
    "SubstanceAdministrationLoggingInstance"
)

#: The SOP classes of each print management meta SOP class (PS3.4 H).
PRINT_MANAGEMENT_META_MEMBERS: dict[str, tuple[str, ...]] = {
    BASIC_GRAYSCALE_PRINT_MANAGEMENT_META: (
        BASIC_FILM_SESSION,
        BASIC_FILM_BOX,
        BASIC_GRAYSCALE_IMAGE_BOX,
        PRINTER,
    ),
    BASIC_COLOR_PRINT_MANAGEMENT_META: (
        BASIC_FILM_SESSION,
        BASIC_FILM_BOX,
        BASIC_COLOR_IMAGE_BOX,
        PRINTER,
    ),
}

#: Abstract syntaxes an SCP of the DIMSE-N services negotiates (meta SOP classes for
#: print; the UPS SOP classes that use DIMSE-N).
NORMALIZED_SOP_CLASSES: tuple[str, ...] = (
    STORAGE_COMMITMENT_PUSH,
    MODALITY_PERFORMED_PROCEDURE_STEP,
    MODALITY_PERFORMED_PROCEDURE_STEP_RETRIEVE,
    MODALITY_PERFORMED_PROCEDURE_STEP_NOTIFICATION,
    *UPS_N_SOP_CLASSES,
    BASIC_GRAYSCALE_PRINT_MANAGEMENT_META,
    BASIC_COLOR_PRINT_MANAGEMENT_META,
    PRINT_JOB,
    BASIC_ANNOTATION_BOX,
    PRINTER_CONFIGURATION_RETRIEVAL,
    PRESENTATION_LUT,
    DISPLAY_SYSTEM,
    RT_CONVENTIONAL_MACHINE_VERIFICATION,
    RT_ION_MACHINE_VERIFICATION,
    MEDIA_CREATION_MANAGEMENT,
    INSTANCE_AVAILABILITY_NOTIFICATION,
    PROCEDURAL_EVENT_LOGGING,
    SUBSTANCE_ADMINISTRATION_LOGGING,
)


def sop_class_name(uid: str) -> str:
    """The standard's name of a UID, or the UID itself when pydicom does not know it."""
    entry = UID_dictionary.get(uid)
    return entry[0] if entry else uid
