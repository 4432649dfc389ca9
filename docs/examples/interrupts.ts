import {
  Container,
  EventFd,
  Group,
  Kvm,
  VFIO_PCI_INTX_IRQ_INDEX,
  VFIO_PCI_MSIX_IRQ_INDEX,
} from 'vfio-bridge';

const bdf = '0000:00:05.0';
using container = Container.open();
using group = Group.openByBdf(bdf);
group.setContainer(container);
container.setIommu();
using dev = group.openDevice(bdf);
const inject = (vector: number, count: number) => console.log(`vector ${vector}: ${count}`);

// Into JavaScript: an 'interrupt' event per wake-up, with the vector and how many it coalesced.
const msix = dev.enableIrq(VFIO_PCI_MSIX_IRQ_INDEX, { vectors: 3 });
msix.on('interrupt', (vector, count) => inject(vector, count)); // the first listener starts watching
msix.on('error', (e, vector) => console.error(`vector ${vector}: ${e.message}`)); // the host's, never the guest's
msix.resize(5); // grows in place where the kernel allows (MSI-X without NORESIZE), else re-enables
msix.unref(); // interrupts no longer keep the process alive (ref() by default)
msix.close(); // disables the index, stops delivery, closes the eventfds it created

// Straight into KVM, no JavaScript per interrupt: bring your own eventfds, or take the raw fds.
using kvm = Kvm.open();
using vm = kvm.createVm();
vm.createIrqchip();
const gsi = 10; // an IOAPIC input
using trigger = EventFd.open();
using resample = EventFd.open();
using intx = dev.enableIrq(VFIO_PCI_INTX_IRQ_INDEX, { eventfds: [trigger], resample });
vm.irqfd(trigger, gsi, { resample }); // lib/kvm: KVM_IRQFD with KVM_IRQFD_FLAG_RESAMPLE (PciIntxRouting does this)
console.log(`INTx on GSI ${gsi}: trigger fd ${intx.fds[0]}, unmask fd ${intx.resampleFd}`);
