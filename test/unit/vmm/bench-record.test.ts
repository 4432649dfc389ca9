// bench:vmm's shared reading of the VMM guest's console and of the run records both sides write
// (scripts/vmm/guest-console.ts, run-record.ts, kvm-exit-probe.ts's hist parsing).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  isSummaryLine,
  parseGuestConsole,
  percentile,
  rttStats,
  type TimedLine,
} from '../../../scripts/vmm/guest-console';
import { histDelta, parseHist } from '../../../scripts/vmm/kvm-exit-probe';
import { parseRecord, perPing, readRecord, RecordWriter } from '../../../scripts/vmm/run-record';

const at = (t: number, text: string): TimedLine => ({ t, text });

const CONSOLE: TimedLine[] = [
  at(0.5, 'qemu-system-x86_64: vfio: Cannot reset device 0000:00:04.0, no available reset mechanism.'),
  at(8.1, 'guest: init reached, kernel 6.12.117+deb12-amd64'),
  at(8.2, 'guest: uptime 5.70 at init'),
  at(8.3, 'guest: clock kvm-clock timer lapic'),
  at(9.0, 'guest: driver 0000:00:03.0 0x8086:0x10d3 e1000e'),
  at(9.1, 'guest: driver 0000:00:04.0 0x10ec:0x8139 8139cp'),
  at(9.2, 'guest: drivers bound'),
  at(12.0, 'guest: link eth0 e1000e up'),
  at(12.4, 'guest: first reply eth0 e1000e'),
  at(12.5, 'guest: ping start eth0 e1000e'),
  at(23.0, 'guest: ping done eth0 e1000e'),
  at(24.0, 'guest: ping eth0 PING 10.0.2.2 (10.0.2.2): 56 data bytes'),
  at(24.0, 'guest: ping eth0 64 bytes from 10.0.2.2: seq=0 ttl=255 time=3.000 ms'),
  at(24.0, 'guest: ping eth0 64 bytes from 10.0.2.2: seq=1 ttl=255 time=1.500 ms'),
  at(24.0, 'guest: ping eth0 64 bytes from 10.0.2.2: seq=2 ttl=255 time=2.250 ms'),
  at(24.1, 'guest: ping eth0 --- 10.0.2.2 ping statistics ---'),
  at(24.1, 'guest: ping eth0 3 packets transmitted, 3 packets received, 0% packet loss'),
  at(24.1, 'guest: ping eth0 round-trip min/avg/max = 1.500/2.250/3.000 ms'),
  at(24.2, 'guest: irq eth0  24:        217  PCI-MSIX-0000:00:03.0   0-edge      eth0-rx-0'),
  at(25.0, 'guest: link eth1 8139cp up'),
  at(25.5, 'guest: first reply eth1 8139cp'),
  at(25.6, 'guest: ping start eth1 8139cp'),
  at(30.0, 'guest: ping done eth1 8139cp'),
  at(31.0, 'guest: ping eth1 0 packets transmitted, 0 packets received'),
  at(31.5, 'guest: FAIL link eth2 8139too did not come up'),
  at(32.0, 'guest: done'),
];

