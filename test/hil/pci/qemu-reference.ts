import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** One line of a QEMU `info mtree -f` flat view. */
export interface QemuFlatLine {
  start: number;
  end: number;
  priority: number;
  kind: string;
  name: string;
  /** The `@offset` QEMU prints when the range starts inside its region. */
  offsetInRegion: number;
}

/** Parses the flat view of address space `as` out of `info mtree -f` output. */
export function parseFlatView(text: string, as: string): QemuFlatLine[] {
  const out: QemuFlatLine[] = [];
  let inView = false;
  let header = false;
  for (const raw of text.split(/\r?\n/)) {
    if (raw.startsWith('FlatView #')) {
      inView = false;
      header = true;
      continue;
    }
    if (header && raw.startsWith(' AS "')) {
      if (raw.startsWith(` AS "${as}"`)) inView = true;
      continue;
    }
    if (raw.startsWith(' Root memory region')) {
      header = false;
      continue;
    }
    if (!inView) continue;
    const m =
      /^\s+([0-9a-f]+)-([0-9a-f]+) \(prio (-?\d+), ([\w/-]+)\): (.*?)(?: @([0-9a-f]+))?(?: KVM)?$/.exec(raw);
    if (!m) continue;
    out.push({
      start: parseInt(m[1], 16),
      end: parseInt(m[2], 16),
      priority: Number(m[3]),
      kind: m[4],
      name: m[5],
      offsetInRegion: m[6] ? parseInt(m[6], 16) : 0,
    });
  }
  return out;
}

/** A line-oriented reader over a socket; waiting readers fail when the socket ends. */
class Lines {
  #buf = '';
  #waiters: { resolve: (line: string) => void; reject: (e: Error) => void }[] = [];
  #lines: string[] = [];
  #ended: Error | null = null;
  constructor(
    readonly sock: Socket,
    why: () => string,
  ) {
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      this.#buf += d;
      let i: number;
      while ((i = this.#buf.indexOf('\n')) >= 0) {
        const line = this.#buf.slice(0, i);
        this.#buf = this.#buf.slice(i + 1);
        const w = this.#waiters.shift();
        if (w) w.resolve(line);
        else this.#lines.push(line);
      }
    });
    const end = (e?: Error): void => {
      this.#ended ??= new Error(`QEMU closed the qtest connection${e ? ` (${e.message})` : ''}: ${why()}`);
      for (const w of this.#waiters.splice(0)) w.reject(this.#ended);
    };
    sock.on('error', end);
    sock.on('close', () => end());
  }
  next(): Promise<string> {
    const l = this.#lines.shift();
    if (l !== undefined) return Promise.resolve(l);
    if (this.#ended) return Promise.reject(this.#ended);
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }
}

/**
 * QemuReference: QEMU (the host's qemu-system-x86_64), its CPU stopped, with the lab devices
 * assigned through its own vfio-pci. Config cycles go through the qtest protocol on ports
 * 0xcf8/0xcfc; `info mtree -f` comes from an HMP monitor socket.
 */
export class QemuReference {
  #proc: ChildProcess;
  #dir: string;
  #qtest!: Lines;
  #server: Server;
  #stderr = '';

