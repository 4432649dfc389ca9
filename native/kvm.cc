// KVM system and VM ioctls: /dev/kvm and the VM fd. Each function is one ioctl on a handle from
// handle.cc; structures that carry policy (GSI routing tables) are laid out in lib/kvm and passed
// as Buffers, so what they mean is decided and tested in TypeScript.
#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "args.h"
#include "async_call.h"
#include "exports.h"
#include "handle.h"
#include "host_memory.h"
#include "ioctl.h"
#include "kvm_vm.h"

// Linux 6.1 headers may predate these; the values are the kernel's uAPI.
#ifndef KVM_DEV_VFIO_FILE
#define KVM_DEV_VFIO_FILE 1
#endif

// The kernel computes these with C's sizeof of the table header (8 bytes). C++ lays out the
// headers' flexible entry array differently (sizeof(kvm_cpuid2) is 12 here), so the system
// headers' macros encode a size the kernel does not recognise; these are the kernel's numbers.
#define VB_KVM_GET_SUPPORTED_CPUID _IOWR(KVMIO, 0x05, __u64)
#define VB_KVM_TABLE_HEADER 8u

namespace vfio_bridge {
namespace {

napi_value Int(napi_env env, int v) {
  napi_value out;
  napi_create_int32(env, v, &out);
  return out;
}

/** GetU64 - a bigint or a safe integer as uint64 (host addresses, datamatch values). */
bool GetU64(napi_env env, napi_value value, const char* what, uint64_t* out) {
  napi_valuetype type;
  napi_typeof(env, value, &type);
  if (type == napi_bigint) {
    bool lossless = false;
    napi_get_value_bigint_uint64(env, value, out, &lossless);
    if (!lossless) {
      ThrowRangeError(env, std::string(what) + " does not fit in 64 bits");
      return false;
    }
    return true;
  }
  return GetSafeInteger(env, value, what, out);
}

napi_value GetApiVersion(napi_env env, napi_callback_info info) {
  return ValueIoctl(env, info, KVM_GET_API_VERSION, "KVM_GET_API_VERSION", nullptr);
}

napi_value CheckExtension(napi_env env, napi_callback_info info) {
  return ValueIoctl(env, info, KVM_CHECK_EXTENSION, "KVM_CHECK_EXTENSION", "argument");
}

napi_value GetVcpuMmapSize(napi_env env, napi_callback_info info) {
  return ValueIoctl(env, info, KVM_GET_VCPU_MMAP_SIZE, "KVM_GET_VCPU_MMAP_SIZE", nullptr);
}

napi_value CreateIrqchip(napi_env env, napi_callback_info info) {
  return ValueIoctl(env, info, KVM_CREATE_IRQCHIP, "KVM_CREATE_IRQCHIP", nullptr);
}

/** VmHandle - the handle of VM fd @fd made on the KVM node at @kvm (it owns @fd from here). */
napi_value VmHandle(napi_env env, int fd, const ErrorContext& kvm) {
  auto* vm = new VmResource();
  vm->fd = fd;
  vm->where = ErrorContext{kvm.path + " vm", ""};
  return WrapHandle(env, vm);
}

/** CreateVm(kvm) - KVM_CREATE_VM with the default machine type; returns the VM's handle. */
napi_value CreateVm(napi_env env, napi_callback_info info) {
  Args<1> args(env, info);
  FdResource* h = GetHandle(env, args[0], "KVM_CREATE_VM");
  if (h == nullptr) return nullptr;
  int fd = IoctlValue(h->fd, KVM_CREATE_VM, 0);
  if (fd < 0) return ThrowErrno(env, "KVM_CREATE_VM", h, -fd);
  return VmHandle(env, fd, h->where);
}

/**
 * class CreateVmCall - KVM_CREATE_VM on the thread pool, on a dup of the KVM fd: a nested KVM takes
 * milliseconds to set up a VM.
 */
class CreateVmCall : public AsyncCall {
 public:
  explicit CreateVmCall(const FdResource* kvm) : AsyncCall("KVM_CREATE_VM", kvm->where) {}
  // A VM whose promise never settled (the environment went away first) is closed here.
  ~CreateVmCall() override {
    if (fd_ >= 0) close(fd_);
  }

