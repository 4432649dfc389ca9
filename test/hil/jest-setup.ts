// The lab runs under TCG on a shared machine: a worker thread loading the package, or a device
// reset, can take many seconds there. `testTimeout` in a jest project entry is not honoured (it is
// a global option), so the lab's timeout is set here, for the hil project only.
jest.setTimeout(120_000);