  private constructor(proc: ChildProcess, dir: string, server: Server) {
    this.#proc = proc;
    this.#dir = dir;
    this.#server = server;
    proc.stderr?.setEncoding('utf8');
    proc.stderr?.on('data', (d: string) => (this.#stderr += d));
  }

  /** Starts QEMU with `devices` (`-device` values, e.g. "vfio-pci,host=0000:00:05.0,addr=05.0"). */
  static async start(
    devices: string[],
    qemu = 'qemu-system-x86_64',
    timeoutMs = 120_000,
  ): Promise<QemuReference> {
    const dir = mkdtempSync(join(tmpdir(), 'vfio-bridge-qemu-'));
    const qsock = join(dir, 'qtest.sock');
    const server = createServer();
    const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve));
    await new Promise<void>((resolve) => server.listen(qsock, resolve));
    // -S keeps the CPU stopped: firmware never runs, so nothing but the qtest commands programs the
    // BARs (this QEMU build offers no qtest accelerator to ask for explicitly).
    const args = [
      '-S',
      '-machine',
      'q35',
      '-nodefaults',
      '-display',
      'none',
      '-m',
      '256',
      '-qtest-log',
      '/dev/null',
    ];
    args.push('-qtest', `unix:${qsock}`, '-monitor', `unix:${join(dir, 'hmp.sock')},server=on,wait=off`);
    for (const d of devices) args.push('-device', d);
    const proc = spawn(qemu, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    const ref = new QemuReference(proc, dir, server);
    const exited = new Promise<never>((_, reject) =>
      proc.once('exit', (code) =>
        reject(new Error(`QEMU exited (${code}) before connecting: ${ref.#stderr}`)),
      ),
    );
    // Once connected, a later exit is reported by the qtest connection closing instead.
    exited.catch(() => undefined);
    let timer: NodeJS.Timeout | undefined;
    const slow = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`QEMU did not connect within ${timeoutMs} ms: ${ref.#stderr}`)),
        timeoutMs,
      );
    });
    try {
      ref.#qtest = new Lines(await Promise.race([accepted, exited, slow]), () => ref.#stderr);
      clearTimeout(timer);
    } catch (e) {
      clearTimeout(timer);
      await ref.stop();
      throw e;
    }
    return ref;
  }

  /** What QEMU wrote to stderr so far (diagnostics). */
  get stderr(): string {
    return this.#stderr;
  }

  /** One qtest command; returns the text after "OK". */
  async qtest(cmd: string): Promise<string> {
    this.#qtest.sock.write(`${cmd}\n`);
    for (;;) {
      const line = await this.#qtest.next();
      if (line.startsWith('IRQ')) continue;
      if (!line.startsWith('OK')) throw new Error(`qtest ${cmd}: ${line}`);
      return line.slice(2).trim();
    }
  }

  /** A config-space write to slot `slot` of bus 0 (mechanism #1). */
  async configWrite(slot: number, reg: number, size: 1 | 2 | 4, value: number): Promise<void> {
    const addr = (0x80000000 | (slot << 11) | (reg & 0xfc)) >>> 0;
    await this.qtest(`outl 0xcf8 0x${addr.toString(16)}`);
    const port = 0xcfc + (reg & 3);
    const op = size === 1 ? 'outb' : size === 2 ? 'outw' : 'outl';
    await this.qtest(`${op} 0x${port.toString(16)} 0x${(value >>> 0).toString(16)}`);
  }

  /** A 4-byte config-space read of slot `slot` of bus 0. */
  async configRead(slot: number, reg: number): Promise<number> {
    const addr = (0x80000000 | (slot << 11) | (reg & 0xfc)) >>> 0;
    await this.qtest(`outl 0xcf8 0x${addr.toString(16)}`);
    return Number(await this.qtest('inl 0xcfc'));
  }

  /** A guest-physical memory read of `size` bytes, through QEMU's own dispatch (qtest readb..readq). */
  async memRead(addr: number, size: 1 | 2 | 4 | 8): Promise<bigint> {
    const op = size === 1 ? 'readb' : size === 2 ? 'readw' : size === 4 ? 'readl' : 'readq';
    return BigInt(await this.qtest(`${op} 0x${addr.toString(16)}`));
  }

  /** `info mtree -f` over the HMP socket. */
  async infoMtreeFlat(): Promise<string> {
    const path = join(this.#dir, 'hmp.sock');
    for (let i = 0; i < 100 && !existsSync(path); i++) await new Promise((r) => setTimeout(r, 50));
    const sock = connect(path);
    let text = '';
    sock.setEncoding('utf8');
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      let sent = false;
      sock.on('data', (d: string) => {
        text += d;
        if (!sent && text.includes('(qemu) ')) {
          sent = true;
          text = '';
          sock.write('info mtree -f\n');
        } else if (sent && text.trimEnd().endsWith('(qemu)')) {
          resolve();
        }
      });
    });
    sock.end();
    return text;
  }

  /** Stops QEMU and removes its sockets. */
  async stop(): Promise<void> {
    if (this.#proc.exitCode === null && this.#proc.signalCode === null) {
      const done = new Promise((r) => this.#proc.once('exit', r));
      this.#proc.kill('SIGTERM');
      await done;
    }
    this.#qtest?.sock.destroy();
    this.#server.close();
    rmSync(this.#dir, { recursive: true, force: true });
  }
}
