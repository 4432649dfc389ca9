import { native } from '../native';

/** The host page size: the granularity of mappings, KVM memory slots and IOMMU maps. */
export const PAGE_SIZE: number = native.pageSize;
