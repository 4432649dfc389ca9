/**
 * lib/base: what every layer shares and none owns: the package's error class, eventfds and the
 * host page size. lib/vfio and lib/kvm both build on it; neither imports the other.
 */
export {
  ArgRangeError,
  ArgTypeError,
  KvmError,
  VfioBridgeError,
  VfioError,
  closedError,
  type ClosedAt,
  type VfioBridgeErrorInit,
  type VfioErrorInit,
} from './error';
// Loading lib/base registers the addon's error factory (set when the addon loads), so every
// layer's native failures are VfioErrors or KvmErrors with their hints, whichever layer was loaded first.
export { errnoName, hintFor, memlockHint, memlockLimitText, type HintContext } from './native-errors';
export { EventFd, eventfdSignal } from './eventfd';
export { PAGE_SIZE } from './page';
export {
  forwardGuestErrors,
  GuestErrorSink,
  type GuestError,
  type GuestErrorAction,
  type GuestErrorEvents,
  type GuestErrorSinkOptions,
  type GuestErrorSource,
} from './guest-error';
