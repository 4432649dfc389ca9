// vCPU threads: one thread per vCPU, created, named and joined here, running KVM_RUN in a loop.
//
// The loop serves what it can itself: an MMIO or port exit that the exit table (exit_table.h) holds
// is one fixed-width access on a mapping, or one pread/pwrite on a device fd, done on this thread
// with no JavaScript. Any other MMIO or port exit is handed to JavaScript on the thread that owns
// the device model, through a loop queue (loop_queue.h): the exit goes into the vCPU's exit record,
// the thread waits, JavaScript serves it and writes the answer, and the thread copies the answer
// into kvm_run and enters the guest again. JavaScript may defer its answer (Defer, during the
// hand-off) and give it later (Answer): the vCPU then waits while the loop goes on, e.g. until the
// memory slots a guest's BAR write changed are in KVM, so that its next access sees them. The queue
// delivers for at most kDeliveryBudgetNs per turn of the loop, so a guest handing off exit after
// exit never holds the loop longer. One vCPU's accesses therefore stay in order, and JavaScript
// handlers never run concurrently: they all run on that one thread, as QEMU's big lock serializes
// its device models.
//
// Control (pause, resume, stop) is a request word the thread reads before every KVM_RUN, plus a
// kick to take it out of KVM_RUN: kvm_run.immediate_exit and the per-thread kick signal, whose
// handler (kvm_vcpu.cc) sets immediate_exit too, so a kick that lands just before KVM_RUN is
// entered is not lost. A thread that parks (paused, or after an exit only JavaScript can decide
// on: shutdown, a system event, an entry failure, a KVM_RUN error) says so with an event, and waits
// until it is resumed or stopped. Stop wakes the thread wherever it waits and joins it.
//
// Events to JavaScript, onEvent(kind, a, b, c, d):
//   0 exit:   serve the exit in the exit record (answer reads at its data field); no arguments.
//   1 parked: a = why (0 asked to, 1 a guest exit now in the exit record, 2 KVM_RUN failed with
//             errno b); d = how many resumes the thread had seen, so that JavaScript can tell a
//             park it has already resumed from.
//   2 fault:  an access served here failed: a = space (0 MMIO, 1 port), b = address, c = size |
//             isWrite << 8, d = errno (0: SIGBUS, the mapping was revoked). The guest read
//             all-ones, or its write was dropped.
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>

#include "accessors.h"
#include "args.h"
#include "exit_table.h"
#include "exports.h"
#include "kvm_vcpu.h"
#include "loop_queue.h"
#include "symbol_versions.h"

namespace vfio_bridge {

/** class VcpuThread - a vCPU's thread and its hand-off state; freed once its queue is closed. */
class VcpuThread : public LoopQueue {
 public:
  enum Request : int { kRun = 0, kPause = 1, kStop = 2 };

  VcpuState* v = nullptr;  // nullptr once joined
  std::shared_ptr<ExitTableCore> table;
  std::atomic<const ExitSnapshot*> hazard{nullptr};
  pthread_t tid = {};
  std::string name;
  int nice = 0;  // applied by the thread to itself (setpriority on its tid)

  std::atomic<int> request{kRun};
  // True while the thread waits in Park (set before it says so, cleared by Resume and Stop): its
  // vCPU is out of KVM_RUN and stays out, so the vCPU's state may be read and written meanwhile.
  std::atomic<bool> parked{false};
  std::mutex mu;
  std::condition_variable cv;
  uint64_t posted = 0;    // hand-offs posted (guarded by mu)
  uint64_t answered = 0;  // hand-offs JavaScript has answered (guarded by mu)
  uint64_t resumes = 0;   // Resume calls so far (guarded by mu): tells a stale `parked` apart
  // Set by Defer while JavaScript serves a hand-off: Deliver then leaves it unanswered, for Answer.
  // Touched on the loop's thread only.
  bool defer = false;

  std::atomic<uint64_t> fast_mmio{0}, fast_pio{0}, handoffs{0}, faults{0}, runs{0};

