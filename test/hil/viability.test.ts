// Viability: a group is usable only when every member is on vfio-pci (or on no driver). The lab's
// `nonviable` edu shares its slot, and so its group, with a function that stays on virtio-pci.
import { Container, Group, VfioError } from '../../lib';
import { bdfOf, describeDevice, missingReason } from './hil';

describeDevice('nonviable', 'group viability', (bdf) => {
  test('the group reports itself not viable and names the member on another driver', () => {
    const g = Group.openByBdf(bdf());
    try {
      expect(g.status()).toEqual({ viable: false, containerSet: false });
      const members = g.members();
      expect(members).toContainEqual({ bdf: bdf(), driver: 'vfio-pci' });
      const others = members.filter((m) => m.driver !== null && m.driver !== 'vfio-pci');
      expect(others.length).toBeGreaterThan(0);
    } finally {
      g.close();
    }
  });

  test('setContainer refuses with ENOTVIABLE, listing every member and its driver', () => {
    const c = Container.open();
    const g = Group.openByBdf(bdf());
    try {
      let err: unknown;
      try {
        g.setContainer(c);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(VfioError);
      const v = err as VfioError;
      expect(v.code).toBe('ENOTVIABLE');
      expect(v.path).toBe(g.path);
      const text = `${v.message}\n${v.hint ?? ''}`;
      for (const m of g.members()) {
        expect(text).toContain(m.bdf);
        if (m.driver !== null) expect(text).toContain(m.driver);
      }
      expect(g.status().containerSet).toBe(false);
      expect(() => g.openDevice(bdf())).toThrow(VfioError);
    } finally {
      g.close();
      c.close();
    }
  });

  const eduMissing = missingReason('edu');
  const withEdu = eduMissing === null ? test : test.skip;
  withEdu(
    `the refusal leaves the container usable for a viable group${eduMissing ? ` (skipped: ${eduMissing})` : ''}`,
    () => {
      const c = Container.open();
      const bad = Group.openByBdf(bdf());
      const good = Group.openByBdf(bdfOf('edu'));
      try {
        expect(() => bad.setContainer(c)).toThrow(VfioError);
        good.setContainer(c);
        c.setIommu();
        const d = good.openDevice(bdfOf('edu'));
        expect(d.read(0, 0, 4)).toBe(0x010000ed);
        d.close();
      } finally {
        good.close();
        bad.close();
        c.close();
      }
    },
  );
});
