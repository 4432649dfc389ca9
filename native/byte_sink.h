// Byte sinks: where a vCPU thread puts the bytes a guest writes to a port that only transmits them
// (a UART's transmit holding register), so that the write needs no JavaScript.
//
// The exit table's sink entries point at one. A vCPU thread appends each byte written there and
// goes back into the guest; the first byte after the sink was last emptied wakes the environment's
// loop once, and JavaScript takes every byte so far in one go. Bytes from several vCPUs keep the
// order they were appended in (one lock). A full sink (JavaScript behind) or a closed one refuses
// the byte, and the vCPU thread hands the write to JavaScript instead, which takes what is in the
// sink before it serves the write: no byte is lost or reordered.
#pragma once

#include <node_api.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

namespace vfio_bridge {

class SinkWaker;

/** class SinkCore - the bytes and the wake-up; shared by the handle and the snapshots using it. */
class SinkCore {
 public:
  /** Append - add @b; false when the sink is full or closed (JavaScript must serve the write). */
  bool Append(uint8_t b);
  /** Take - every byte appended so far, emptying the sink; the next Append wakes the loop again. */
  std::string Take();
  /** Detach - no more wake-ups (the waker is being closed); called on the loop's thread. */
  SinkWaker* Detach();
  void Attach(SinkWaker* w);

  static constexpr size_t kLimit = 64 * 1024;

 private:
  std::mutex mu_;
  std::string bytes_;           // guarded by mu_
  bool woken_ = false;          // guarded by mu_: a wake-up is on its way since the last Take
  SinkWaker* waker_ = nullptr;  // guarded by mu_; nullptr once closed
};

/** GetByteSink - the sink behind a handle from byteSinkOpen (shared), or nullptr after throwing. */
std::shared_ptr<SinkCore> GetByteSink(napi_env env, napi_value value, const char* op);

void RegisterByteSink(napi_env env, napi_value exports);

}  // namespace vfio_bridge
