// Scratch: where PcMachine.create and close spend their time (not committed).
'use strict';
const path = require('node:path');
const fs = require('node:fs');
const d = (p) => require(path.join(__dirname, '../../dist', p));
const times = [];
function wrap(mod, name, label) {
  const orig = mod[name];
  mod[name] = function (...a) {
    const t = performance.now();
    try {
      return orig.apply(this, a);
    } finally {
      times.push([label ?? name, performance.now() - t]);
    }
  };
}
function wrapProto(cls, name, label) {
  const orig = cls.prototype[name];
  cls.prototype[name] = function (...a) {
    const t = performance.now();
    try {
      return orig.apply(this, a);
    } finally {
      times.push([label ?? name, performance.now() - t]);
    }
  };
}
const listener = d('dma/listener');
const machine = d('dma/machine');
wrap(machine.Machine, 'create', 'Machine.create');
wrapProto(machine.Machine, 'addDevice', 'Machine.addDevice');
wrap(d('vmm/bar-placement'), 'placeBars');
wrap(d('vmm/pc-boot'), 'startBoot');
wrap(d('vmm/boot/load-linux'), 'loadLinux');
wrap(d('vmm/pc-options'), 'checkPcOptions');
wrap(d('kvm/kvm').Kvm, 'open', 'Kvm.open');
wrap(d('pci/device').VfioPciDevice, 'openByBdf', 'VfioPciDevice.openByBdf');
wrap(d('pci/device').VfioPciDevice, 'open', 'VfioPciDevice.open');
wrapProto(d('vfio/container').Container, 'mapDma', 'Container.mapDma');
wrapProto(d('vfio/container').Container, 'unmapDma', 'Container.unmapDma');
wrapProto(d('pci/device').VfioPciDevice, 'reset', 'VfioPciDevice.reset');
wrapProto(d('pci/device').VfioPciDevice, 'close', 'VfioPciDevice.close');
wrap(d('dma/guest-ram').GuestRam, 'create', 'GuestRam.create');
const { PcMachine } = d('index');
const bdf = (role) => new RegExp(`${role}=([0-9a-f:.]+)`).exec(process.env.VFIO_BRIDGE_HIL_DEVICES)[1];
fs.writeFileSync('/proc/sys/vm/nr_hugepages', '140');
for (const huge of [true, false]) {
  times.length = 0;
  let t = performance.now();
  const pc = PcMachine.create({
    kernel: process.env.VFIO_BRIDGE_VMM_KERNEL,
    initrd: process.env.VFIO_BRIDGE_VMM_INITRD,
    hugepages: huge,
    devices: [{ bdf: bdf('e1000e') }, { bdf: bdf('rtl8139') }],
  });
  const create = performance.now() - t;
  t = performance.now();
  pc.close();
  const close = performance.now() - t;
  console.log(`hugepages ${huge}: create ${create.toFixed(1)} ms, close ${close.toFixed(1)} ms`);
  const agg = new Map();
  for (const [k, v] of times) {
    const a = agg.get(k) ?? [0, 0, 0];
    a[0] += v;
    a[1]++;
    a[2] = Math.max(a[2], v);
    agg.set(k, a);
  }
  for (const [k, [sum, n, max]] of [...agg].sort((a, b) => b[1][0] - a[1][0]))
    console.log(`  ${k.padEnd(28)} ${sum.toFixed(1).padStart(8)} ms  x${n}  max ${max.toFixed(1)} ms`);
}
