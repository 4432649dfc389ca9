/**
 * The lab's device catalogue and the `--device` spec. A spec is written as QEMU writes a
 * `-device` value, `MODEL[,key=value...]` (a comma inside a value is doubled), where MODEL is a
 * preset of {@link PRESETS} or any QEMU PCI model. The lab takes its own keys out of it and passes
 * the rest to QEMU in order:
 *
 * - `role=NAME`: the role the tests ask for (default: the preset or model name; `edu2` for a second edu);
 * - `driver=NAME`: leave the device on this kernel driver instead of binding it to vfio-pci;
 * - `bind=off`: leave it alone (no check, not listed): what the `blocker` preset does;
 * - `port`, `port.KEY=VALUE`: put it behind a pcie-root-port of its own (with those options);
 * - `group=NAME`: put every device of that group in one slot as functions 0, 1, ...: one IOMMU group;
 * - `file=PATH`, `size=BYTES`: the backing file of nvme and ivshmem (default: a new one of `size`);
 * - `ids=VVVV:DDDD`: the vendor:device the guest checks before binding (presets know theirs).
 *
 * `addr=SLOT[.FN]` is QEMU's own and is kept; without it the lab picks the next free slot.
 */
import { UsageError } from '../errors';

/** What a backend a preset needs besides its -device: a network, a file, an empty 9p export. */
export type Backend = 'net' | 'drive' | 'memory' | 'blocker';

/** A device model the lab knows works behind vfio-pci under TCG. */
export interface Preset {
  /** The QEMU -device model. */
  model: string;
  /** The vendor:device the guest sees. */
  ids: string;
  backend?: Backend;
  /** Bound to vfio-pci (default true); false leaves it on its kernel driver, unchecked and unlisted. */
  bind?: boolean;
  /** The size of the backing file the lab makes when the spec names none. */
  defaultSize?: number;
  summary: string;
}

const MiB = 1024 * 1024;

/** The presets, by name. */
export const PRESETS: Readonly<Record<string, Preset>> = {
  edu: { model: 'edu', ids: '1234:11e8', summary: "QEMU's teaching device: width-sensitive MMIO, DMA, MSI" },
  e1000: { model: 'e1000', ids: '8086:100e', backend: 'net', summary: 'Intel 82540EM NIC: INTx only' },
  e1000e: { model: 'e1000e', ids: '8086:10d3', backend: 'net', summary: 'Intel 82574L NIC: MSI-X in BAR3' },
  rtl8139: {
    model: 'rtl8139',
    ids: '10ec:8139',
    backend: 'net',
    summary: 'Realtek RTL8139 NIC: I/O-port BAR0, 256-byte MMIO BAR1',
  },
  nvme: {
    model: 'nvme',
    ids: '1b36:0010',
    backend: 'drive',
    defaultSize: MiB,
    summary: 'NVMe controller on a raw file (file=PATH, or size= bytes of random data, default 1M)',
  },
  ivshmem: {
    model: 'ivshmem-plain',
    ids: '1af4:1110',
    backend: 'memory',
    defaultSize: MiB,
    summary: 'shared memory in BAR2 backed by a host file (file=PATH, or size=, default 1M)',
  },
  blocker: {
    model: 'virtio-9p-pci',
    ids: '1af4:1009',
    backend: 'blocker',
    bind: false,
    summary: 'a function left on virtio-pci: with group= it makes that IOMMU group non-viable',
  },
};

/** A QEMU option as written: `key=value`, or a bare `key` (value null). */
export type QemuOption = readonly [key: string, value: string | null];

/** A parsed `--device`. */
export interface DeviceSpec {
  /** The spec as given. */
  text: string;
  /** The preset it names, or null for any other QEMU model. */
  preset: string | null;
  /** The QEMU -device model. */
  model: string;
  /** The role given with role=, if any. */
  role?: string;
  /** The kernel driver it stays on (driver=), if any. */
  driver?: string;
  bind: boolean;
  /** The pcie-root-port's options when `port` was given, else null. */
  port: QemuOption[] | null;
  group?: string;
  /** QEMU's addr=, parsed. */
  addr?: { slot: number; fn: number | undefined };
  file?: string;
  size?: number;
  /** What the guest checks before binding; null: any. */
  ids: string | null;
  /** The options passed to -device, in order (addr, bus and multifunction are the layout's). */
  options: QemuOption[];
}

