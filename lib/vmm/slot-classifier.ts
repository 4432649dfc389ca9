import type { SlotClassifier } from '../kvm';
import { classifyRange } from '../pci';

/**
 * vfioPciSlotClassifier: how KvmMemoryListener splits vfio-pci flat ranges (lib/pci's mapinfo):
 * the page-aligned middle of a BAR's mmap is `direct` (a slot), a sub-page head or tail is
 * trapped, and everything fd-backed or emulated stays trapped. Other ranges get the default.
 */
export const vfioPciSlotClassifier: SlotClassifier = (r, pageSize) => classifyRange(r, pageSize);
