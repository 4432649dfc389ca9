// DeferredMappings: the region changes config writes hand over while a PcMachine's vCPUs run.
import { DeferredMappings } from '../../../lib/vmm/deferred-mappings';

describe('DeferredMappings', () => {
  it('runs each update a turn later; pending settles once all ran and is null when none waits', async () => {
    const d = new DeferredMappings(() => undefined);
    expect(d.pending).toBeNull();
    const ran: number[] = [];
    d.schedule(() => ran.push(1));
    d.schedule(() => ran.push(2));
    expect(ran).toEqual([]);
    const p = d.pending;
    expect(p).not.toBeNull();
    expect(d.pending).toBe(p);
    await p;
    expect(ran).toEqual([1, 2]);
    expect(d.pending).toBeNull();
  });

  it('lets a timer that is due run before the update', async () => {
    const d = new DeferredMappings(() => undefined);
    const order: string[] = [];
    setTimeout(() => order.push('timer'), 1);
    const t = Date.now();
    while (Date.now() - t < 5); // the timer is due now
    d.schedule(() => order.push('update'));
    await d.pending;
    expect(order).toEqual(['timer', 'update']);
  });

  it('hands what an update throws to onError, and runs the others', async () => {
    const errors: unknown[] = [];
    const d = new DeferredMappings((e) => errors.push(e));
    const boom = new Error('a listener failed');
    const ran: string[] = [];
    d.schedule(() => {
      throw boom;
    });
    d.schedule(() => ran.push('second'));
    await d.pending;
    expect(errors).toEqual([boom]);
    expect(ran).toEqual(['second']);
  });

  it('drops updates once told to, and still settles', async () => {
    const d = new DeferredMappings(() => undefined);
    const ran: string[] = [];
    d.schedule(() => ran.push('before drop'));
    d.drop();
    d.schedule(() => ran.push('after drop'));
    await d.pending;
    expect(ran).toEqual([]);
    expect(d.pending).toBeNull();
  });
});
