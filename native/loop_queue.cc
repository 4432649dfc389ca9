#include "loop_queue.h"

#include <utility>

namespace vfio_bridge {

bool LoopQueue::Open(napi_env env, napi_value fn, const char* resource, uint64_t budget_ns) {
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) return false;
  if (uv_async_init(loop, &async_, OnAsync) != 0) return false;
  async_.data = this;
  env_ = env;
  budget_ns_ = budget_ns;
  napi_create_reference(env, fn, 1, &fn_);
  napi_value name;
  napi_create_string_utf8(env, resource, NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, nullptr, name, &context_);
  napi_add_async_cleanup_hook(env, OnTeardown, this, &hook_);
  std::lock_guard<std::mutex> lock(mu_);
  accepting_ = true;
  return true;
}

bool LoopQueue::Post(void* item) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!accepting_) return false;
    items_.push_back(item);
  }
  // Coalesces: one wake-up for however many posts came before the loop got to it.
  uv_async_send(&async_);
  return true;
}

void LoopQueue::Ref(bool on) {
  if (closed_) return;
  auto* h = reinterpret_cast<uv_handle_t*>(&async_);
  if (on) {
    uv_ref(h);
  } else {
    uv_unref(h);
  }
}

void LoopQueue::Close() {
  if (closed_) return;
  closed_ = true;
  std::vector<void*> left;
  size_t from;
  {
    std::lock_guard<std::mutex> lock(mu_);
    accepting_ = false;
    left.swap(items_);
    from = std::exchange(next_, 0);
  }
  for (size_t i = from; i < left.size(); i++) Drop(left[i]);
  // OnAsync may be on the stack (Close from inside Deliver): it reads closed_ and returns, and the
  // close callback runs on a later turn of the loop, so this object outlives it.
  uv_close(reinterpret_cast<uv_handle_t*>(&async_), OnClose);
}

void LoopQueue::OnAsync(uv_async_t* async) {
  auto* q = static_cast<LoopQueue*>(async->data);
  uint64_t deadline = uv_hrtime() + q->budget_ns_;
  bool first = true;  // a wake-up delivers at least one item, however late it runs
  while (!q->closed_) {
    void* item;
    {
      std::lock_guard<std::mutex> lock(q->mu_);
      if (q->next_ == q->items_.size()) {
        q->items_.clear();  // keeps its capacity: posting allocates only while the queue grows
        q->next_ = 0;
        return;
      }
      if (!first && uv_hrtime() >= deadline) {
        // The rest waits for the loop's next turn: timers and I/O go first.
        uv_async_send(&q->async_);
        return;
      }
      item = q->items_[q->next_++];
    }
    first = false;
    napi_handle_scope scope;
    napi_open_handle_scope(q->env_, &scope);
    napi_value fn = nullptr;
    napi_get_reference_value(q->env_, q->fn_, &fn);
    q->Deliver(q->env_, fn, q->context_, item);
    napi_close_handle_scope(q->env_, scope);
  }
}

void LoopQueue::OnClose(uv_handle_t* handle) {
  auto* q = static_cast<LoopQueue*>(handle->data);
  if (q->fn_ != nullptr) napi_delete_reference(q->env_, q->fn_);
  if (q->context_ != nullptr) napi_async_destroy(q->env_, q->context_);
  napi_async_cleanup_hook_handle hook = std::exchange(q->hook_, nullptr);
  q->Closed();
  // Last: at environment teardown this tells Node the queue is done with the loop.
  if (hook != nullptr) napi_remove_async_cleanup_hook(hook);
}

void LoopQueue::OnTeardown(napi_async_cleanup_hook_handle, void* arg) {
  static_cast<LoopQueue*>(arg)->Teardown();
}

}  // namespace vfio_bridge
