/**
 * Memory transactions. As in QEMU, there is one transaction depth for the whole process: every
 * mutation marks the topology dirty, and the outermost commit rebuilds each address space's flat view
 * once and tells its listeners what changed. A mutation outside any transaction commits at once.
 */
import { MemoryTopologyError } from './types';

/** A region as the transaction machinery sees it: only its link to its parent. */
export interface TreeNode {
  readonly parent: TreeNode | null;
}

/** What the transaction machinery needs from an address space. */
export interface Rebuildable {
  /** Whether the last rendering walked through any of `changed` (the root or an alias target). */
  _dependsOn(changed: ReadonlySet<TreeNode>): boolean;
  /** Recomputes the flat view and notifies listeners; listener errors are pushed, not thrown. */
  _rebuild(errors: unknown[]): void;
}

const spaces = new Set<Rebuildable>();
let depth = 0;
let pending = false;
let committing = false;
/** Every changed region and all its ancestors since the last rebuild. */
let changed = new Set<TreeNode>();

/** @internal */
export function registerSpace(s: Rebuildable): void {
  spaces.add(s);
}

/** @internal */
export function unregisterSpace(s: Rebuildable): void {
  spaces.delete(s);
}

/** @internal The address spaces registered now: those not closed. */
export function registeredSpaces(): IterableIterator<Rebuildable> {
  return spaces.values();
}

/**
 * Refuses a mutation while listeners are being notified: the flat view they are walking would change
 * under them, and the new change would be reported inside the old one.
 * @internal
 */
export function assertMutable(): void {
  if (committing) {
    throw new MemoryTopologyError(
      'reentrant-commit',
      'the memory topology cannot change while listeners are being notified of a commit',
    );
  }
}

/** @internal Records `r` and its ancestors as changed, without committing. */
export function noteChanged(r: TreeNode): void {
  for (let n: TreeNode | null = r; n !== null; n = n.parent) changed.add(n);
}

/**
 * Records a mutation of `r`; rebuilds now unless a transaction is open. Only address spaces whose
 * root or alias targets lie on the path from `r` to its topmost ancestor are rebuilt: a change
 * anywhere else cannot alter what they show.
 * @internal
 */
export function topologyChanged(r: TreeNode): void {
  noteChanged(r);
  if (depth > 0) {
    pending = true;
    return;
  }
  rebuildAll();
}

function rebuildAll(): void {
  pending = false;
  const dirty = changed;
  changed = new Set();
  const errors: unknown[] = [];
  committing = true;
  try {
    for (const s of spaces) if (s._dependsOn(dirty)) s._rebuild(errors);
  } finally {
    committing = false;
  }
  if (errors.length === 1) throw errors[0];
  if (errors.length > 1) throw new AggregateError(errors, `${errors.length} memory listeners failed`);
}

/** Opens a (possibly nested) transaction: flat views are rebuilt only when the outermost one commits. */
export function beginTransaction(): void {
  depth++;
}

/**
 * Closes the innermost transaction. Closing the outermost one rebuilds every flat view touched since
 * it was opened and notifies listeners. A listener that throws does not stop the others; its error is
 * rethrown afterwards (an `AggregateError` if several failed).
 */
export function commitTransaction(): void {
  if (depth === 0) {
    throw new MemoryTopologyError(
      'unbalanced-transaction',
      'commitTransaction() without a matching beginTransaction()',
    );
  }
  depth--;
  if (depth === 0 && pending) rebuildAll();
}

/** Runs `fn` inside a transaction, committing even if it throws. */
export function transaction<T>(fn: () => T): T {
  beginTransaction();
  try {
    return fn();
  } finally {
    commitTransaction();
  }
}

/** Current nesting depth (0 outside any transaction). */
export function transactionDepth(): number {
  return depth;
}
