// The SIGBUS guard: turns a fault in one of the fixed-width accessors into an error return.
#pragma once

namespace vfio_bridge {

/**
 * InstallFaultGuard - install the process-wide SIGBUS handler (once per process) and make sure the
 * calling thread can receive SIGBUS.
 *
 * The handler resumes a faulting accessor at its fixup; any other SIGBUS goes to the handler that
 * was installed before, or gets the default action.
 */
void InstallFaultGuard();

}  // namespace vfio_bridge
