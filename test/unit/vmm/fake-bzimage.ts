/** Setup header fields of a fake bzImage. */
export interface FakeKernel {
  version?: number;
  setupSects?: number;
  xloadflags?: number;
  loadflags?: number;
  prefAddress?: number;
  initSize?: number;
  cmdlineSize?: number;
  initrdAddrMax?: number;
  payload?: number;
}

/** A bzImage with a real setup header layout and a recognisable protected-mode payload. */
export function bzImage(k: FakeKernel = {}): Uint8Array {
  const sects = k.setupSects ?? 4;
  const payload = k.payload ?? 0x3000;
  const img = new Uint8Array((sects + 1) * 512 + payload);
  const v = new DataView(img.buffer);
  img[0x1f1] = sects;
  v.setUint16(0x1fe, 0xaa55, true);
  img[0x200] = 0xeb;
  img[0x201] = 0x6a; // the header runs to 0x26c
  v.setUint32(0x202, 0x53726448, true);
  v.setUint16(0x206, k.version ?? 0x020f, true);
  img[0x211] = k.loadflags ?? 0x01;
  v.setUint32(0x214, 0x100000, true);
  v.setUint32(0x22c, k.initrdAddrMax ?? 0x7fffffff, true);
  v.setUint32(0x230, 0x200000, true);
  img[0x234] = 1;
  v.setUint16(0x236, k.xloadflags ?? 0x7f, true);
  v.setUint32(0x238, k.cmdlineSize ?? 2047, true);
  v.setBigUint64(0x258, BigInt(k.prefAddress ?? 0x1000000), true);
  v.setUint32(0x260, k.initSize ?? 0x800000, true);
  for (let i = (sects + 1) * 512; i < img.length; i++) img[i] = i & 0xff;
  return img;
}