 protected:
  void Deliver(napi_env env, napi_value fn, napi_async_context context, void* item) override;
  void Drop(void* item) override;
  void Teardown() override;
  void Closed() override { delete this; }
};

namespace {

enum EventKind : uint32_t { kExit = 0, kParked = 1, kFault = 2 };

// How long one turn of the loop may spend serving hand-offs before timers and I/O get theirs: an
// exit served in JavaScript takes tens of microseconds, so a turn still serves dozens.
constexpr uint64_t kDeliveryBudgetNs = 1000 * 1000;

struct Event {
  uint32_t kind;
  double a, b, c, d;
};

// Once the queue is closed nobody listens (the thread is being joined): the event goes.
void Post(VcpuThread* t, Event* e) {
  if (!t->Post(e)) delete e;
}

void Kick(VcpuThread* t) {
  __atomic_store_n(&t->v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
  pthread_kill(t->tid, KickSignal());
}

/** Park - tell JavaScript why, and wait to be resumed. False when stopped instead. */
bool Park(VcpuThread* t, double why, double err) {
  std::unique_lock<std::mutex> lock(t->mu);
  auto generation = static_cast<double>(t->resumes);
  // Not when a resume came first: the wait below ends at once and the thread runs the guest.
  t->parked.store(t->request.load() == VcpuThread::kPause);
  lock.unlock();
  Post(t, new Event{kParked, why, err, 0, generation});
  lock.lock();
  t->cv.wait(lock, [t] { return t->request.load() != VcpuThread::kPause; });
  t->parked.store(false);
  return t->request.load() != VcpuThread::kStop;
}

/** ParkSelf - park after an exit JavaScript must decide on, unless a stop is already asked. */
bool ParkSelf(VcpuThread* t, double why, double err) {
  int expected = VcpuThread::kRun;
  t->request.compare_exchange_strong(expected, VcpuThread::kPause);
  if (t->request.load() == VcpuThread::kStop) return false;
  return Park(t, why, err);
}

/** ServeHere - serve the current MMIO/port exit from the exit table; false: JavaScript must. */
bool ServeHere(VcpuThread* t) {
  VcpuState* v = t->v;
  kvm_run* run = v->run;
  int space;
  uint64_t addr;
  uint32_t size;
  bool is_write;
  uint8_t* data;
  if (run->exit_reason == KVM_EXIT_MMIO) {
    space = kSpaceMmio;
    addr = run->mmio.phys_addr;
    size = run->mmio.len;
    is_write = run->mmio.is_write != 0;
    data = run->mmio.data;
  } else {
    // String I/O (rep ins/outs) is JavaScript's to report.
    if (run->io.count != 1 || run->io.data_offset > v->run_size ||
        run->io.size > v->run_size - run->io.data_offset) {
      return false;
    }
    space = kSpacePio;
    addr = run->io.port;
    size = run->io.size;
    is_write = run->io.direction == KVM_EXIT_IO_OUT;
    // SAFETY: data_offset + size <= run_size was checked above: the data lies in the kvm_run page.
    data = reinterpret_cast<uint8_t*>(run) + run->io.data_offset;
  }
  const ExitSnapshot* s = t->table->Acquire(space, &t->hazard);
  bool fault;
  int err;
  bool served = ServeAccess(s, addr, size, is_write, data, &fault, &err);
  ExitTableCore::Release(&t->hazard);
  if (!served) return false;
  (space == kSpaceMmio ? t->fast_mmio : t->fast_pio).fetch_add(1, std::memory_order_relaxed);
  if (fault || err != 0) {
    t->faults.fetch_add(1, std::memory_order_relaxed);
    Post(t,
         new Event{kFault, static_cast<double>(space), static_cast<double>(addr),
                   static_cast<double>(size | (is_write ? 0x100 : 0)), static_cast<double>(err)});
  }
  return true;
}

/** HandOff - let JavaScript serve the exit; false when stopped while waiting. */
bool HandOff(VcpuThread* t) {
  PublishExit(t->v);
  t->handoffs.fetch_add(1, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(t->mu);
    t->posted++;
  }
  Post(t, nullptr);
  std::unique_lock<std::mutex> lock(t->mu);
  t->cv.wait(lock,
             [t] { return t->answered == t->posted || t->request.load() == VcpuThread::kStop; });
  if (t->request.load() == VcpuThread::kStop) return false;
  lock.unlock();
  CompletePending(t->v);
  return true;
}

void Loop(VcpuThread* t) {
  VcpuState* v = t->v;
  kvm_run* run = v->run;
  for (;;) {
    // Cleared before the request is read: a kick after this point sets it again (see the top).
    __atomic_store_n(&run->immediate_exit, 0, __ATOMIC_SEQ_CST);
    int req = t->request.load();
    if (req == VcpuThread::kStop) return;
    if (req == VcpuThread::kPause) {
      if (!Park(t, 0, 0)) return;
      continue;
    }
    t->runs.fetch_add(1, std::memory_order_relaxed);
    if (ioctl(v->fd, KVM_RUN, 0) < 0) {
      int err = errno;
      if (err == EINTR || err == EAGAIN) continue;  // kicked, or another signal
      if (!ParkSelf(t, 2, err)) return;
      continue;
    }
    switch (run->exit_reason) {
      case KVM_EXIT_MMIO:
      case KVM_EXIT_IO:
        if (t->table && ServeHere(t)) continue;
        if (!HandOff(t)) return;
        continue;
      case KVM_EXIT_INTR:
        continue;
      default:
        PublishExit(v);
        if (!ParkSelf(t, 1, 0)) return;
        continue;
    }
  }
}

void* ThreadMain(void* arg) {
  auto* t = static_cast<VcpuThread*>(arg);
  // A failed setpriority (raising priority without CAP_SYS_NICE) leaves the thread as it was.
  if (t->nice != 0) setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), t->nice);
  SetRunningVcpu(t->v->run);
  if (t->table) t->table->AddReader(&t->hazard);
  Loop(t);
  if (t->table) t->table->RemoveReader(&t->hazard);
  SetRunningVcpu(nullptr);
  return nullptr;
}

napi_value Number(napi_env env, double d) {
  napi_value v;
  napi_create_double(env, d, &v);
  return v;
}

}  // namespace

