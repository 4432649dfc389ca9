/** Mediated devices: parents and their types, creating and removing instances, who holds one open. */
export {
  findMdev,
  isMdevUuid,
  listMdevParents,
  listMdevs,
  mdevDevice,
  mdevGroupNumber,
  mdevParent,
  mdevParentNames,
  mdevType,
  normalizeMdevUuid,
  type MdevDevice,
  type MdevParent,
  type MdevType,
} from './sysfs';
export { createMdev, type CreateMdevOptions } from './create';
export { removeMdev, type MdevRemoval, type RemoveMdevOptions } from './remove';
export { describeHolders, mdevHolders, type MdevHolder, type MdevHolders, type ProcOptions } from './holders';
