/**
 * The JSON Schemas (draft 2020-12) of every command's `--json` output. Each document carries
 * `command` and `version`; a change that could break a reader bumps `version`. `vfio-bridge schema
 * COMMAND` prints them.
 */

export const SCHEMA_VERSION = 1;

type Schema = Record<string, unknown>;

const int = { type: 'integer', minimum: 0 };
const str = { type: 'string' };
const bool = { type: 'boolean' };
const nullable = (s: Schema): Schema => ({ anyOf: [s, { type: 'null' }] });
const hexString = { type: 'string', pattern: '^0x[0-9a-f]+$' };
const bdf = { type: 'string', pattern: '^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\\.[0-7]$' };
/** A PCI address, or a mediated device's UUID. */
const deviceName = {
  type: 'string',
  pattern:
    '^([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\\.[0-7]|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$',
};
const obj = (properties: Record<string, unknown>): Schema => ({
  type: 'object',
  properties,
  required: Object.keys(properties),
  additionalProperties: false,
});
const doc = (command: string, properties: Record<string, unknown>): Schema => ({
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  $id: `vfio-bridge/${command}/${SCHEMA_VERSION}`,
  ...obj({ command: { const: command }, version: { const: SCHEMA_VERSION }, ...properties }),
});

const change = obj({ bdf, from: nullable(str), to: nullable(str), changed: bool });
const moveDoc = (command: string): Schema =>
  doc(command, { stateFile: str, devices: { type: 'array', items: change } });

const irq = obj({
  index: int,
  name: str,
  count: int,
  eventfd: bool,
  maskable: bool,
  automasked: bool,
  noresize: bool,
});

const mtreeNode: Schema = {
  type: 'object',
  properties: {
    name: str,
    kind: str,
    type: str,
    start: int,
    end: int,
    size: int,
    offset: int,
    priority: { type: 'integer' },
    enabled: bool,
    readonly: bool,
    alias: obj({ target: str, offset: int }),
    subregions: { type: 'array', items: { $ref: '#/$defs/node' } },
  },
  required: [
    'name',
    'kind',
    'type',
    'start',
    'end',
    'size',
    'offset',
    'priority',
    'enabled',
    'readonly',
    'subregions',
  ],
  additionalProperties: false,
};
const flatRange = obj({
  start: int,
  end: int,
  size: int,
  region: str,
  offsetInRegion: int,
  kind: str,
  type: str,
  readonly: bool,
  priority: { type: 'integer' },
});
const space = obj({
  tree: { $ref: '#/$defs/node' },
  flat: { type: 'array', items: flatRange },
  aliasTargets: { type: 'array', items: { $ref: '#/$defs/node' } },
});
const mapinfo = { enum: ['direct', 'trapped-mmap', 'trapped-fd', 'emulated'] };

/** What read, write and dump all report: which access was made, and how. */
const access = {
  bdf,
  region: str,
  offset: int,
  width: { enum: [1, 2, 4, 8] },
  via: { enum: ['map', 'fd', 'sysfs'] },
};

/** Every command's schema, by command name. */
const uuid = { type: 'string', pattern: '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' };
const mdevDevice = obj({
  uuid,
  parent: str,
  type: str,
  iommuGroup: nullable(int),
  cdev: nullable(str),
  driver: nullable(str),
  removing: bool,
});
const migrationState = {
  enum: ['ERROR', 'STOP', 'RUNNING', 'STOP_COPY', 'RESUMING', 'RUNNING_P2P', 'PRE_COPY', 'PRE_COPY_P2P'],
};