void VcpuThread::Deliver(napi_env env, napi_value fn, napi_async_context context, void* item) {
  if (item != nullptr) {
    std::unique_ptr<Event> e(static_cast<Event*>(item));
    napi_value argv[5] = {Number(env, e->kind), Number(env, e->a), Number(env, e->b),
                          Number(env, e->c), Number(env, e->d)};
    CallFromLoop(env, context, fn, 5, argv);
    return;
  }
  // A hand-off. The thread may have been stopped since it posted: then nobody waits for it.
  defer = false;
  if (v != nullptr) {
    napi_value argv[1] = {Number(env, kExit)};
    CallFromLoop(env, context, fn, 1, argv);
  }
  if (defer) {
    defer = false;
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    answered = posted;
  }
  cv.notify_all();
}

void VcpuThread::Drop(void* item) { delete static_cast<Event*>(item); }

void VcpuThread::Teardown() {
  // The environment is going: the thread may be waiting for an answer that will never come.
  if (v != nullptr) {
    StopVcpuThread(v);
  } else {
    Close();
  }
}

namespace {

/**
 * Start(vcpu, table, name, onEvent, nice) - start @vcpu's thread, running the guest at once, at
 * nice value @nice (-20..19) relative to nothing: the thread sets it on itself.
 */
napi_value Start(napi_env env, napi_callback_info info) {
  Args<5> args(env, info);
  const char* op = "vCPU thread";
  VcpuState* v = GetVcpu(env, args[0], op);
  if (v == nullptr) return nullptr;
  if (v->thread != nullptr)
    return ThrowVfioError(env, op, EBUSY, "the vCPU already has a thread", v->where);
  std::shared_ptr<ExitTableCore> table;
  napi_valuetype type;
  napi_typeof(env, args[1], &type);
  if (type != napi_null && type != napi_undefined) {
    table = GetExitTable(env, args[1], op);
    if (!table) return nullptr;
  }
  auto t = std::make_unique<VcpuThread>();
  if (!GetString(env, args[2], "name", &t->name)) return nullptr;
  napi_typeof(env, args[3], &type);
  if (type != napi_function) return ThrowTypeError(env, "onEvent must be a function");
  int32_t nice = 0;
  napi_typeof(env, args[4], &type);
  if (type != napi_undefined && napi_get_value_int32(env, args[4], &nice) != napi_ok) {
    return ThrowTypeError(env, "nice must be a number");
  }
  if (nice < -20 || nice > 19)
    return ThrowRangeError(env, "nice " + std::to_string(nice) + " is not in [-20, 19]");
  t->nice = nice;
  t->v = v;
  t->table = std::move(table);
  VcpuThread* raw = t.get();
  if (!raw->Open(env, args[3], "vfio-bridge:vcpu", kDeliveryBudgetNs)) {
    return ThrowVfioError(env, op, 0, "no event loop to deliver its exits on", v->where, "ENOLOOP");
  }
  t.release();  // freed once its queue is closed (Closed)
  // The thread takes only the signals it must: the synchronous faults (SIGBUS for revoked BARs)
  // and its kick. Set here, so no signal can reach it before it runs.
  sigset_t mask, old;
  sigfillset(&mask);
  for (int s : {SIGBUS, SIGSEGV, SIGFPE, SIGILL, SIGTRAP, SIGABRT, KickSignal()})
    sigdelset(&mask, s);
  pthread_sigmask(SIG_SETMASK, &mask, &old);
  int err = pthread_create(&raw->tid, nullptr, ThreadMain, raw);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (err != 0) {
    raw->v = nullptr;
    raw->Close();
    return ThrowVfioError(env, "pthread_create", err, "vCPU thread", v->where);
  }
  pthread_setname_np(raw->tid, raw->name.substr(0, 15).c_str());
  v->thread = raw;
  return nullptr;
}

VcpuThread* GetThread(napi_env env, napi_value value, const char* op) {
  VcpuState* v = GetVcpu(env, value, op);
  if (v == nullptr) return nullptr;
  if (v->thread == nullptr) {
    ThrowVfioError(env, op, 0, "the vCPU has no thread", v->where, "ENOTHREAD");
    return nullptr;
  }
  return v->thread;
}

/** Pause(vcpu) - ask the thread to park; it says so with a `parked` event. */
napi_value Pause(napi_env env, napi_callback_info info) {
  Args<1> args(env, info);
  VcpuThread* t = GetThread(env, args[0], "vCPU pause");
  if (t == nullptr) return nullptr;
  int expected = VcpuThread::kRun;
  if (t->request.compare_exchange_strong(expected, VcpuThread::kPause)) Kick(t);
  return nullptr;
}

/** Resume(vcpu) - let a parked (or parking) thread run the guest again. */
napi_value Resume(napi_env env, napi_callback_info info) {
  Args<1> args(env, info);
  VcpuThread* t = GetThread(env, args[0], "vCPU resume");
  if (t == nullptr) return nullptr;
  {
    std::lock_guard<std::mutex> lock(t->mu);
    int expected = VcpuThread::kPause;
    t->request.compare_exchange_strong(expected, VcpuThread::kRun);
    t->parked.store(false);  // from here on the thread may be back in KVM_RUN
    t->resumes++;
  }
  t->cv.notify_all();
  return nullptr;
}

/**
 * Defer(vcpu) - called while JavaScript serves the thread's hand-off: the vCPU keeps waiting after
 * the handler returns, until Answer.
 */
napi_value Defer(napi_env env, napi_callback_info info) {
  Args<1> args(env, info);
  VcpuThread* t = GetThread(env, args[0], "vCPU defer");
  if (t == nullptr) return nullptr;
  t->defer = true;
  return nullptr;
}

/** Answer(vcpu) - give a deferred hand-off's answer (already in the exit record): the vCPU goes on.
 */
napi_value Answer(napi_env env, napi_callback_info info) {
  Args<1> args(env, info);
  VcpuState* v = GetVcpu(env, args[0], "vCPU answer");
  if (v == nullptr || v->thread == nullptr) return nullptr;  // stopped meanwhile: nobody waits
  VcpuThread* t = v->thread;
  {
    std::lock_guard<std::mutex> lock(t->mu);
    t->answered = t->posted;
  }
  t->cv.notify_all();
  return nullptr;
}

/** Stop(vcpu) - stop and join the thread; idempotent (no thread: nothing to do). */
napi_value Stop(napi_env env, napi_callback_info info) {
  Args<1> args(env, info);
  VcpuState* v = GetVcpu(env, args[0], "vCPU stop");
  if (v != nullptr) StopVcpuThread(v);
  return nullptr;
}

/** Ref(vcpu, ref) - whether the running thread keeps the event loop alive (it does by default). */
napi_value Ref(napi_env env, napi_callback_info info) {
  Args<2> args(env, info);
  VcpuThread* t = GetThread(env, args[0], "vCPU ref");
  bool ref = true;
  if (t == nullptr) return nullptr;
  napi_get_value_bool(env, args[1], &ref);
  t->Ref(ref);
  return nullptr;
}

void SnapshotStats(VcpuThread* t, uint64_t out[5]) {
  out[0] = t->fast_mmio.load();
  out[1] = t->fast_pio.load();
  out[2] = t->handoffs.load();
  out[3] = t->faults.load();
  out[4] = t->runs.load();
}

/** Stats(vcpu) - the thread's counters; with no thread, those of the last one (zeros if none). */
napi_value Stats(napi_env env, napi_callback_info info) {
  Args<1> args(env, info);
  VcpuState* v = GetVcpu(env, args[0], "vCPU stats");
  if (v == nullptr) return nullptr;
  napi_value out;
  uint64_t c[5];
  if (v->thread == nullptr) {
    std::memcpy(c, v->last_stats, sizeof c);
  } else {
    SnapshotStats(v->thread, c);
  }
  napi_create_object(env, &out);
  const char* names[5] = {"mmio", "pio", "handoffs", "faults", "runs"};
  for (int i = 0; i < 5; i++) {
    napi_set_named_property(env, out, names[i], Number(env, static_cast<double>(c[i])));
  }
  return out;
}

}  // namespace

