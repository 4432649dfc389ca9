// Blocking kernel calls run on the libuv thread pool (napi_async_work), each settling a promise.
//
// A call is prepared on the main thread: its arguments are checked exactly as the synchronous
// function checks them (and throw the same errors, at once), and everything the worker needs is
// copied into the call or held by it. The worker runs one ioctl on the call's own fields and
// nothing else. The completion, back on the main thread, builds the result or the error with the
// same helpers the synchronous function uses, so a rejection is the very VfioError (code, errno,
// op, path, bdf, hint) the synchronous function would have thrown.
//
// What a call keeps alive while it runs: the fds it works on are duplicated when it is queued
// (OwnedFd). close() of a handle closes the handle's own descriptor at once; the open file lives on
// in the duplicate until the ioctl has returned (the worker then closes the duplicate), so the
// ioctl can never reach a descriptor number that was closed and reused. A call that works on memory
// references the memory's handle (Hold) until it completes.
//
// Node drains the thread pool work of an environment before its cleanup hooks run, so a worker
// thread that exits with calls in flight waits for their ioctls, and nothing is freed under them.
#pragma once

#include <node_api.h>
#include <unistd.h>

#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <vector>

#include "args.h"
#include "errors.h"
#include "handle.h"
#include "ioctl.h"

namespace vfio_bridge {

/** class OwnedFd - a duplicate of a handle's fd, closed when the call is done with it. */
class OwnedFd {
 public:
  OwnedFd() = default;
  OwnedFd(const OwnedFd&) = delete;
  OwnedFd& operator=(const OwnedFd&) = delete;
  ~OwnedFd() { Close(); }
  /** Dup - duplicate @fd (close-on-exec); false with errno set on failure. */
  bool Dup(int fd);
  int get() const { return fd_; }
  /**
   * Close - close the duplicate now. Run() calls it on the worker: if the handle was closed
   * meanwhile, this is the file's last close, and a device's release (a reset) or a group's (the
   * IOMMU unpinning) then runs there rather than on the main thread.
   */
  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

/**
 * class AsyncCall - one blocking call and the promise it settles. Subclasses own copies of their
 * arguments; the base class carries the operation and the context for its errors.
 */
class AsyncCall {
 public:
  AsyncCall(const char* op, ErrorContext where) : op(op), where(std::move(where)) {}
  virtual ~AsyncCall() = default;

  /** Run - on a thread-pool thread: the blocking call, touching only this object's own fields. */
  virtual void Run() = 0;

  /**
   * Settle - on the main thread: the resolution value, or nullptr after throwing the rejection. By
   * default undefined, or the VfioError for @op when Run() set @err.
   */
  virtual napi_value Settle(napi_env env);

  /** DupFd - duplicate @h's fd into @out; false after throwing @op's error. */
  bool DupFd(napi_env env, const FdResource* h, OwnedFd* out);

  /** Hold - reference the JavaScript @value until the call completes; false after throwing. */
  bool Hold(napi_env env, napi_value value);

  /** Release - drop the references Hold took (the completion calls it). */
  void Release(napi_env env);

  const char* const op;
  const ErrorContext where;
  /** The positive errno Run() ended with, 0 for success (what the default Settle reports). */
  int err = 0;
  napi_async_work work = nullptr;
  napi_deferred deferred = nullptr;
  /** The order the call was queued in (QueueInOrder), or null. */
  std::shared_ptr<CallOrder> order;

 private:
  napi_ref holds_[2] = {nullptr, nullptr};
};

/**
 * class StructIoctlCall - one ioctl, @request with a copy of its argument struct @arg, on a
 * duplicate of a handle's fd; settles with undefined, or with @op's error for the errno. The DMA
 * map of both IOMMU backends is one: it holds the handles of what it maps until it completes.
 */
template <typename T>
class StructIoctlCall : public AsyncCall {
 public:
  StructIoctlCall(const char* op, const FdResource* h, unsigned long request, const T& arg)
      : AsyncCall(op, h->where), request_(request), arg_(arg) {}