/** Splits a QEMU option list at single commas; `,,` is a comma inside a value. */
export function splitOptions(text: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < text.length; i++) {
    if (text[i] !== ',') cur += text[i];
    else if (text[i + 1] === ',') {
      cur += ',';
      i++;
    } else {
      out.push(cur);
      cur = '';
    }
  }
  out.push(cur);
  return out;
}

/** An option list as QEMU reads it: commas inside values doubled. */
export function joinOptions(first: string, options: readonly QemuOption[]): string {
  const esc = (s: string): string => s.replaceAll(',', ',,');
  return [esc(first), ...options.map(([k, v]) => (v === null ? esc(k) : `${esc(k)}=${esc(v)}`))].join(',');
}

const SIZE_RE = /^([0-9]+)([KMG]?)$/i;

/**
 * parseSize: `4096`, `512K`, `1M`, `2G` as bytes.
 * @throws UsageError for anything else, or 0
 */
export function parseSize(text: string, what: string): number {
  const m = SIZE_RE.exec(text.trim());
  const n = m ? Number(m[1]) * { '': 1, K: 1024, M: MiB, G: 1024 * MiB }[m[2].toUpperCase() as '' | 'K'] : 0;
  if (!m || !(n > 0) || !Number.isSafeInteger(n))
    throw new UsageError(
      `${what}: ${JSON.stringify(text)} is not a size`,
      'a size is bytes, or a number with K, M or G',
    );
  return n;
}

/**
 * parseAddr: QEMU's `addr=SLOT[.FN]` (hex slot 0-1f, function 0-7).
 * @throws UsageError otherwise
 */
export function parseAddr(text: string, what: string): { slot: number; fn: number | undefined } {
  const m = /^(?:0x)?([0-9a-f]{1,2})(?:\.([0-7]))?$/i.exec(text);
  const slot = m ? parseInt(m[1], 16) : NaN;
  if (!m || slot > 0x1f)
    throw new UsageError(
      `${what}: addr=${text} is not a PCI slot`,
      'write addr=SLOT or addr=SLOT.FN in hex, e.g. addr=05.0',
    );
  return { slot, fn: m[2] === undefined ? undefined : Number(m[2]) };
}

export const ROLE_RE = /^[A-Za-z][A-Za-z0-9_.-]*$/;
const MODEL_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const IDS_RE = /^[0-9a-f]{4}:[0-9a-f]{4}$/i;

function onOff(key: string, value: string | null, what: string): boolean {
  if (value === null || value === 'on' || value === 'true' || value === 'yes') return true;
  if (value === 'off' || value === 'false' || value === 'no') return false;
  throw new UsageError(
    `${what}: ${key}=${value} is neither on nor off`,
    `write ${key}, ${key}=on or ${key}=off`,
  );
}

/** The -device keys the layout sets itself. */
const LAYOUT_KEYS: Record<string, string> = {
  bus: 'use port (a pcie-root-port of its own) or group=, which place the device themselves',
  multifunction: 'use group=NAME on each device that shares the slot: the lab sets multifunction',
  chassis: 'chassis is an option of the root port: write port.chassis=N',
};

/**
 * parseDeviceSpec: one `--device` value.
 * @throws UsageError naming the spec and the part that is wrong, with the accepted form as the hint
 */
