/**
 * lib/base: what every layer shares and none owns: the package's error class, eventfds and the
 * host page size. lib/vfio and lib/kvm both build on it; neither imports the other.
 */
export { VfioError, closedError, type VfioErrorInit } from './error';
export { EventFd, eventfdSignal } from './eventfd';
export { PAGE_SIZE } from './page';
