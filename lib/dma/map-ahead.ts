/**
 * The RAM that DmaListener.create maps before the listener subscribes: mapped off the event loop,
 * adopted by the listener's first commit where that commit asks the very same mapping, and unmapped
 * where it does not, so that the listener's record stays exact.
 * @internal
 */
import type { AddressSpace, FlatRange } from '../memory';
import type { DmaMapRequest } from '../vfio/dma-types';
import type { DmaContainer } from './listener-types';
import { planSection } from './plan';

/**
 * mapAhead: map the RAM sections already in `space` on the libuv thread pool
 * (`container.mapDmaAsync`), as the listener would plan them, and return what was mapped by
 * section (empty for a container without mapDmaAsync). A section that cannot be mapped rejects
 * with the kernel's error, nothing left mapped.
 */
export async function mapAhead(
  container: DmaContainer,
  space: AddressSpace,
  hostPageSize: number | undefined,
): Promise<Map<FlatRange, DmaMapRequest>> {
  const ahead = new Map<FlatRange, DmaMapRequest>();
  if (typeof container?.mapDmaAsync === 'function') {
    const page = container.iommuInfo().minPageSize;
    const ramPage = Math.max(page, hostPageSize ?? 4096);
    try {
      for (const s of space.flatView.ranges) {
        if (s.kind !== 'ram') continue;
        const req = planSection(s, page, ramPage).req;
        if (req === null) continue;
        await container.mapDmaAsync(req);
        ahead.set(s, req);
      }
    } catch (e) {
      for (const req of ahead.values()) container.unmapDma(req.iova, req.size);
      throw e;
    }
  }
  return ahead;
}

/** Two map requests for the same memory, offset, IOVA, size and rights. */
export function sameRequest(a: DmaMapRequest, b: DmaMapRequest): boolean {
  return (
    a.memory === b.memory &&
    (a.offset ?? 0) === (b.offset ?? 0) &&
    a.iova === b.iova &&
    a.size === b.size &&
    a.read === b.read &&
    a.write === b.write
  );
}

/** unmapUnadopted: unmap, each on its own, what was mapped ahead and the first commit did not adopt. */
export function unmapUnadopted(container: DmaContainer, left: Map<FlatRange, DmaMapRequest>): void {
  for (const req of left.values()) {
    try {
      container.unmapDma(req.iova, req.size);
    } catch {
      // Nothing a caller can do: it was never the listener's, and the container keeps its record.
    }
  }
}