export function parseDeviceSpec(text: string): DeviceSpec {
  const what = `--device ${text}`;
  const [head, ...rest] = splitOptions(text.trim());
  if (head === '' || head.includes('=') || !MODEL_RE.test(head)) {
    throw new UsageError(
      `${what}: ${JSON.stringify(head)} is not a device model`,
      `start with a preset (${Object.keys(PRESETS).join(', ')}) or a QEMU model, e.g. --device nvme,size=4M`,
    );
  }
  const preset = Object.hasOwn(PRESETS, head) ? PRESETS[head] : undefined;
  const spec: DeviceSpec = {
    text,
    preset: preset ? head : null,
    model: preset?.model ?? head,
    bind: preset?.bind ?? true,
    port: null,
    ids: preset?.ids ?? null,
    options: [],
  };
  for (const item of rest) {
    const eq = item.indexOf('=');
    const key = eq < 0 ? item : item.slice(0, eq);
    const value = eq < 0 ? null : item.slice(eq + 1);
    const needValue = (): string => {
      if (value === null || value === '')
        throw new UsageError(`${what}: ${key} needs a value`, `write ${key}=...`);
      return value;
    };
    if (key === '') throw new UsageError(`${what}: an empty option`, 'separate options with one comma');
    if (key === 'role') {
      const role = needValue();
      if (!ROLE_RE.test(role))
        throw new UsageError(
          `${what}: role ${JSON.stringify(role)} is not a name`,
          'a role is a letter, then letters, digits, _ . -',
        );
      spec.role = role;
    } else if (key === 'driver') spec.driver = needValue();
    else if (key === 'bind') spec.bind = onOff(key, value, what);
    else if (key === 'port') spec.port = onOff(key, value, what) ? (spec.port ?? []) : null;
    else if (key.startsWith('port.')) {
      if (key === 'port.bus' || key === 'port.id')
        throw new UsageError(
          `${what}: ${key} is the lab's`,
          'the lab names each root port and puts it on pcie.0',
        );
      spec.port = [...(spec.port ?? []), [key.slice(5), value]];
    } else if (key === 'group') spec.group = needValue();
    else if (key === 'file') spec.file = needValue();
    else if (key === 'size') spec.size = parseSize(needValue(), what);
    else if (key === 'ids') {
      const ids = needValue().toLowerCase();
      if (!IDS_RE.test(ids))
        throw new UsageError(`${what}: ids=${ids} is not vendor:device`, 'write ids=1234:11e8');
      spec.ids = ids;
    } else if (key === 'addr') spec.addr = parseAddr(needValue(), what);
    else if (Object.hasOwn(LAYOUT_KEYS, key))
      throw new UsageError(`${what}: ${key}= is set by the lab`, LAYOUT_KEYS[key]);
    else spec.options.push([key, value]);
  }
  const backend = preset?.backend;
  if ((spec.file !== undefined || spec.size !== undefined) && backend !== 'drive' && backend !== 'memory') {
    throw new UsageError(
      `${what}: file= and size= are for the presets with a backing file`,
      'nvme and ivshmem take them; give any other model its backend with --qemu',
    );
  }
  if (spec.file !== undefined && spec.size !== undefined && backend === 'drive') {
    throw new UsageError(`${what}: file= and size= together`, "nvme's size is its file's: give one of them");
  }
  if (spec.driver !== undefined && !spec.bind) {
    throw new UsageError(
      `${what}: driver= and bind=off together`,
      'driver= checks the device is on that driver; bind=off checks nothing',
    );
  }
  return spec;
}

/**
 * Named device sets for `--preset`. `vfio-bridge` is this project's own lab: its suites rely on
 * every address here (see scripts/lab/README.md). `nonviable` shares its slot, and so its IOMMU
 * group, with a function that stays on virtio-pci; `hotreset` is alone behind a root port, the one
 * device the kernel can bus-reset (x-speed=5: at the default speed the link does not come back in
 * time for the kernel); `e1000` stays on its kernel driver for the CLI's bind and restore tests.
 */
export const DEVICE_SETS: Readonly<Record<string, readonly string[]>> = {
  'vfio-bridge': [
    'edu,addr=03',
    'rtl8139,addr=04',
    'e1000e,addr=05',
    'ivshmem,addr=06',
    'edu,role=nonviable,group=nonviable,addr=07',
    'blocker,group=nonviable',
    'e1000,driver=e1000,addr=08',
    'edu,role=hotreset,port,port.addr=09,port.x-speed=5',
    'nvme,addr=0a',
  ],
};