void StopVcpuThread(VcpuState* v) {
  VcpuThread* t = v->thread;
  if (t == nullptr) return;
  {
    std::lock_guard<std::mutex> lock(t->mu);
    t->request.store(VcpuThread::kStop);
    t->parked.store(false);
  }
  t->cv.notify_all();
  Kick(t);
  pthread_join(t->tid, nullptr);
  SnapshotStats(t, v->last_stats);
  // What the queue still holds is dropped; t is freed once the queue's handle is closed.
  t->v = nullptr;
  v->thread = nullptr;
  t->Close();
}

bool VcpuThreadParked(const VcpuThread* t) { return t->parked.load(); }

namespace {

/**
 * ThreadCpuMs() - the calling thread's CPU time in ms (CLOCK_THREAD_CPUTIME_ID): of a stretch of
 * wall time on the main thread, what it ran, beside the vCPU threads that took the CPUs.
 */
napi_value ThreadCpuMs(napi_env env, napi_callback_info) {
  struct timespec ts;
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) {
    int err = errno;
    return ThrowVfioError(env, "clock_gettime", err, "CLOCK_THREAD_CPUTIME_ID", ErrorContext{});
  }
  napi_value out;
  napi_create_double(
      env, static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6, &out);
  return out;
}

}  // namespace

void RegisterVcpuThread(napi_env env, napi_value exports) {
  const napi_property_descriptor methods[] = {
      Method("kvmVcpuStart", Start),      Method("kvmVcpuPause", Pause),
      Method("kvmVcpuResume", Resume),    Method("kvmVcpuStop", Stop),
      Method("kvmVcpuRef", Ref),          Method("kvmVcpuStats", Stats),
      Method("kvmVcpuDefer", Defer),      Method("kvmVcpuAnswer", Answer),
      Method("threadCpuMs", ThreadCpuMs),
  };
  DefineMethods(env, exports, methods);
}

}  // namespace vfio_bridge
