/**
 * The host page size: the granularity of mappings, KVM memory slots and IOMMU maps. x86-64 Linux
 * has 4 KiB base pages only, so this is a constant rather than the addon's sysconf(_SC_PAGESIZE)
 * (test/native checks the two agree): reading it must not load the addon.
 */
export const PAGE_SIZE: number = 4096;