describe('the VMM guest console', () => {
  test('markers, round trips and summaries come out with the times they were seen', () => {
    const run = parseGuestConsole(CONSOLE);
    expect(run).toMatchObject({ init: 8.1, bound: 9.2, firstReply: 12.4, end: 32.0 });
    expect(run.kernelStart).toBeCloseTo(2.5, 9);
    expect(run.clock).toBe('clock kvm-clock timer lapic');
    expect(run.drivers).toEqual([
      'driver 0000:00:03.0 0x8086:0x10d3 e1000e',
      'driver 0000:00:04.0 0x10ec:0x8139 8139cp',
    ]);
    expect(run.links).toHaveLength(2);
    expect(run.irqs).toHaveLength(1);
    expect(run.failures).toEqual(['FAIL link eth2 8139too did not come up']);
    expect(run.pings.map((p) => [p.ifc, p.drv, p.start, p.done, p.firstReply])).toEqual([
      ['eth0', 'e1000e', 12.5, 23.0, 12.4],
      ['eth1', '8139cp', 25.6, 30.0, 25.5],
    ]);
    expect(run.pings[0].rtts).toEqual([3, 1.5, 2.25]);
    expect(run.pings[0].summary).toEqual([
      '3 packets transmitted, 3 packets received, 0% packet loss',
      'round-trip min/avg/max = 1.500/2.250/3.000 ms',
    ]);
    expect(run.pings[1].rtts).toEqual([]);
  });

  test('a console without the markers leaves them undefined', () => {
    const run = parseGuestConsole([at(1, 'guest: init reached, kernel x'), at(2, 'random noise')]);
    expect(run.init).toBe(1);
    expect(run.bound).toBeUndefined();
    expect(run.firstReply).toBeUndefined();
    expect(run.kernelStart).toBeUndefined();
    expect(run.pings).toEqual([]);
  });

  test('percentiles take the nearest rank below, as the lab scripts did', () => {
    const v = Array.from({ length: 200 }, (_, i) => i + 1);
    expect(percentile(v, 0.5)).toBe(100);
    expect(percentile(v, 0.99)).toBe(198);
    expect(percentile([7], 0.99)).toBe(7);
    expect(() => percentile([], 0.5)).toThrow(RangeError);
    expect(() => percentile(v, 1.5)).toThrow(RangeError);
    expect(rttStats([3, 1, 2])).toEqual({ n: 3, p50: 2, p99: 2, min: 1, max: 3 });
    expect(rttStats([])).toBeNull();
  });

  test('the short showing keeps drivers, links, summaries, interrupts and failures', () => {
    const kept = CONSOLE.map((l) => l.text).filter(isSummaryLine);
    expect(kept).toEqual([
      'guest: driver 0000:00:03.0 0x8086:0x10d3 e1000e',
      'guest: driver 0000:00:04.0 0x10ec:0x8139 8139cp',
      'guest: drivers bound',
      'guest: link eth0 e1000e up',
      'guest: first reply eth0 e1000e',
      'guest: ping eth0 3 packets transmitted, 3 packets received, 0% packet loss',
      'guest: ping eth0 round-trip min/avg/max = 1.500/2.250/3.000 ms',
      'guest: irq eth0  24:        217  PCI-MSIX-0000:00:03.0   0-edge      eth0-rx-0',
      'guest: link eth1 8139cp up',
      'guest: first reply eth1 8139cp',
      'guest: ping eth1 0 packets transmitted, 0 packets received',
      'guest: FAIL link eth2 8139too did not come up',
    ]);
  });
});

