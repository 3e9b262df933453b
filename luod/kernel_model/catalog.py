"""Every format `compatible` string the model implements, and the layer it belongs to.

A kernel image may only name formats listed here: each one has a writer and a reader in
the model (KHO memory maps in `kho.formats`, LUO roots in `luo.serialize`, file records
in the file-type packages that `filetypes` lists). A layer is what negotiation picks one
format for: the KHO root, the LUO root, each file type, each FLB.
"""

from __future__ import annotations

KHO = "kho"
LUO = "luo"

FORMAT_LAYERS: dict[str, str] = {
    "kho-v1": KHO,
    "kho-v2": KHO,
    "luo-v1": LUO,
    "luo-v2": LUO,
    "memfd-v1": "memfd",
    "memfd-v2": "memfd",
    "memfd-v3": "memfd",
    "hugetlb-memfd-v1": "memfd-hugetlb",
    "kvm_vm_luo_v1": "kvm-vm",
    "guest_memfd_luo_v1": "guest_memfd",
    "hugetlb-v1": "flb:hugetlb",
    "iommufd-v1": "iommufd",
    "vfio-pci-v1": "vfio-pci",
    "iommu-core-v1": "flb:iommu-core",
    "pci-v1": "flb:pci",
}


def layer_of(compatible: str) -> str | None:
    return FORMAT_LAYERS.get(compatible)