  bool Prepare(napi_env env, const FdResource* kvm) { return DupFd(env, kvm, &kvm_); }

  void Run() override {
    int fd = IoctlValue(kvm_.get(), KVM_CREATE_VM, 0);
    if (fd < 0) {
      err = -fd;
    } else {
      fd_ = fd;
    }
    kvm_.Close();
  }

  napi_value Settle(napi_env env) override {
    if (fd_ < 0) return AsyncCall::Settle(env);
    int fd = fd_;
    fd_ = -1;  // the handle owns it now
    return VmHandle(env, fd, where);
  }

 private:
  OwnedFd kvm_;
  int fd_ = -1;
};

/** CreateVmAsync(kvm) - a promise of the VM's handle (KVM_CREATE_VM on the thread pool). */
napi_value CreateVmAsync(napi_env env, napi_callback_info info) {
  return QueueOnHandle<CreateVmCall>(env, info, "KVM_CREATE_VM");
}

/** The header of struct kvm_irq_routing (nr, flags), where its entries start. */
constexpr size_t kRoutingHeader = 8;
/** KVM_SET_GSI_ROUTING: the request number encodes the struct size, which is the kernel's 8. */
constexpr unsigned long kSetGsiRouting = _IOC(_IOC_WRITE, KVMIO, 0x6a, kRoutingHeader);

/** SetTssAddr(vm, addr) - KVM_SET_TSS_ADDR (three pages VMX needs for real mode). */
napi_value SetTssAddr(napi_env env, napi_callback_info info) {
  return ValueIoctl(env, info, KVM_SET_TSS_ADDR, "KVM_SET_TSS_ADDR", "address", false);
}

/**
 * ParseRouting - the VM handle and an aligned copy of the struct kvm_irq_routing built in TS of
 * (vm, table); its entry count in @nr. nullptr after throwing.
 */
FdResource* ParseRouting(napi_env env, napi_callback_info info, std::vector<uint64_t>* out,
                         uint32_t* nr) {
  Args<2> args(env, info);
  FdResource* h = GetHandle(env, args[0], "KVM_SET_GSI_ROUTING");
  if (h == nullptr) return nullptr;
  void* data = nullptr;
  size_t len = 0;
  bool is_buffer = false;
  napi_is_buffer(env, args[1], &is_buffer);
  if (!is_buffer) {
    ThrowTypeError(env, "KVM_SET_GSI_ROUTING expects a Buffer");
    return nullptr;
  }
  napi_get_buffer_info(env, args[1], &data, &len);
  // The entries start at byte 8 as the kernel (C) lays the struct out; C++ sizes the header's empty
  // flexible-array wrapper differently, so sizeof(kvm_irq_routing) is not used here.
  static_assert(sizeof(kvm_irq_routing_entry) == 48, "kvm_irq_routing_entry layout");
  if (len < kRoutingHeader) {
    ThrowRangeError(env, "routing table too short");
    return nullptr;
  }
  std::memcpy(nr, data, sizeof *nr);
  if (len != kRoutingHeader + static_cast<size_t>(*nr) * sizeof(kvm_irq_routing_entry)) {
    ThrowRangeError(env,
                    "routing table length does not match its entry count " + std::to_string(*nr));
    return nullptr;
  }
  // Copied to aligned storage: a Buffer's memory may be a slice at any offset.
  out->assign((len + 7) / 8, 0);
  std::memcpy(out->data(), data, len);
  return h;
}

/** SetGsiRouting(vm, table) - KVM_SET_GSI_ROUTING with a struct kvm_irq_routing built in TS. */
napi_value SetGsiRouting(napi_env env, napi_callback_info info) {
  std::vector<uint64_t> table;
  uint32_t nr;
  FdResource* h = ParseRouting(env, info, &table, &nr);
  if (h == nullptr) return nullptr;
  int r = Ioctl(h->fd, kSetGsiRouting, table.data());
  if (r < 0) return ThrowErrno(env, "KVM_SET_GSI_ROUTING", h, -r, std::to_string(nr) + " routes");
  return nullptr;
}

/**
 * SetGsiRoutingAsync(vm, table) - SetGsiRouting on the thread pool, in order with the VM's other
 * calls queued in order (a later table never goes in before an earlier one); a promise.
 */
napi_value SetGsiRoutingAsync(napi_env env, napi_callback_info info) {
  std::vector<uint64_t> table;
  uint32_t nr;
  FdResource* h = ParseRouting(env, info, &table, &nr);
  if (h == nullptr) return nullptr;
  // KVM waits for an SRCU grace period before the new table is in force: milliseconds nested.
  auto* call = new BufferIoctlCall("KVM_SET_GSI_ROUTING", h, kSetGsiRouting, std::move(table),
                                   std::to_string(nr) + " routes");
  if (!call->Prepare(env, h)) return Abandon(env, call);
  return QueueInOrder(env, call, h);
}

/**
 * Irqfd(vm, fd, gsi, flags, resamplefd) - KVM_IRQFD: assign (flags 0 or KVM_IRQFD_FLAG_RESAMPLE)
 * or deassign (KVM_IRQFD_FLAG_DEASSIGN) eventfd @fd to @gsi.
 */
napi_value Irqfd(napi_env env, napi_callback_info info) {
  Args<5> args(env, info);
  const char* op = "KVM_IRQFD";
  FdResource* h = GetHandle(env, args[0], op);
  kvm_irqfd irqfd = {};
  uint32_t fd, resample;
  if (h == nullptr || !GetUint32(env, args[1], "eventfd", &fd) ||
      !GetUint32(env, args[2], "gsi", &irqfd.gsi) ||
      !GetUint32(env, args[3], "flags", &irqfd.flags) ||
      !GetUint32(env, args[4], "resamplefd", &resample)) {
    return nullptr;
  }
  irqfd.fd = fd;
  irqfd.resamplefd = resample;
  int r = Ioctl(h->fd, KVM_IRQFD, &irqfd);
  if (r < 0) return ThrowErrno(env, op, h, -r, "gsi " + std::to_string(irqfd.gsi));
  return nullptr;
}

/** Ioeventfd(vm, addr, len, fd, flags, datamatch) - KVM_IOEVENTFD. */
napi_value Ioeventfd(napi_env env, napi_callback_info info) {
  Args<6> args(env, info);
  const char* op = "KVM_IOEVENTFD";
  FdResource* h = GetHandle(env, args[0], op);
  kvm_ioeventfd io = {};
  uint64_t addr, datamatch;
  uint32_t fd;
  if (h == nullptr || !GetSafeInteger(env, args[1], "address", &addr) ||
      !GetUint32(env, args[2], "length", &io.len) || !GetUint32(env, args[3], "eventfd", &fd) ||
      !GetUint32(env, args[4], "flags", &io.flags) ||
      !GetU64(env, args[5], "datamatch", &datamatch)) {
    return nullptr;
  }
  io.addr = addr;
  io.fd = static_cast<int32_t>(fd);
  io.datamatch = datamatch;
  int r = Ioctl(h->fd, KVM_IOEVENTFD, &io);
  if (r < 0) return ThrowErrno(env, op, h, -r, "address " + std::to_string(addr));
  return nullptr;
}

/** SignalMsi(vm, addressLo, addressHi, data) - KVM_SIGNAL_MSI; > 0 delivered, 0 blocked. */
napi_value SignalMsi(napi_env env, napi_callback_info info) {
  Args<4> args(env, info);
  const char* op = "KVM_SIGNAL_MSI";
  FdResource* h = GetHandle(env, args[0], op);
  kvm_msi msi = {};
  if (h == nullptr || !GetUint32(env, args[1], "address_lo", &msi.address_lo) ||
      !GetUint32(env, args[2], "address_hi", &msi.address_hi) ||
      !GetUint32(env, args[3], "data", &msi.data)) {
    return nullptr;
  }
  int r = Ioctl(h->fd, KVM_SIGNAL_MSI, &msi);
  if (r < 0) return ThrowErrno(env, op, h, -r);
  return Int(env, r);
}

/** CreateDevice(vm, type) - KVM_CREATE_DEVICE; returns the device's handle. */
napi_value CreateDevice(napi_env env, napi_callback_info info) {
  Args<2> args(env, info);
  const char* op = "KVM_CREATE_DEVICE";
  FdResource* h = GetHandle(env, args[0], op);
  kvm_create_device dev = {};
  if (h == nullptr || !GetUint32(env, args[1], "type", &dev.type)) return nullptr;
  int r = Ioctl(h->fd, KVM_CREATE_DEVICE, &dev);
  if (r < 0) return ThrowErrno(env, op, h, -r, "type " + std::to_string(dev.type));
  return NewHandle(env, static_cast<int>(dev.fd),
                   ErrorContext{h->where.path + " device " + std::to_string(dev.type), ""});
}

/**
 * DeviceAttrFd(device, set, group, attr, fd) - KVM_SET_DEVICE_ATTR (or KVM_HAS_DEVICE_ATTR when
 * @set is false) whose payload is one int fd, as the KVM-VFIO device's file add/del take.
 */
napi_value DeviceAttrFd(napi_env env, napi_callback_info info) {
  Args<5> args(env, info);
  bool set = true;
  napi_get_value_bool(env, args[1], &set);
  const char* op = set ? "KVM_SET_DEVICE_ATTR" : "KVM_HAS_DEVICE_ATTR";
  FdResource* h = GetHandle(env, args[0], op);
  uint32_t group, attr, fd;
  if (h == nullptr || !GetUint32(env, args[2], "group", &group) ||
      !GetUint32(env, args[3], "attr", &attr) || !GetUint32(env, args[4], "fd", &fd)) {
    return nullptr;
  }
  int32_t payload = static_cast<int32_t>(fd);
  kvm_device_attr da = {};
  da.group = group;
  da.attr = attr;
  da.addr = reinterpret_cast<uint64_t>(&payload);
  int r = Ioctl(h->fd, set ? KVM_SET_DEVICE_ATTR : KVM_HAS_DEVICE_ATTR, &da);
  if (r < 0) {
    return ThrowErrno(env, op, h, -r,
                      "group " + std::to_string(group) + " attr " + std::to_string(attr));
  }
  return nullptr;
}

/**
 * DupFd(fd) - a close-on-exec duplicate of @fd as a handle. An irqfd or ioeventfd assignment keeps
 * one: KVM finds the assignment to remove by the eventfd behind an fd, so deassigning must work
 * even after the caller closed its own fd.
 */
napi_value DupFd(napi_env env, napi_callback_info info) {
  Args<1> args(env, info);
  uint32_t fd;
  if (!GetUint32(env, args[0], "fd", &fd)) return nullptr;
  int dup = fcntl(static_cast<int>(fd), F_DUPFD_CLOEXEC, 0);
  if (dup < 0) {
    int err = errno;
    return ThrowVfioError(env, "fcntl(F_DUPFD_CLOEXEC)", err, "fd " + std::to_string(fd),
                          ErrorContext{});
  }
  return NewHandle(env, dup, ErrorContext{"fd " + std::to_string(fd), ""});
}

/** CreatePit2(vm, flags) - KVM_CREATE_PIT2: the in-kernel i8254 timer (ports 0x40-0x43, IRQ 0). */
napi_value CreatePit2(napi_env env, napi_callback_info info) {
  Args<2> args(env, info);
  FdResource* h = GetHandle(env, args[0], "KVM_CREATE_PIT2");
  kvm_pit_config config = {};
  if (h == nullptr || !GetUint32(env, args[1], "flags", &config.flags)) return nullptr;
  int r = Ioctl(h->fd, KVM_CREATE_PIT2, &config);
  if (r < 0) return ThrowErrno(env, "KVM_CREATE_PIT2", h, -r);
  return nullptr;
}

/**
 * IrqLine(vm, irq, level) - KVM_IRQ_LINE_STATUS: set an irqchip input's level; returns the
 * kernel's status (> 0 delivered, 0 coalesced, < 0 masked or ignored).
 */
napi_value IrqLine(napi_env env, napi_callback_info info) {
  Args<3> args(env, info);
  FdResource* h = GetHandle(env, args[0], "KVM_IRQ_LINE_STATUS");
  kvm_irq_level line = {};
  uint32_t level;
  if (h == nullptr || !GetUint32(env, args[1], "irq", &line.irq) ||
      !GetUint32(env, args[2], "level", &level)) {
    return nullptr;
  }
  line.level = level;
  int r = Ioctl(h->fd, KVM_IRQ_LINE_STATUS, &line);
  if (r < 0)
    return ThrowErrno(env, "KVM_IRQ_LINE_STATUS", h, -r, "irq " + std::to_string(line.irq));
  return Int(env, line.status);
}

/**
 * GetSupportedCpuid(kvm) - KVM_GET_SUPPORTED_CPUID: a struct kvm_cpuid2 (nent, then 40-byte
 * entries) with what this KVM and host can give a guest, grown until the kernel's table fits.
 */
napi_value GetSupportedCpuid(napi_env env, napi_callback_info info) {
  Args<1> args(env, info);
  const char* op = "KVM_GET_SUPPORTED_CPUID";
  FdResource* h = GetHandle(env, args[0], op);
  if (h == nullptr) return nullptr;
  for (uint32_t nent = 128; nent <= 4096; nent *= 2) {
    size_t size = VB_KVM_TABLE_HEADER + nent * sizeof(kvm_cpuid_entry2);
    std::vector<uint64_t> storage((size + 7) / 8, 0);
    auto* cpuid = reinterpret_cast<kvm_cpuid2*>(storage.data());
    cpuid->nent = nent;
    int r = Ioctl(h->fd, VB_KVM_GET_SUPPORTED_CPUID, cpuid);
    if (r == -E2BIG) continue;
    if (r < 0) return ThrowErrno(env, op, h, -r);
    size_t used = VB_KVM_TABLE_HEADER + cpuid->nent * sizeof(kvm_cpuid_entry2);
    napi_value out;
    void* data;
    napi_create_buffer_copy(env, used, cpuid, &data, &out);
    return out;
  }
  return ThrowErrno(env, op, h, E2BIG, "more than 4096 entries");
}

}  // namespace

void RegisterKvm(Napi::Env env, Napi::Object exports) {
  const napi_property_descriptor methods[] = {
      Method("kvmGetApiVersion", GetApiVersion),
      Method("kvmCheckExtension", CheckExtension),
      Method("kvmGetVcpuMmapSize", GetVcpuMmapSize),
      Method("kvmCreateVm", CreateVm),
      Method("kvmCreateVmAsync", CreateVmAsync),
      Method("kvmSetTssAddr", SetTssAddr),
      Method("kvmCreateIrqchip", CreateIrqchip),
      Method("kvmCreatePit2", CreatePit2),
      Method("kvmIrqLine", IrqLine),
      Method("kvmGetSupportedCpuid", GetSupportedCpuid),
      Method("kvmSetGsiRouting", SetGsiRouting),
      Method("kvmSetGsiRoutingAsync", SetGsiRoutingAsync),
      Method("kvmIrqfd", Irqfd),
      Method("kvmIoeventfd", Ioeventfd),
      Method("kvmSignalMsi", SignalMsi),
      Method("kvmCreateDevice", CreateDevice),
      Method("kvmDeviceAttrFd", DeviceAttrFd),
      Method("dupFd", DupFd),
  };
  DefineMethods(env, exports, methods);
  RegisterKvmSlots(env, exports);
}

}  // namespace vfio_bridge