describe('run records', () => {
  // What qemu-baseline.sh writes (printf 't %d.%06d %s'; stats and hist_pairs as " k=v").
  const SHELL = [
    'side QEMU',
    'about QEMU 7.2.22, -accel kvm, times from its exec',
    't 8.100000 guest: init reached, kernel 6.12',
    't 9.200000 guest: drivers bound',
    'counters start eth0 e1000e exits=100 io_exits=50 mmio_exits=0 halt_exits=20 irq_exits=5',
    't 12.500000 guest: ping start eth0 e1000e',
    'counters done eth0 e1000e exits=3100 io_exits=96 mmio_exits=0 halt_exits=620 irq_exits=105 user.2=46 user=46',
    'ports e1000e 0x00000000000003f8=30 0x00000000000003fa=7',
    't 23.000000 guest: ping done eth0 e1000e',
    't 23.500000 ',
    'end qemu exited 0',
    '',
  ].join('\n');

  test('the shell side parses, and counters become per-ping changes', () => {
    const rec = parseRecord(SHELL);
    expect(rec.side).toBe('QEMU');
    expect(rec.startup).toBe(0);
    expect(rec.lines.map((l) => l.t)).toEqual([8.1, 9.2, 12.5, 23.0, 23.5]);
    expect(rec.lines[4].text).toBe('');
    expect(rec.ends).toEqual(['qemu exited 0']);
    expect(rec.ports.get('e1000e')).toEqual([
      ['0x00000000000003f8', 30],
      ['0x00000000000003fa', 7],
    ]);
    const c = rec.counters.get('e1000e')!;
    expect(c.ifc).toBe('eth0');
    expect(perPing(c, 200)).toEqual({
      exits: 15,
      io_exits: 0.23,
      mmio_exits: 0,
      halt_exits: 3,
      irq_exits: 0.5,
      'user.2': 0.23,
      user: 0.23,
    });
    expect(perPing({ start: { exits: 1 } }, 10)).toEqual({});
  });

  test('what the Node side writes reads back the same', () => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'bench-record-')), 'rec');
    const w = new RecordWriter(file, 'Node VMM');
    w.about('PcMachine');
    w.startup(2.5);
    w.line(8.1234, 'guest: init reached\r');
    w.counters('start', 'eth0', 'e1000e', { exits: 1, 'vmm.io': 0 });
    w.counters('done', 'eth0', 'e1000e', { exits: 11, 'vmm.io': 4, 'user.10': 3 });
    w.ports('e1000e', [['0x3f8', 4]]);
    w.end('{"reason":"reset","by":"i8042"}');
    w.flush();
    const rec = readRecord(file);
    expect(rec.side).toBe('Node VMM');
    expect(rec.about).toEqual(['PcMachine']);
    expect(rec.startup).toBe(2.5);
    expect(rec.lines).toEqual([{ t: 8.123, text: 'guest: init reached ' }]);
    expect(perPing(rec.counters.get('e1000e')!, 2)).toEqual({ exits: 5, 'vmm.io': 2, 'user.10': 1.5 });
    expect(rec.ends).toEqual(['{"reason":"reset","by":"i8042"}']);
    fs.rmSync(path.dirname(file), { recursive: true });
  });

  test.each([
    ['about x', "no 'side' line"],
    ['side A\nt abc guest: x', 'does not start with seconds'],
    ['side A\ncounters middle eth0 e1000e exits=1', 'start|done'],
    ['side A\ncounters done eth0 e1000e exits=', 'is not KEY=NUMBER'],
    ['side A\nports e1000e 3f8', 'is not KEY=NUMBER'],
    ['side A\nstartup soon', 'is not seconds'],
    ['side A\nbogus 1', "unknown entry 'bogus'"],
  ])('a malformed record (%j) is a SyntaxError naming the line', (text, msg) => {
    expect(() => parseRecord(text, 'r')).toThrow(SyntaxError);
    expect(() => parseRecord(text, 'r')).toThrow(msg);
  });
});

describe('kvm tracepoint hists', () => {
  test('rows and the total of a hist file', () => {
    const text = [
      '# event histogram',
      '#',
      '# trigger info: hist:keys=reason:vals=hitcount:sort=hitcount.descending:size=2048 [active]',
      '#',
      '',
      '{ reason:         10 } hitcount:        545',
      '{ reason:          2 } hitcount:         46',
      '',
      'Totals:',
      '    Hits: 591',
      '    Entries: 2',
      '    Dropped: 0',
    ].join('\n');
    expect(parseHist(text)).toEqual({
      rows: [
        ['10', 545],
        ['2', 46],
      ],
      hits: 591,
    });
    expect(parseHist('')).toEqual({ rows: [], hits: null });
  });

  test("a ping run's counts are the hist at its done marker less the hist at its start", () => {
    const start = { rows: [['10', 545] as [string, number], ['2', 46] as [string, number]], hits: 591 };
    const done = {
      rows: [['10', 600] as [string, number], ['2', 146] as [string, number], ['9', 3] as [string, number]],
      hits: 749,
    };
    expect(histDelta(start, done)).toEqual({
      rows: [
        ['2', 100],
        ['10', 55],
        ['9', 3],
      ],
      hits: 158,
    });
    // A reason with no new hits is left out, as a hist taken over the run alone would not show it.
    expect(histDelta(done, done)).toEqual({ rows: [], hits: 0 });
    expect(histDelta({ rows: [], hits: null }, { rows: [], hits: null })).toEqual({ rows: [], hits: null });
  });
});