export const SCHEMAS: Record<string, Schema> = {
  list: doc('list', {
    devices: {
      type: 'array',
      items: obj({
        bdf,
        vendorId: int,
        deviceId: int,
        vendorName: nullable(str),
        deviceName: nullable(str),
        classCode: int,
        className: nullable(str),
        driver: nullable(str),
        driverOverride: nullable(str),
        iommuGroup: nullable(int),
        viable: bool,
        vfioReady: bool,
        net: { type: 'array', items: obj({ name: str, up: bool }) },
        modules: nullable({ type: 'array', items: str }),
      }),
    },
  }),
  bind: moveDoc('bind'),
  unbind: moveDoc('unbind'),
  restore: moveDoc('restore'),
  info: doc('info', {
    bdf: deviceName,
    source: { enum: ['vfio', 'sysfs'] },
    driver: nullable(str),
    needsVfioPci: { type: 'array', items: str },
    vendor: int,
    device: int,
    iommuGroup: nullable(int),
    backend: obj({
      kind: nullable({ enum: ['type1', 'iommufd'] }),
      requested: { enum: ['auto', 'iommufd', 'type1'] },
      reason: str,
      cdev: nullable(str),
      opened: bool,
    }),
    resettable: bool,
    resetMethods: { type: 'array', items: str },
    regions: {
      type: 'array',
      items: obj({
        index: int,
        name: str,
        size: int,
        fdOffset: int,
        readable: bool,
        writable: bool,
        mappable: bool,
        sparseMmap: nullable({ type: 'array', items: obj({ offset: int, size: int }) }),
        msixMappable: bool,
        type: nullable(obj({ type: int, subtype: int })),
      }),
    },
    capabilities: { type: 'array', items: obj({ offset: int, id: int, name: str, extended: bool }) },
    irqs: { type: 'array', items: irq },
  }),
  read: doc('read', { ...access, value: hexString }),
  write: doc('write', { ...access, value: hexString }),
  dump: doc('dump', {
    ...access,
    length: int,
    values: { type: 'array', items: hexString },
  }),
  mtree: {
    ...doc('mtree', {
      devices: {
        type: 'array',
        items: obj({
          bdf,
          bars: {
            type: 'array',
            items: obj({
              index: int,
              type: { enum: ['io', 'mem32', 'mem64'] },
              prefetchable: bool,
              size: int,
              address: nullable(int),
            }),
          },
        }),
      },
      memory: space,
      io: space,
      mapinfo: {
        type: 'array',
        items: obj({
          space: { enum: ['memory', 'io'] },
          addr: int,
          size: int,
          name: str,
          kind: str,
          mapinfo,
          bdf,
          bar: int,
          barOffset: int,
        }),
      },
      svg: nullable(str),
    }),
    $defs: { node: mtreeNode },
  },
  // A function reset reports the device; a hot reset also what the kernel's hot-reset info listed
  // (VFIO_DEVICE_GET_PCI_HOT_RESET_INFO): every device the bus reset reset, and their groups.
  reset: {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    $id: `vfio-bridge/reset/${SCHEMA_VERSION}`,
    oneOf: [
      obj({
        command: { const: 'reset' },
        version: { const: SCHEMA_VERSION },
        bdf,
        method: { const: 'function' },
      }),
      obj({
        command: { const: 'reset' },
        version: { const: SCHEMA_VERSION },
        bdf,
        method: { const: 'hot' },
        flags: int,
        devices: { type: 'array', items: obj({ bdf, group: int }) },
        groups: { type: 'array', items: int },
      }),
    ],
  },
  irqs: doc('irqs', { bdf, irqs: { type: 'array', items: irq } }),
  // `lab --json`: the kernel (null with --print, which provisions nothing), the devices and what the
  // command saw, QEMU's command line, and the command's status and the phases' seconds (null when
  // the phase did not run: --print, --provision).
  lab: doc('lab', {
    kernel: nullable(
      obj({ source: { enum: ['host', 'debian', 'built', 'path'] }, version: str, path: str, reason: str }),
    ),
    devices: {
      type: 'array',
      items: obj({
        role: str,
        bdf,
        model: str,
        driver: nullable(str),
        ids: nullable(str),
        file: nullable(str),
      }),
    },
    environment: { type: 'object', additionalProperties: str },
    qemu: { type: 'array', items: str },
    init: str,
    status: nullable(int),
    seconds: nullable(
      obj({
        provision: { type: 'number' },
        wait: nullable({ type: 'number' }),
        boot: nullable({ type: 'number' }),
        command: nullable({ type: 'number' }),
      }),
    ),
  }),
  'mdev-list': doc('mdev-list', { devices: { type: 'array', items: mdevDevice } }),
  'mdev-types': doc('mdev-types', {
    parents: {
      type: 'array',
      items: obj({
        name: str,
        path: str,
        types: {
          type: 'array',
          items: obj({
            parent: str,
            id: str,
            name: nullable(str),
            description: nullable(str),
            deviceApi: str,
            availableInstances: int,
            devices: { type: 'array', items: uuid },
          }),
        },
      }),
    },
  }),
  'mdev-create': doc('mdev-create', { device: mdevDevice }),
  // `heldBy`: the processes that held the device when the removal started (--wait), `ms` how long
  // the kernel took once the removal was written.
  'mdev-remove': doc('mdev-remove', {
    uuid,
    parent: str,
    type: str,
    heldBy: { type: 'array', items: obj({ pid: int, command: str, nodes: { type: 'array', items: str } }) },
    ms: int,
  }),
  // A device without migration has `supported: false` and nulls (empty lists) elsewhere.
  'migration-info': doc('migration-info', {
    device: str,
    supported: bool,
    flags: nullable(obj({ stopCopy: bool, p2p: bool, preCopy: bool, raw: hexString })),
    state: nullable(migrationState),
    dataSize: nullable(int),
    states: { type: 'array', items: migrationState },
    arcs: { type: 'array', items: obj({ from: migrationState, to: migrationState, effect: str }) },
    dmaLogging: nullable(bool),
  }),
  // `irqs --watch --json` prints one such document per line (JSON Lines), one per sample. `counts`
  // are the interrupts of each vector since the previous line, `totals` since the watch began;
  // `stop` is null except on the last line, which says why the watch ended.
  'irqs-watch': {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    $id: `vfio-bridge/irqs-watch/${SCHEMA_VERSION}`,
    ...obj({
      command: { const: 'irqs' },
      version: { const: SCHEMA_VERSION },
      bdf,
      irq: { enum: ['intx', 'msi', 'msix'] },
      index: int,
      sample: { type: 'integer', minimum: 1 },
      elapsedMs: int,
      counts: { type: 'array', items: int },
      totals: { type: 'array', items: int },
      stop: nullable({ enum: ['samples', 'signal', 'released'] }),
    }),
  },
};
