"""Header styles of four scanner vendors, per series kind.

The strings follow what these scanners put in their headers (descriptions,
image types, kernels, sequence names). They are synthetic: no real site or
patient data is used.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .types import SeriesKind, Vendor

K = SeriesKind


@dataclass(frozen=True)
class SeriesStyle:
    description: str
    protocol: str
    image_type: tuple[str, ...]
    kernel: str = ""  # CT ConvolutionKernel
    sequence_name: str = ""  # MR
    scanning_sequence: str = "GR"
    sequence_variant: str = "SP"
    scan_options: str = ""
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class VendorStyle:
    vendor: Vendor
    manufacturer_ct: str
    manufacturer_mr: str
    models_ct: tuple[str, ...]
    models_mr: tuple[str, ...]
    software_ct: str
    software_mr: str
    institution: str
    station: str
    charset: str
    ct_signed: bool
    ct_intercept: float
    ct_bits_stored: int
    mr_signed: bool
    mr_bits_stored: int
    images_in_acquisition: bool
    contrast_agent: str
    series: dict  # SeriesKind -> SeriesStyle (format strings: {thk}, {kernel})
    ct_kernels: tuple[tuple[str, ...], tuple[str, ...]]  # (soft, bone)
    mr_field: float = 3.0


def _s(desc, protocol, image_type, **kw):
    return SeriesStyle(desc, protocol, tuple(image_type.split("\\")), **kw)


STYLES: dict[Vendor, VendorStyle] = {
    Vendor.SIEMENS: VendorStyle(
        vendor=Vendor.SIEMENS,
        manufacturer_ct="SIEMENS", manufacturer_mr="SIEMENS",
        models_ct=("SOMATOM Definition AS+", "SOMATOM Force", "SOMATOM go.Top"),
        models_mr=("Prisma_fit", "Skyra", "MAGNETOM Vida"),
        software_ct="syngo CT VA48A", software_mr="syngo MR XA30",
        institution="Universitätsklinikum Phantomstadt", station="CTAWP00001",
        charset="ISO_IR 100", ct_signed=True, ct_intercept=-1024.0, ct_bits_stored=16,
        mr_signed=False, mr_bits_stored=12, images_in_acquisition=True, contrast_agent="Imeron 350",
        ct_kernels=(("Hr38", "H30s", "J40s", "Hr40"), ("Hr64", "H70h", "J70h", "Hr68")),
        series={
            K.NCCT: _s("Kopf {thk} {kernel}", "Kopf_Routine", "ORIGINAL\\PRIMARY\\AXIAL\\CT_SOM5 SPI"),
            K.CT_BONE: _s("Kopf {thk} {kernel} Knochen", "Kopf_Routine", "ORIGINAL\\PRIMARY\\AXIAL\\CT_SOM5 SPI"),
            K.CT_CONTRAST: _s("CTA Kopf {thk} {kernel}", "CTA_Kopf_Hals", "ORIGINAL\\PRIMARY\\AXIAL\\CT_SOM5 SPI"),
            K.LOCALIZER: _s("Topogramm  0.6  T20s", "Kopf_Routine", "ORIGINAL\\PRIMARY\\LOCALIZER\\CT_SOM5 TOP",
                            kernel="T20s"),
            K.SWI: _s("SWI_Images", "t2_swi_tra_p2_1.5mm", "DERIVED\\PRIMARY\\M\\SWI\\NORM\\DIS2D",
                      sequence_name="*swi3d1r", sequence_variant="SP\\OSP", scan_options="PFP"),
            K.SWI_MAG: _s("Mag_Images", "t2_swi_tra_p2_1.5mm", "ORIGINAL\\PRIMARY\\M\\ND\\NORM",
                          sequence_name="*swi3d1r", sequence_variant="SP\\OSP", scan_options="PFP"),
            K.SWI_PHASE: _s("Pha_Images", "t2_swi_tra_p2_1.5mm", "ORIGINAL\\PRIMARY\\P\\ND",
                            sequence_name="*swi3d1r", sequence_variant="SP\\OSP", scan_options="PFP"),
            K.SWI_MINIP: _s("mIP_Images(SW)", "t2_swi_tra_p2_1.5mm", "DERIVED\\PRIMARY\\MNIP\\SWI\\NORM\\DIS2D",
                            sequence_name="*swi3d1r", sequence_variant="SP\\OSP", scan_options="PFP"),
            K.T1: _s("t1_mprage_sag_p2_iso", "t1_mprage_sag_p2_iso", "ORIGINAL\\PRIMARY\\M\\ND\\NORM",
                     sequence_name="*tfl3d1_16ns", scanning_sequence="GR\\IR", sequence_variant="SK\\SP\\MP",
                     scan_options="IR"),
            K.FLAIR: _s("t2_tirm_tra_dark-fluid", "t2_tirm_tra_dark-fluid", "ORIGINAL\\PRIMARY\\M\\ND\\NORM",
                        sequence_name="*tir2d1_16", scanning_sequence="SE\\IR", sequence_variant="SK\\SP\\MP\\OSP",
                        scan_options="IR"),
            (K.LOCALIZER, "MR"): _s("AAHead_Scout_64ch-head-coil", "AAHead_Scout_64ch-head-coil",
                                    "ORIGINAL\\PRIMARY\\M\\NORM\\DIS2D\\LOCALIZER", sequence_name="*fl2d1"),
        },
    ),
    Vendor.GE: VendorStyle(
        vendor=Vendor.GE,
        manufacturer_ct="GE MEDICAL SYSTEMS", manufacturer_mr="GE MEDICAL SYSTEMS",
        models_ct=("Revolution CT", "Discovery CT750 HD", "Optima CT660"),
        models_mr=("SIGNA Premier", "DISCOVERY MR750w", "SIGNA Architect"),
        software_ct="gmp_vct.74", software_mr="29\\LX\\MR Software release:RX29.1_R02",
        institution="PHANTOM GENERAL HOSPITAL", station="CT01_OC0",
        charset="ISO_IR 100", ct_signed=False, ct_intercept=-1024.0, ct_bits_stored=16,
        mr_signed=True, mr_bits_stored=16, images_in_acquisition=True, contrast_agent="OMNIPAQUE 350",
        ct_kernels=(("STANDARD", "SOFT"), ("BONE", "BONEPLUS")),
        series={
            K.NCCT: _s("HEAD {thk}mm {kernel}", "7.1 ROUTINE HEAD", "ORIGINAL\\PRIMARY\\AXIAL"),
            K.CT_BONE: _s("HEAD {thk}mm {kernel}", "7.1 ROUTINE HEAD", "ORIGINAL\\PRIMARY\\AXIAL"),
            K.CT_CONTRAST: _s("CTA HEAD {thk}mm C+", "7.6 CTA HEAD", "ORIGINAL\\PRIMARY\\AXIAL"),
            K.LOCALIZER: _s("Scout", "7.1 ROUTINE HEAD", "ORIGINAL\\PRIMARY\\LOCALIZER"),
            K.SWI: _s("Ax SWAN", "BRAIN SWAN", "ORIGINAL\\PRIMARY\\OTHER", sequence_name="swan",
                      sequence_variant="SS\\SK", scan_options="FAST_GEMS\\EDR_GEMS\\ACC_GEMS"),
            K.SWI_MAG: _s("Ax SWAN Magnitude", "BRAIN SWAN", "ORIGINAL\\PRIMARY\\OTHER", sequence_name="swan",
                          sequence_variant="SS\\SK", scan_options="FAST_GEMS\\EDR_GEMS\\ACC_GEMS"),
            K.SWI_PHASE: _s("Ax SWAN Filt_Phase", "BRAIN SWAN", "ORIGINAL\\PRIMARY\\PHASE", sequence_name="swan",
                            sequence_variant="SS\\SK", scan_options="FAST_GEMS\\EDR_GEMS\\ACC_GEMS"),
            K.SWI_MINIP: _s("Ax SWAN MinIP", "BRAIN SWAN", "DERIVED\\SECONDARY\\REFORMATTED\\MIN IP",
                            sequence_name="swan", sequence_variant="SS\\SK"),
            K.T1: _s("Sag 3D BRAVO", "BRAIN", "ORIGINAL\\PRIMARY\\OTHER", sequence_name="efgre3d",
                     sequence_variant="SS\\SK", scan_options="FAST_GEMS\\EDR_GEMS\\ACC_GEMS\\IR_GEMS"),
            K.FLAIR: _s("Ax T2 FLAIR", "BRAIN", "ORIGINAL\\PRIMARY\\OTHER", sequence_name="fse-xl",
                        scanning_sequence="SE\\IR", sequence_variant="SK\\OSP", scan_options="FAST_GEMS\\IR_GEMS"),
            (K.LOCALIZER, "MR"): _s("3Plane Loc SSFSE", "BRAIN", "ORIGINAL\\PRIMARY\\LOCALIZER",
                                    sequence_name="ssfse", scanning_sequence="SE", sequence_variant="SK"),
        },
    ),
    Vendor.PHILIPS: VendorStyle(
        vendor=Vendor.PHILIPS,
        manufacturer_ct="Philips", manufacturer_mr="Philips Medical Systems",
        models_ct=("iCT 256", "Brilliance 64", "IQon - Spectral CT"),
        models_mr=("Ingenia", "Achieva", "Ingenia Elition X"),
        software_ct="4.1.9.20580", software_mr="5.7.1\\5.7.1.2",
        institution="Phantom Medisch Centrum", station="HOST-PH1",
        charset="ISO_IR 100", ct_signed=False, ct_intercept=-1024.0, ct_bits_stored=12,
        mr_signed=False, mr_bits_stored=12, images_in_acquisition=False, contrast_agent="Iopamiro 370",
        ct_kernels=(("UB", "UC"), ("YC", "D")),
        series={
            K.NCCT: _s("Brain {thk}mm", "Brain (Adult)/Brain", "ORIGINAL\\PRIMARY\\AXIAL"),
            K.CT_BONE: _s("Brain {thk}mm Bone", "Brain (Adult)/Brain", "ORIGINAL\\PRIMARY\\AXIAL"),
            K.CT_CONTRAST: _s("CTA Brain {thk}mm", "CTA (Adult)/Brain CTA", "ORIGINAL\\PRIMARY\\AXIAL"),
            K.LOCALIZER: _s("Surview", "Brain (Adult)/Brain", "ORIGINAL\\PRIMARY\\LOCALIZER"),
            K.SWI: _s("SWIp", "SWIp", "ORIGINAL\\PRIMARY\\M_FFE\\M\\FFE", sequence_name="FFE3D",
                      sequence_variant="SK\\SS", scan_options="FC\\PFP"),
            K.SWI_MAG: _s("SWIp Mag", "SWIp", "ORIGINAL\\PRIMARY\\M_FFE\\M\\FFE", sequence_name="FFE3D",
                          sequence_variant="SK\\SS", scan_options="FC\\PFP"),
            K.SWI_PHASE: _s("SWIp Pha", "SWIp", "ORIGINAL\\PRIMARY\\P_FFE\\P\\FFE", sequence_name="FFE3D",
                            sequence_variant="SK\\SS", scan_options="FC\\PFP"),
            K.SWI_MINIP: _s("mIP SWIp", "SWIp", "DERIVED\\SECONDARY\\MINIP\\M_FFE\\M\\FFE", sequence_name="FFE3D",
                            sequence_variant="SK\\SS", scan_options="FC\\PFP"),
            K.T1: _s("3D T1W TFE", "3D T1W TFE", "ORIGINAL\\PRIMARY\\M_FFE\\M\\FFE", sequence_name="T1TFE3D",
                     sequence_variant="SK\\MTC\\SS", scan_options="FC"),
            K.FLAIR: _s("T2W_FLAIR", "T2W_FLAIR", "ORIGINAL\\PRIMARY\\M_IR\\M\\IR", sequence_name="IRTSE",
                        scanning_sequence="SE\\IR", sequence_variant="SK", scan_options="FC"),
            (K.LOCALIZER, "MR"): _s("SURVEY", "SURVEY", "ORIGINAL\\PRIMARY\\LOCALIZER\\M_FFE\\M\\FFE",
                                    sequence_name="FFE2D"),
        },
    ),
    Vendor.CANON: VendorStyle(
        vendor=Vendor.CANON,
        manufacturer_ct="CANON_MEC", manufacturer_mr="TOSHIBA",
        models_ct=("Aquilion ONE", "Aquilion Prime SP", "Aquilion Lightning"),
        models_mr=("Vantage Orian", "Vantage Galan 3T", "Vantage Titan"),
        software_ct="V10.4", software_mr="V6.0",
        institution="PHANTOM CITY HOSPITAL", station="CANONCT01",
        charset="", ct_signed=True, ct_intercept=0.0, ct_bits_stored=16,
        mr_signed=False, mr_bits_stored=16, images_in_acquisition=False, contrast_agent="Iomeron 350",
        ct_kernels=(("FC21", "FC26", "FC64"), ("FC30", "FC81", "FC35")),
        mr_field=1.5,
        series={
            K.NCCT: _s("HEAD {thk} {kernel}", "HEAD ROUTINE", "ORIGINAL\\PRIMARY\\AXIAL"),
            K.CT_BONE: _s("HEAD {thk} {kernel} BONE", "HEAD ROUTINE", "ORIGINAL\\PRIMARY\\AXIAL"),
            K.CT_CONTRAST: _s("CTA HEAD {thk} {kernel} CE", "CTA HEAD", "ORIGINAL\\PRIMARY\\AXIAL"),
            K.LOCALIZER: _s("Scanogram", "HEAD ROUTINE", "ORIGINAL\\PRIMARY\\LOCALIZER"),
            K.SWI: _s("SWI 3D", "FSBB_SWI", "ORIGINAL\\PRIMARY\\OTHER", sequence_name="FE3D_FSBB",
                      sequence_variant="NONE"),
            K.SWI_MAG: _s("FSBB 3D", "FSBB_SWI", "ORIGINAL\\PRIMARY\\OTHER", sequence_name="FE3D_FSBB",
                          sequence_variant="NONE"),
            K.SWI_PHASE: _s("SWI 3D PHASE", "FSBB_SWI", "ORIGINAL\\PRIMARY\\PHASE", sequence_name="FE3D_FSBB",
                            sequence_variant="NONE"),
            K.SWI_MINIP: _s("SWI 3D MinIP", "FSBB_SWI", "DERIVED\\SECONDARY\\MIN IP", sequence_name="FE3D_FSBB",
                            sequence_variant="NONE"),
            K.T1: _s("3D T1 FFE", "3D_T1", "ORIGINAL\\PRIMARY\\OTHER", sequence_name="FE3D",
                     sequence_variant="NONE"),
            K.FLAIR: _s("FLAIR AX", "FLAIR", "ORIGINAL\\PRIMARY\\OTHER", sequence_name="FSE2D_IR",
                        scanning_sequence="SE\\IR", sequence_variant="NONE"),
            (K.LOCALIZER, "MR"): _s("Locator", "Locator", "ORIGINAL\\PRIMARY\\LOCALIZER", sequence_name="FE2D"),
        },
    ),
}


def style(vendor) -> VendorStyle:
    return STYLES[Vendor(str(vendor).lower() if not isinstance(vendor, Vendor) else vendor)]


def series_style(vendor, kind: SeriesKind, modality: str) -> SeriesStyle:
    st = style(vendor)
    if kind == SeriesKind.LOCALIZER and modality == "MR":
        return st.series[(kind, "MR")]
    return st.series[kind]
