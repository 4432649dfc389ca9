// A queue from other threads into JavaScript on one environment's event loop, with a time budget.
//
// A thread-safe function would do the delivery, but its dispatcher keeps calling for as long as
// items keep arriving (up to a thousand in one go): a vCPU thread that hands off its next exit as
// soon as the last is answered (a guest writing its console a byte at a time) then holds the loop
// for tens of milliseconds, and timers and I/O wait. Here one uv_async_t delivers in order for at
// most a budget per wake-up and leaves the rest to the loop's next turn.
#pragma once

#include <node_api.h>
#include <uv.h>

#include <cstdint>
#include <mutex>
#include <vector>

namespace vfio_bridge {

/**
 * class LoopQueue - items posted from any thread, delivered on the loop of the environment that
 * opened it. A subclass says what delivering and dropping an item mean, and is freed by its own
 * Closed() once the handle is closed. Open, Ref and Close run on the loop's thread; Post anywhere.
 */
class LoopQueue {
 public:
  virtual ~LoopQueue() = default;

  /**
   * Open - start delivering to @fn on @env's loop, at most @budget_ns of deliveries per wake-up.
   * False (nothing opened) if the environment has no loop.
   */
  bool Open(napi_env env, napi_value fn, const char* resource, uint64_t budget_ns);

  /** Post - queue @item; false (nothing queued) once the queue is closed. */
  bool Post(void* item);

  /** Ref - whether the queue keeps the loop, and the process, alive (it does once opened). */
  void Ref(bool on);

  /** Close - stop delivering; what is still queued is dropped. Idempotent; safe in Deliver. */
  void Close();

  bool closed() const { return closed_; }

 protected:
  /** Deliver - hand @item to JavaScript: call @fn with napi_make_callback under @context. */
  virtual void Deliver(napi_env env, napi_value fn, napi_async_context context, void* item) = 0;
  /** Drop - an item that will never be delivered (closed, or the environment is going). */
  virtual void Drop(void* item) = 0;
  /** Teardown - the environment is going: end whatever posts, then Close(). */
  virtual void Teardown() { Close(); }
  /** Closed - the handle is closed and nothing refers to this any more: free it. */
  virtual void Closed() = 0;

 private:
  static void OnAsync(uv_async_t* async);
  static void OnClose(uv_handle_t* handle);
  static void OnTeardown(napi_async_cleanup_hook_handle, void* arg);

  napi_env env_ = nullptr;
  napi_ref fn_ = nullptr;
  napi_async_context context_ = nullptr;
  napi_async_cleanup_hook_handle hook_ = nullptr;
  uv_async_t async_ = {};
  uint64_t budget_ns_ = 0;
  bool closed_ = false;
  std::mutex mu_;
  std::vector<void*> items_;  // guarded by mu_; delivered up to next_
  size_t next_ = 0;           // guarded by mu_
  bool accepting_ = false;    // guarded by mu_: Post queues only while open
};

}  // namespace vfio_bridge
