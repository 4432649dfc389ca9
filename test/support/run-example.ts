// Run one of docs/examples as it is shown, in a module registry of its own, and return what it
// printed with console.log, one entry per call.
import * as path from 'node:path';

const examples = path.join(__dirname, '../../docs/examples');

export function runExample(name: string): string[] {
  const lines: string[] = [];
  const log = jest.spyOn(console, 'log').mockImplementation((...args: unknown[]) => {
    lines.push(args.map(String).join(' '));
  });
  try {
    jest.isolateModules(() => {
      jest.requireActual(path.join(examples, name));
    });
  } finally {
    log.mockRestore();
  }
  return lines;
}
