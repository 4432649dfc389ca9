/** The commands that look at or act on one open device: info, mtree, reset, irqs. */

import { Option, type Command } from 'commander';

import { VfioError } from '../../base/native-errors';
import { backendOption, openedBackend, predictedBackend } from '../backend-info';
import { collectInfo, formatInfo } from '../info';
import { writeOutputFile, type CliIo } from '../io';
import { hotReset } from '../hot-reset';
import { WATCHED_IRQS, watchIrqs, type WatchedIrq } from '../irq-watch';
import { buildBus, parseBarPlacement, type BarPlacement } from '../mtree';
import { parseBdf, readDevice, resetMethods } from '../pci-sysfs';
import { renderSvg } from '../svg';
import { collectSysfsInfo, onVfio } from '../sysfs-access';
import { openVfioDevice } from '../vfio-open';
import { isMdevUuid, mdevDevice } from '../../vfio/mdev/sysfs';
import type { SysfsOptions } from '../../vfio/sysfs';
import type { VfioBackendChoice } from '../../vfio/backend';
import { UsageError } from '../errors';
import { parseOffset } from '../region-access';
import { example, jsonOut, parseBdfs } from './common';

/** info, mtree, reset, irqs. */
export function addDeviceCommands(program: Command, io: CliIo, sysfs: SysfsOptions): void {
  example(
    program
      .command('info')
      .description(
        'regions (flags, sizes, sparse mmap areas, MSI-X mappable), capabilities, IRQs, reset; on a ' +
          'device not on vfio-pci, what sysfs tells (regions, capabilities, reset methods) and what needs vfio-pci',
      )
      .argument('<bdf>', 'a device on any driver, or a mediated device UUID')
      .addOption(backendOption())
      .option('--json', 'JSON output (vfio-bridge schema info)'),
    'vfio-bridge info 0000:03:00.0',
    'vfio-bridge info --backend type1 0000:03:00.0',
    'vfio-bridge info --backend iommufd 83b8f4f2-509f-382f-3c1e-e6bfe0fa1001',
  ).action((arg: string, o: { json?: boolean; backend: VfioBackendChoice }) => {
    if (isMdevUuid(arg)) {
      // A mediated device has no PCI sysfs entry: what its driver emulates is read through VFIO.
      const m = mdevDevice(arg, sysfs);
      using v = openVfioDevice(m.uuid, sysfs, o.backend);
      const info = collectInfo(v.device, v.groupNumber, [], m.driver, openedBackend(v.decision));
      if (o.json) jsonOut(io, 'info', { ...info });
      else io.out(formatInfo(info));
      return;
    }
    const bdf = parseBdf(arg);
    const dev = readDevice(bdf, sysfs);
    if (!onVfio(dev)) {
      const info = collectSysfsInfo(dev, sysfs, predictedBackend(o.backend, sysfs));
      if (o.json) jsonOut(io, 'info', { ...info });
      else io.out(formatInfo(info));
      return;
    }
    using v = openVfioDevice(bdf, sysfs, o.backend);
    const info = collectInfo(
      v.device,
      v.groupNumber,
      resetMethods(bdf, sysfs),
      dev.driver,
      openedBackend(v.decision),
    );
    if (o.json) jsonOut(io, 'info', { ...info });
    else io.out(formatInfo(info));
  });

  example(
    program
      .command('mtree')
      .description(
        "build the devices' vfio-pci stacks on one bus and print QEMU's info mtree with the mapinfo column",
      )
      .argument('<bdf...>', 'devices bound to vfio-pci')
      .addOption(backendOption())
      .option(
        '--bar <[bdf/]n=addr>',
        'place BAR n here instead of its host address (repeatable)',
        (v: string, prev: string[]) => [...prev, v],
        [] as string[],
      )
      .option('-f, --flat', 'the flat view (info mtree -f)')
      .option('--svg <file>', 'also draw the address map as SVG')
      .option('--json', 'JSON output (vfio-bridge schema mtree)'),
    'vfio-bridge mtree -f 0000:03:00.0',
    'vfio-bridge mtree 0000:03:00.0 --bar 0=0xfe000000 --svg map.svg',
  ).action(
    (
      args: string[],
      o: { bar: string[]; flat?: boolean; svg?: string; json?: boolean; backend: VfioBackendChoice },
    ) => {
      const bdfs = parseBdfs(args);
      const bars: BarPlacement[] = o.bar.map(parseBarPlacement);
      if (o.svg === '')
        throw new UsageError('--svg needs a file name', `vfio-bridge mtree ${args.join(' ')} --svg map.svg`);
      for (const b of bdfs) readDevice(b, sysfs);
      using built = buildBus(bdfs, bars, sysfs, o.backend);
      let svg: string | null = null;
      if (o.svg !== undefined) {
        svg = renderSvg(built.devices, built.mapinfo);
        writeOutputFile(o.svg, svg, 'the SVG');
      }
      if (o.json) {
        const j = built.bus.mtreeJson();
        jsonOut(io, 'mtree', {
          devices: built.devices,
          memory: j.memory,
          io: j.io,
          mapinfo: j.mapinfo,
          svg: o.svg ?? null,
        });
        return;
      }
      io.out(built.bus.mtree('memory', { flat: o.flat === true }));
      io.out(built.bus.mtree('io', { flat: o.flat === true }));
      if (o.svg !== undefined) io.err(`address map written to ${o.svg}\n`);
    },
  );

  example(
    program
      .command('reset')
      .description(
        'reset a device: its function reset (VFIO_DEVICE_RESET), or --hot for a bus/slot reset that ' +
          'opens every IOMMU group the bus holds',
      )
      .argument('<bdf>', 'a device bound to vfio-pci')
      .addOption(backendOption())
      .option(
        '--hot',
        'hot reset (secondary bus reset) instead of the function reset (type1: it opens groups)',
      )
      .option('--json', 'JSON output (vfio-bridge schema reset)'),
    'vfio-bridge reset 0000:03:00.0',
    'vfio-bridge reset --hot --json 0000:01:00.0',
  ).action((arg: string, o: { hot?: boolean; json?: boolean; backend: VfioBackendChoice }) => {
    const bdf = parseBdf(arg);
    readDevice(bdf, sysfs);
    if (o.hot) {
      if (o.backend === 'iommufd') {
        throw new UsageError(
          '--hot opens every group on the bus: it runs on the type1 backend',
          `vfio-bridge reset --hot ${bdf}`,
        );
      }
      const r = hotReset(bdf, sysfs);
      if (o.json) jsonOut(io, 'reset', { ...r });
      else {
        io.out(`${bdf}: hot reset done\n`);
        for (const d of r.devices) io.out(`  reset with it: ${d.bdf} (group ${d.group})\n`);
      }
      return;
    }
    using v = openVfioDevice(bdf, sysfs, o.backend);
    if (!v.device.info().reset) {
      throw new VfioError({
        message: `${bdf} has no function reset (VFIO_DEVICE_RESET is not offered)`,
        code: 'ENOTSUP',
        op: 'VFIO_DEVICE_RESET',
        bdf,
        hint: `the kernel lists these reset methods: ${resetMethods(bdf, sysfs).join(', ') || 'none'}; a hot reset (--hot) resets the bus`,
      });
    }
    v.device.reset();
    if (o.json) jsonOut(io, 'reset', { bdf, method: 'function' });
    else io.out(`${bdf}: function reset done\n`);
  });

  example(
    program
      .command('irqs')
      .description(
        'IRQ indexes and vector counts; --watch enables the interrupts on the host and prints live ' +
          'counts per vector',
      )
      .argument('<bdf>', 'a device bound to vfio-pci')
      .addOption(backendOption())
      .option('--watch', 'print interrupt counts per vector at each --interval until --samples or Ctrl-C')
      .addOption(
        new Option(
          '--irq <kind>',
          'with --watch: which interrupt to enable (auto: MSI-X, else MSI, else INTx)',
        )
          .choices(WATCHED_IRQS)
          .default('auto'),
      )
      .option('--interval <ms>', 'with --watch: between two samples', '1000')
      .option('--samples <n>', 'with --watch: stop after this many samples')
      .option('--json', 'JSON output (schema irqs; with --watch one line per sample, schema irqs-watch)'),
    'vfio-bridge irqs 0000:03:00.0',
    'vfio-bridge irqs 0000:03:00.0 --watch --interval 500',
    'vfio-bridge irqs 0000:00:05.0 --watch --irq msix --samples 10 --json',
  ).action(
    async (
      arg: string,
      o: {
        watch?: boolean;
        irq: WatchedIrq;
        interval: string;
        samples?: string;
        json?: boolean;
        backend: VfioBackendChoice;
      },
      cmd: Command,
    ) => {
      const bdf = parseBdf(arg);
      // Values first, so a bad one is named as such whether or not --watch was given.
      const intervalMs = parseCount(o.interval, '--interval');
      const samples = o.samples === undefined ? undefined : parseCount(o.samples, '--samples');
      const watchOnly = (['irq', 'interval', 'samples'] as const).filter(
        (k) => cmd.getOptionValueSource(k) === 'cli',
      );
      if (!o.watch && watchOnly.length > 0) {
        throw new UsageError(
          `--${watchOnly[0]} needs --watch`,
          `vfio-bridge irqs ${bdf} --watch --${watchOnly[0]} ...`,
        );
      }
      const dev = readDevice(bdf, sysfs);
      if (o.watch) {
        await watchIrqs(
          bdf,
          io,
          { irq: o.irq, intervalMs, samples, json: o.json === true, signal: io.signal },
          sysfs,
          o.backend,
        );
        return;
      }
      using v = openVfioDevice(bdf, sysfs, o.backend);
      const { irqs } = collectInfo(v.device, v.groupNumber, [], dev.driver, openedBackend(v.decision));
      if (o.json) jsonOut(io, 'irqs', { bdf, irqs });
      else for (const q of irqs) io.out(`${q.name.padEnd(5)} ${q.count} vector${q.count === 1 ? '' : 's'}\n`);
    },
  );
}

/** A whole number of at least 1 (an interval in ms, a sample count). */
function parseCount(arg: string, what: string): number {
  const v = parseOffset(arg, what);
  if (v === 0 || v > 2 ** 31 - 1)
    throw new UsageError(`${what} must be between 1 and ${2 ** 31 - 1}, got ${arg}`);
  return v;
}
