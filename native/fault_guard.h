// The SIGBUS guard: turns a fault in one of the fixed-width accessors into an error return.
#pragma once

namespace vfio_bridge {

/**
 * AssertFaultGuard - make sure the process-wide SIGBUS handler is the guard.
 *
 * Whatever handler replaced it since (libuv's, for a process.on('SIGBUS') listener) becomes the
 * handler the guard chains to, and the guard is reinstalled. Called whenever a mapping is created,
 * never per access.
 */
void AssertFaultGuard();

/**
 * InstallFaultGuard - assert the process-wide SIGBUS handler (see AssertFaultGuard) and make sure
 * the calling thread can receive SIGBUS.
 *
 * The handler resumes a faulting accessor at its fixup; any other SIGBUS goes to the handler that
 * was installed before, or gets the default action.
 */
void InstallFaultGuard();

}  // namespace vfio_bridge
