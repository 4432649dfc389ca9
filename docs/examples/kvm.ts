import {
  Device,
  ExitTable,
  ExitTableListener,
  GuestRam,
  Kvm,
  KvmMemoryListener,
  SystemAddressSpaces,
  VcpuSet,
  VfioPciDevice,
  vfioPciSlotClassifier,
} from 'vfio-bridge';

using ram = GuestRam.create(64 * 2 ** 20); // guest RAM at guest address 0
const bus = new SystemAddressSpaces();
const nic = VfioPciDevice.openByBdf(bus, '0000:00:05.0');

using kvm = Kvm.open(); // ENOENT/EACCES with a hint, EVERSION, ENOCAP naming the missing capability
using vm = kvm.createVm();
vm.createIrqchip();
vm.addSlot({ guestAddress: 0, size: ram.length, memory: ram }); // a GuestRam or a Mapping: the slot pins its pages
bus.memory.addMemoryListener(new KvmMemoryListener(vm, { classify: vfioPciSlotClassifier })); // `direct` BAR pieces become slots
const vcpu = vm.createVcpu();
// ... load a guest into `ram` and set the vCPU's registers (vcpu.setRegs, vcpu.setSregs) ...

using table = new ExitTable(); // what the vCPU threads serve without JavaScript
const deviceOf = (bdf: string) => (bdf === nic.bdf && nic.device instanceof Device ? nic.device : null);
bus.memory.addMemoryListener(new ExitTableListener(table, 'mmio', deviceOf)); // trapped BAR ranges
bus.io.addMemoryListener(new ExitTableListener(table, 'pio', deviceOf));
const set = new VcpuSet([vcpu], { routing: { memory: bus.memory, io: bus.io }, table });
const end = await set.run({ timeoutMs: 10_000 }); // each vCPU on its own thread; the loop stays free
console.log(end.reason);
set.stop(); // joins the threads
nic.close();
