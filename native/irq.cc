// Interrupts: eventfds, VFIO_DEVICE_SET_IRQS, and the watcher that delivers eventfd wake-ups into
// the environment's own libuv loop. Each wake-up is drained with one read and handed to JavaScript
// once, as (vector, count); nothing is allocated per interrupt. Which fds, which actions and when
// are decided in lib/vfio.
#include <fcntl.h>
#include <linux/vfio.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <uv.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <list>
#include <string>
#include <vector>

#include "args.h"
#include "async_call.h"
#include "exports.h"
#include "handle.h"
#include "ioctl.h"

namespace vfio_bridge {
namespace {

/** EventfdOpen() - a new non-blocking, close-on-exec eventfd (counter 0) as a handle. */
napi_value EventfdOpen(napi_env env, napi_callback_info) {
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    return ThrowVfioError(env, "eventfd", err, "", ErrorContext{});
  }
  return NewHandle(env, fd, ErrorContext{"eventfd", ""});
}

bool GetFd(napi_env env, napi_value v, int* fd) {
  uint32_t u;
  if (!GetUint32(env, v, "fd", &u)) return false;
  if (u > INT32_MAX) {
    ThrowRangeError(env, "fd " + std::to_string(u) + " is not a file descriptor");
    return false;
  }
  *fd = static_cast<int>(u);
  return true;
}

/** EventfdWrite(fd, value) - add @value (1 .. 2^32-1) to the eventfd's counter: one write(2). */
napi_value EventfdWrite(napi_env env, napi_callback_info info) {
  Args<2> args(env, info);
  int fd;
  uint32_t value;
  if (!GetFd(env, args[0], &fd) || !GetUint32(env, args[1], "value", &value)) return nullptr;
  uint64_t v = value;
  ssize_t n;
  do {
    n = write(fd, &v, sizeof v);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    int err = errno;
    return ThrowVfioError(env, "eventfd write", err, "fd " + std::to_string(fd), ErrorContext{});
  }
  return nullptr;
}

/**
 * DrainFd - read an eventfd's counter, resetting it. @nonblocking: the fd has O_NONBLOCK; otherwise
 * a zero-timeout poll guards the read so a caller's blocking fd can never stall the loop. Returns
 * the count (0: nothing there), or -errno.
 */
int64_t DrainFd(int fd, bool nonblocking) {
  if (!nonblocking) {
    pollfd p = {fd, POLLIN, 0};
    int r;
    do {
      r = poll(&p, 1, 0);
    } while (r < 0 && errno == EINTR);
    if (r < 0) return -errno;
    if (r == 0 || (p.revents & POLLIN) == 0) return 0;
  }
  uint64_t v = 0;
  ssize_t n;
  do {
    n = read(fd, &v, sizeof v);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return errno == EAGAIN ? 0 : -errno;
  if (n != sizeof v) return -EIO;
  return v > INT64_MAX ? INT64_MAX : static_cast<int64_t>(v);
}

bool IsNonblocking(int fd) {
  int fl = fcntl(fd, F_GETFL);
  return fl >= 0 && (fl & O_NONBLOCK) != 0;
}

/** EventfdRead(fd) - drain the counter; 0 when nothing is pending. Never blocks. */
napi_value EventfdRead(napi_env env, napi_callback_info info) {
  Args<1> args(env, info);
  int fd;
  if (!GetFd(env, args[0], &fd)) return nullptr;
  int64_t n = DrainFd(fd, IsNonblocking(fd));
  if (n < 0) {
    return ThrowVfioError(env, "eventfd read", static_cast<int>(-n), "fd " + std::to_string(fd),
                          ErrorContext{});
  }
  napi_value out;
  napi_create_double(env, static_cast<double>(n), &out);
  return out;
}

/** struct IrqSet - one VFIO_DEVICE_SET_IRQS argument, in 8-byte-aligned storage. */
struct IrqSet {
  std::vector<uint64_t> storage;
  vfio_irq_set* get() { return reinterpret_cast<vfio_irq_set*>(storage.data()); }
  /** Detail - what the errors name: the index, the vectors and the flags. */
  std::string Detail() {
    char b[80];
    snprintf(b, sizeof b, "index %u start %u count %u flags 0x%x", get()->index, get()->start,
             get()->count, get()->flags);
    return b;
  }
};

/**
 * ParseIrqSet - the device handle and the argument of (device, index, flags, start, count, data);
 * @data is the raw payload (int32 fds for DATA_EVENTFD, one byte per vector for DATA_BOOL) or
 * undefined. nullptr after throwing.
 */
FdResource* ParseIrqSet(napi_env env, napi_callback_info info, IrqSet* out) {
  Args<6> args(env, info);
  uint32_t index, flags, start, count;
  FdResource* h = GetHandle(env, args[0], "VFIO_DEVICE_SET_IRQS");
  if (h == nullptr || !GetUint32(env, args[1], "index", &index) ||
      !GetUint32(env, args[2], "flags", &flags) || !GetUint32(env, args[3], "start", &start) ||
      !GetUint32(env, args[4], "count", &count)) {
    return nullptr;
  }
  void* data = nullptr;
  size_t length = 0;
  napi_valuetype type;
  napi_typeof(env, args[5], &type);
  if (type != napi_undefined) {
    bool is_typed = false;
    napi_is_typedarray(env, args[5], &is_typed);
    napi_typedarray_type ttype = napi_int8_array;
    if (is_typed) napi_get_typedarray_info(env, args[5], &ttype, &length, &data, nullptr, nullptr);
    if (ttype != napi_uint8_array) {
      ThrowTypeError(env, "VFIO_DEVICE_SET_IRQS: data must be a Uint8Array");
      return nullptr;
    }
  }
  if (length > 65536) {
    ThrowRangeError(env, "VFIO_DEVICE_SET_IRQS: data over 64 KiB");
    return nullptr;
  }
  out->storage.assign((sizeof(vfio_irq_set) + length + 7) / 8, 0);
  vfio_irq_set* set = out->get();
  set->argsz = static_cast<uint32_t>(sizeof(vfio_irq_set) + length);
  set->flags = flags;
  set->index = index;
  set->start = start;
  set->count = count;
  if (length > 0) std::memcpy(set->data, data, length);
  return h;
}

/** SetIrqs(device, index, flags, start, count, data) - VFIO_DEVICE_SET_IRQS (see ParseIrqSet). */
napi_value SetIrqs(napi_env env, napi_callback_info info) {
  IrqSet set;
  FdResource* h = ParseIrqSet(env, info, &set);
  if (h == nullptr) return nullptr;
  int r = Ioctl(h->fd, VFIO_DEVICE_SET_IRQS, set.get());
  if (r < 0) return ThrowErrno(env, "VFIO_DEVICE_SET_IRQS", h, -r, set.Detail());
  return nullptr;
}

/**
 * class SetIrqsCall - VFIO_DEVICE_SET_IRQS on the thread pool, on duplicates of the device fd and
 * of every eventfd in its payload: the kernel takes its own reference to each eventfd, so the
 * caller may close them once the call is queued.
 */
class SetIrqsCall : public BufferIoctlCall {
 public:
  SetIrqsCall(const FdResource* device, std::vector<uint64_t> set, std::string detail)
      : BufferIoctlCall("VFIO_DEVICE_SET_IRQS", device, VFIO_DEVICE_SET_IRQS, std::move(set),
                        std::move(detail)) {}

  bool Prepare(napi_env env, const FdResource* device) {
    if (!BufferIoctlCall::Prepare(env, device)) return false;
    auto* s = static_cast<vfio_irq_set*>(arg());
    if ((s->flags & VFIO_IRQ_SET_DATA_EVENTFD) == 0) return true;
    size_t n = (s->argsz - sizeof(vfio_irq_set)) / sizeof(int32_t);
    for (size_t i = 0; i < n; i++) {
      int32_t fd;
      std::memcpy(&fd, s->data + i * sizeof fd, sizeof fd);
      if (fd < 0) continue;
      OwnedFd& dup = fds_.emplace_back();
      if (!dup.Dup(fd)) {
        int err = errno;
        ThrowVfioError(env, op, err, "duplicating eventfd " + std::to_string(fd), where);
        return false;
      }
      fd = dup.get();
      std::memcpy(s->data + i * sizeof fd, &fd, sizeof fd);
    }
    return true;
  }

  void Run() override {
    BufferIoctlCall::Run();
    fds_.clear();
  }

 private:
  std::list<OwnedFd> fds_;
};

/**
 * SetIrqsAsync(device, index, flags, start, count, data) - SetIrqs on the thread pool, after the
 * device's calls queued in order before it and before those queued after it; a promise.
 */
napi_value SetIrqsAsync(napi_env env, napi_callback_info info) {
  IrqSet set;
  FdResource* h = ParseIrqSet(env, info, &set);
  if (h == nullptr) return nullptr;
  std::string detail = set.Detail();
  auto* call = new SetIrqsCall(h, std::move(set.storage), std::move(detail));
  if (!call->Prepare(env, h)) return Abandon(env, call);
  return QueueInOrder(env, call, h);
}

// ---- the watcher ----------------------------------------------------------------------------

class IrqWatcher;

/** struct Source - one watched eventfd; lives from add() until its poll handle is closed. */
struct Source {
  uv_poll_t poll;
  IrqWatcher* watcher;
  uint32_t vector;
  int fd;
  bool nonblocking;
};

/**
 * IrqWatcher - the uv_poll handles of one interrupt consumer, on the loop of the environment that
 * created it. It keeps its JavaScript external alive while open (an active watcher must not vanish
 * with garbage collection, as Node's own handles do not), and it closes itself at environment
 * teardown through an async cleanup hook, so a worker's loop never closes with our handles open.
 * It is freed once it is closed, every handle's close callback has run, and its external is gone.
 */
class IrqWatcher {
 public:
  napi_env env = nullptr;
  uv_loop_t* loop = nullptr;
  napi_ref callback = nullptr;
  napi_ref self = nullptr;
  napi_async_context context = nullptr;
  napi_async_cleanup_hook_handle hook = nullptr;
  std::vector<Source*> sources;  // by vector; nullptr where none
  bool closed = false;
  bool refed = true;

  bool external_alive = true;
  bool in_callback = false;
  int closing = 0;

  void StartSource(Source* s) {
    uv_poll_start(&s->poll, UV_READABLE, OnReadable);
    if (!refed) uv_unref(reinterpret_cast<uv_handle_t*>(&s->poll));
  }

  void CloseSource(Source* s) {
    // uv_close stops polling and drops the fd from epoll at once, so the caller may close the fd.
    closing++;
    uv_close(reinterpret_cast<uv_handle_t*>(&s->poll), OnClosed);
  }

  /** Close - stop delivery and release the JavaScript references; idempotent. */
  void Close() {
    if (closed) return;
    closed = true;
    for (Source*& s : sources) {
      if (s != nullptr) CloseSource(s);
      s = nullptr;
    }
    // Closed from inside the handler: napi_make_callback is still using the references.
    if (!in_callback) ReleaseJs();
    MaybeFinish();
  }

  void ReleaseJs() {
    if (callback != nullptr) napi_delete_reference(env, callback);
    if (self != nullptr) napi_delete_reference(env, self);
    if (context != nullptr) napi_async_destroy(env, context);
    callback = self = nullptr;
    context = nullptr;
  }

  /** MaybeFinish - once nothing is pending: drop the cleanup hook, and free when unreferenced. */
  void MaybeFinish() {
    if (!closed || closing > 0) return;
    if (hook != nullptr) {
      napi_async_cleanup_hook_handle h = hook;
      hook = nullptr;
      napi_remove_async_cleanup_hook(h);
    }
    if (!external_alive) delete this;
  }

  static void OnClosed(uv_handle_t* handle) {
    auto* s = static_cast<Source*>(handle->data);
    IrqWatcher* w = s->watcher;
    delete s;
    w->closing--;
    w->MaybeFinish();
  }

  static void OnReadable(uv_poll_t* poll, int status, int events) {
    auto* s = static_cast<Source*>(poll->data);
    IrqWatcher* w = s->watcher;
    if (w->closed) return;
    int64_t count = 0;
    if (status == 0 && (events & UV_READABLE) != 0) {
      count = DrainFd(s->fd, s->nonblocking);
      if (count == 0) return;  // another reader got there first
    } else {
      count = -(status < 0 ? -status : EIO);
    }
    w->Deliver(s->vector, count);
  }

  /** Deliver - one call into JavaScript: (vector, count), or (vector, -errno) if the fd failed. */
  void Deliver(uint32_t vector, int64_t count) {
    napi_handle_scope scope;
    if (napi_open_handle_scope(env, &scope) != napi_ok) return;
    napi_value fn, argv[2];
    if (napi_get_reference_value(env, callback, &fn) == napi_ok && fn != nullptr) {
      napi_create_uint32(env, vector, &argv[0]);
      napi_create_double(env, static_cast<double>(count), &argv[1]);
      in_callback = true;
      CallFromLoop(env, context, fn, 2, argv);
      in_callback = false;
    }
    napi_close_handle_scope(env, scope);
    if (closed) ReleaseJs();
  }
};

constexpr napi_type_tag kWatcherTag = {0x7666696f2d697271ULL, 0x2d77617463686572ULL};

void FinalizeWatcher(napi_env, void* data, void*) {
  auto* w = static_cast<IrqWatcher*>(data);
  w->external_alive = false;
  w->Close();
  w->MaybeFinish();
}

void TeardownHook(napi_async_cleanup_hook_handle, void* arg) {
  static_cast<IrqWatcher*>(arg)->Close();
}

IrqWatcher* GetWatcher(napi_env env, napi_value v, bool open) {
  bool tagged = false;
  napi_valuetype type;
  if (napi_typeof(env, v, &type) != napi_ok || type != napi_external ||
      napi_check_object_type_tag(env, v, &kWatcherTag, &tagged) != napi_ok || !tagged) {
    ThrowTypeError(env, "expected an interrupt watcher");
    return nullptr;
  }
  void* data = nullptr;
  napi_get_value_external(env, v, &data);
  auto* w = static_cast<IrqWatcher*>(data);
  if (open && w->closed) {
    ThrowVfioError(env, "irq watcher", 0, "the interrupt watcher is closed", ErrorContext{},
                   "ECLOSED");
    return nullptr;
  }
  return w;
}

/** WatcherOpen(callback) - a watcher on this environment's loop calling @callback(vector, count).
 */
napi_value WatcherOpen(napi_env env, napi_callback_info info) {
  Args<1> args(env, info);
  napi_valuetype type;
  napi_typeof(env, args[0], &type);
  if (type != napi_function)
    return ThrowTypeError(env, "the interrupt callback must be a function");
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
    return ThrowVfioError(env, "napi_get_uv_event_loop", 0, "no event loop", ErrorContext{},
                          "ENOLOOP");
  }
  auto* w = new IrqWatcher();
  w->env = env;
  w->loop = loop;
  napi_value external, name;
  if (napi_create_external(env, w, FinalizeWatcher, nullptr, &external) != napi_ok) {
    delete w;
    return nullptr;
  }
  napi_type_tag_object(env, external, &kWatcherTag);
  napi_create_reference(env, args[0], 1, &w->callback);
  napi_create_reference(env, external, 1, &w->self);
  napi_create_string_utf8(env, "vfio-bridge:interrupt", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, nullptr, name, &w->context);
  napi_add_async_cleanup_hook(env, TeardownHook, w, &w->hook);
  return external;
}

/** WatcherAdd(watcher, vector, fd) - watch @fd for @vector (replacing what watched it before). */
napi_value WatcherAdd(napi_env env, napi_callback_info info) {
  Args<3> args(env, info);
  IrqWatcher* w = GetWatcher(env, args[0], true);
  uint32_t vector;
  int fd;
  if (w == nullptr || !GetUint32(env, args[1], "vector", &vector) || !GetFd(env, args[2], &fd)) {
    return nullptr;
  }
  if (vector > 2047) return ThrowRangeError(env, "vector " + std::to_string(vector) + " > 2047");
  if (fcntl(fd, F_GETFD) < 0) {
    int err = errno;
    return ThrowVfioError(env, "irq watch", err, "fd " + std::to_string(fd), ErrorContext{});
  }
  if (vector >= w->sources.size()) w->sources.resize(vector + 1, nullptr);
  if (w->sources[vector] != nullptr) {
    w->CloseSource(w->sources[vector]);
    w->sources[vector] = nullptr;
  }
  auto* s = new Source();
  s->watcher = w;
  s->vector = vector;
  s->fd = fd;
  s->nonblocking = IsNonblocking(fd);
  int r = uv_poll_init(w->loop, &s->poll, fd);
  if (r != 0) {
    delete s;
    return ThrowVfioError(env, "uv_poll_init", -r, "fd " + std::to_string(fd), ErrorContext{});
  }
  s->poll.data = s;
  w->sources[vector] = s;
  w->StartSource(s);
  return nullptr;
}

/** WatcherRemove(watcher, vector) - stop watching @vector's fd (no-op when none). */
napi_value WatcherRemove(napi_env env, napi_callback_info info) {
  Args<2> args(env, info);
  IrqWatcher* w = GetWatcher(env, args[0], true);
  uint32_t vector;
  if (w == nullptr || !GetUint32(env, args[1], "vector", &vector)) return nullptr;
  if (vector < w->sources.size() && w->sources[vector] != nullptr) {
    w->CloseSource(w->sources[vector]);
    w->sources[vector] = nullptr;
  }
  return nullptr;
}

/** WatcherRef(watcher, on) - whether the watched fds keep the loop (and the process) alive. */
napi_value WatcherRef(napi_env env, napi_callback_info info) {
  Args<2> args(env, info);
  IrqWatcher* w = GetWatcher(env, args[0], true);
  if (w == nullptr) return nullptr;
  bool on = false;
  if (napi_get_value_bool(env, args[1], &on) != napi_ok) {
    return ThrowTypeError(env, "ref: expected a boolean");
  }
  w->refed = on;
  for (Source* s : w->sources) {
    if (s == nullptr) continue;
    auto* h = reinterpret_cast<uv_handle_t*>(&s->poll);
    if (on) {
      uv_ref(h);
    } else {
      uv_unref(h);
    }
  }
  return nullptr;
}

/** WatcherClose(watcher) - stop all delivery; idempotent. */
napi_value WatcherClose(napi_env env, napi_callback_info info) {
  Args<1> args(env, info);
  IrqWatcher* w = GetWatcher(env, args[0], false);
  if (w != nullptr) w->Close();
  return nullptr;
}

// ---- the benchmark's baseline -----------------------------------------------------------------

/**
 * struct Baseline - the least an addon can do to get an eventfd into JavaScript: one uv_poll, one
 * read, one napi_make_callback with no arguments. bench/irq.bench.ts measures the watcher against
 * it.
 */
struct Baseline {
  uv_poll_t poll;
  napi_env env;
  napi_ref callback;
  napi_async_context context;
  int fd;
};

void BaselineReadable(uv_poll_t* poll, int, int) {
  auto* b = static_cast<Baseline*>(poll->data);
  uint64_t v;
  if (read(b->fd, &v, sizeof v) != sizeof v) return;
  napi_handle_scope scope;
  napi_open_handle_scope(b->env, &scope);
  napi_value fn, recv, result;
  napi_get_reference_value(b->env, b->callback, &fn);
  napi_get_global(b->env, &recv);
  napi_make_callback(b->env, b->context, recv, fn, 0, nullptr, &result);
  napi_close_handle_scope(b->env, scope);
}

/** BaselineOpen(fd, callback) - returns a function that stops it. Only for the benchmark. */
napi_value BaselineOpen(napi_env env, napi_callback_info info) {
  Args<2> args(env, info);
  int fd;
  if (!GetFd(env, args[0], &fd)) return nullptr;
  uv_loop_t* loop;
  napi_get_uv_event_loop(env, &loop);
  auto* b = new Baseline();
  b->env = env;
  b->fd = fd;
  napi_value name;
  napi_create_reference(env, args[1], 1, &b->callback);
  napi_create_string_utf8(env, "baseline", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, nullptr, name, &b->context);
  uv_poll_init(loop, &b->poll, fd);
  b->poll.data = b;
  uv_poll_start(&b->poll, UV_READABLE, BaselineReadable);
  napi_value stop;
  napi_create_function(
      env, "stop", NAPI_AUTO_LENGTH,
      [](napi_env e, napi_callback_info i) -> napi_value {
        void* data;
        napi_get_cb_info(e, i, nullptr, nullptr, nullptr, &data);
        auto* base = static_cast<Baseline*>(data);
        if (base->callback == nullptr) return nullptr;
        napi_delete_reference(e, base->callback);
        napi_async_destroy(e, base->context);
        base->callback = nullptr;
        uv_close(reinterpret_cast<uv_handle_t*>(&base->poll),
                 [](uv_handle_t* h) { delete static_cast<Baseline*>(h->data); });
        return nullptr;
      },
      b, &stop);
  return stop;
}

}  // namespace

void RegisterIrq(Napi::Env env, Napi::Object exports) {
  const napi_property_descriptor methods[] = {
      Method("eventfdOpen", EventfdOpen),        Method("eventfdWrite", EventfdWrite),
      Method("eventfdRead", EventfdRead),        Method("vfioSetIrqs", SetIrqs),
      Method("irqWatcherOpen", WatcherOpen),     Method("irqWatcherAdd", WatcherAdd),
      Method("irqWatcherRemove", WatcherRemove), Method("irqWatcherRef", WatcherRef),
      Method("irqWatcherClose", WatcherClose),   Method("irqBaselineOpen", BaselineOpen),
      Method("vfioSetIrqsAsync", SetIrqsAsync),
  };
  DefineMethods(env, exports, methods);
}

}  // namespace vfio_bridge
