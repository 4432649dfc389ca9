#include "async_call.h"

#include <errno.h>
#include <fcntl.h>

namespace vfio_bridge {
namespace {

void Execute(napi_env, void* data) { static_cast<AsyncCall*>(data)->Run(); }

bool Start(napi_env env, AsyncCall* call);

/** ThrowStartFailed - after Start() failed: its exception, or EAGAIN when N-API left none. */
void ThrowStartFailed(napi_env env, const ErrorContext& where) {
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (!pending) ThrowVfioError(env, "napi_queue_async_work", EAGAIN, "", where);
}

void StartNext(napi_env env, CallOrder* order);

void Complete(napi_env env, napi_status status, void* data) {
  auto* call = static_cast<AsyncCall*>(data);
  napi_value value = nullptr;
  if (status == napi_ok) {
    value = call->Settle(env);
  } else {
    // Cancelled before it ran: only when the environment is torn down with the call still queued.
    ThrowVfioError(env, call->op, ECANCELED, "the environment is shutting down", call->where);
  }
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (pending) {
    napi_value error;
    napi_get_and_clear_last_exception(env, &error);
    napi_reject_deferred(env, call->deferred, error);
  } else {
    napi_resolve_deferred(env, call->deferred, value != nullptr ? value : Undefined(env));
  }
  // While the environment shuts down no promise can settle and nothing above can call into
  // JavaScript; the N-API calls fail quietly, and the holds are still given back here.
  call->Release(env);
  napi_delete_async_work(env, call->work);
  std::shared_ptr<CallOrder> order = std::move(call->order);
  delete call;
  if (order != nullptr) StartNext(env, order.get());
}

/** Start - put @call's work on the thread pool; false (its work freed) if that failed. */
bool Start(napi_env env, AsyncCall* call) {
  napi_value name;
  if (napi_create_string_utf8(env, call->op, NAPI_AUTO_LENGTH, &name) == napi_ok &&
      napi_create_async_work(env, nullptr, name, Execute, Complete, call, &call->work) == napi_ok &&
      napi_queue_async_work(env, call->work) == napi_ok) {
    return true;
  }
  if (call->work != nullptr) napi_delete_async_work(env, call->work);
  call->work = nullptr;
  return false;
}

/** StartNext - start the first waiting call of @order; one that cannot start is rejected. */
void StartNext(napi_env env, CallOrder* order) {
  while (!order->waiting.empty()) {
    AsyncCall* next = order->waiting.front();
    order->waiting.pop_front();
    if (Start(env, next)) return;
    ThrowStartFailed(env, next->where);
    napi_value error;
    napi_get_and_clear_last_exception(env, &error);
    napi_reject_deferred(env, next->deferred, error);
    next->order.reset();
    Abandon(env, next);
  }
  order->busy = false;
}

/** MakePromise - make @call's promise; false (nothing made) if that failed. */
bool MakePromise(napi_env env, AsyncCall* call, napi_value* promise) {
  return napi_create_promise(env, &call->deferred, promise) == napi_ok;
}

}  // namespace

bool OwnedFd::Dup(int fd) {
  fd_ = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  return fd_ >= 0;
}

bool AsyncCall::DupFd(napi_env env, const FdResource* h, OwnedFd* out) {
  if (out->Dup(h->fd)) return true;
  int err = errno;
  ThrowVfioError(env, op, err, "duplicating the fd for the thread pool", h->where);
  return false;
}

napi_value AsyncCall::Settle(napi_env env) {
  if (err != 0) return ThrowVfioError(env, op, err, "", where);
  return Undefined(env);
}

bool AsyncCall::Hold(napi_env env, napi_value value) {
  for (napi_ref& ref : holds_) {
    if (ref != nullptr) continue;
    if (napi_create_reference(env, value, 1, &ref) == napi_ok) return true;
    break;
  }
  ThrowTypeError(env, std::string(op) + ": cannot hold an argument for the thread pool");
  return false;
}

void AsyncCall::Release(napi_env env) {
  for (napi_ref& ref : holds_) {
    if (ref != nullptr) napi_delete_reference(env, ref);
    ref = nullptr;
  }
}

napi_value Abandon(napi_env env, AsyncCall* call) {
  call->Release(env);
  delete call;
  return nullptr;
}

napi_value Undefined(napi_env env) {
  napi_value v;
  napi_get_undefined(env, &v);
  return v;
}

napi_value Queue(napi_env env, AsyncCall* call) {
  napi_value promise;
  if (!MakePromise(env, call, &promise)) return Abandon(env, call);
  if (!Start(env, call)) {
    // The promise is dropped unsettled: the caller gets the exception instead.
    Abandon(env, call);
    ThrowStartFailed(env, ErrorContext{});
    return nullptr;
  }
  return promise;
}

napi_value QueueInOrder(napi_env env, AsyncCall* call, FdResource* h) {
  if (h->order == nullptr) h->order = std::make_shared<CallOrder>();
  if (!h->order->busy) {
    h->order->busy = true;
    call->order = h->order;
    napi_value promise = Queue(env, call);
    if (promise == nullptr) h->order->busy = false;
    return promise;
  }
  napi_value promise;
  if (!MakePromise(env, call, &promise)) return Abandon(env, call);
  call->order = h->order;
  h->order->waiting.push_back(call);
  return promise;
}

}  // namespace vfio_bridge