  /** Prepare - duplicate @h's fd and hold @first and @second; false after throwing. */
  bool Prepare(napi_env env, const FdResource* h, napi_value first, napi_value second) {
    return DupFd(env, h, &fd_) && Hold(env, first) && Hold(env, second);
  }

  void Run() override {
    int r = Ioctl(fd_.get(), request_, &arg_);
    err = r < 0 ? -r : 0;
    fd_.Close();
  }

 private:
  OwnedFd fd_;
  const unsigned long request_;
  T arg_;
};

/** Undefined - the value a call with no result resolves with. */
napi_value Undefined(napi_env env);

/**
 * class BufferIoctlCall - StructIoctlCall for an argument of variable length: one ioctl, @request
 * with @arg (a copy in 8-byte-aligned storage), on a duplicate of a handle's fd; settles with
 * undefined, or with @op's error for the errno naming @detail (what the synchronous call names).
 */
class BufferIoctlCall : public AsyncCall {
 public:
  BufferIoctlCall(const char* op, const FdResource* h, unsigned long request,
                  std::vector<uint64_t> arg, std::string detail)
      : AsyncCall(op, h->where),
        request_(request),
        arg_(std::move(arg)),
        detail_(std::move(detail)) {}

  /** Prepare - duplicate @h's fd; false after throwing. */
  bool Prepare(napi_env env, const FdResource* h) { return DupFd(env, h, &fd_); }

  void Run() override {
    int r = Ioctl(fd_.get(), request_, arg_.data());
    err = r < 0 ? -r : 0;
    fd_.Close();
  }

  napi_value Settle(napi_env env) override {
    if (err != 0) return ThrowVfioError(env, op, err, detail_, where);
    return Undefined(env);
  }

 protected:
  /** The argument as the ioctl gets it. */
  void* arg() { return arg_.data(); }

 private:
  OwnedFd fd_;
  const unsigned long request_;
  std::vector<uint64_t> arg_;
  const std::string detail_;
};

/**
 * Queue - queue @call on the thread pool; returns its promise, or nullptr after throwing. Takes
 * ownership of @call either way.
 */
napi_value Queue(napi_env env, AsyncCall* call);

/**
 * struct CallOrder - the calls queued in order on one handle. Each goes to the thread pool only
 * once the one before it has settled, so calls whose effect depends on their order (interrupt
 * changes, routing tables that replace each other) reach the kernel in the order JavaScript made
 * them. A waiting call already holds what it needs: its fds were duplicated and its arguments
 * copied when it was queued, so a handle or an eventfd closed meanwhile does not change what it
 * does.
 */
struct CallOrder {
  bool busy = false;
  std::list<AsyncCall*> waiting;
};

/**
 * QueueInOrder - as Queue, behind the calls queued in order on @h before it; returns its promise,
 * or nullptr after throwing. Takes ownership of @call either way.
 */
napi_value QueueInOrder(napi_env env, AsyncCall* call, FdResource* h);

/**
 * Abandon - drop @call that failed to prepare (an exception is pending): its holds are released and
 * it is deleted. Returns nullptr.
 */
napi_value Abandon(napi_env env, AsyncCall* call);

/**
 * QueueOnHandle<Call> - the body of a native function whose one argument is a handle: @Call is made
 * from the handle, takes its dup of the fd in Prepare(env, handle), and is queued in order on the
 * handle (a device's reset comes after the interrupt changes queued before it); returns its
 * promise, or nullptr after throwing @op's error for a handle that is not one or is closed.
 */
template <typename Call>
napi_value QueueOnHandle(napi_env env, napi_callback_info info, const char* op) {
  Args<1> args(env, info);
  FdResource* h = GetHandle(env, args[0], op);
  if (h == nullptr) return nullptr;
  auto* call = new Call(h);
  if (!call->Prepare(env, h)) return Abandon(env, call);
  return QueueInOrder(env, call, h);
}

}  // namespace vfio_bridge
