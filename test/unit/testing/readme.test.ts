// The README's vfio-bridge/testing example is readme-example.ts, word for word but for its imports,
// and it compiles against the package's types.
import * as fs from 'node:fs';
import * as path from 'node:path';
import ts from 'typescript';

const ROOT = path.join(__dirname, '..', '..', '..');
const EXAMPLE = path.join(__dirname, 'readme-example.ts');

test('the README shows readme-example.ts, importing from the package', () => {
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const section = readme.split('\n## Guide: hardware-in-the-loop tests\n')[1];
  expect(section).toBeDefined();
  const block = /```ts\n([\s\S]*?)```/.exec(section)![1];
  const example = fs
    .readFileSync(EXAMPLE, 'utf8')
    .replace(/'\.\.\/\.\.\/\.\.\/lib\/(\w+)'/g, "'vfio-bridge/$1'");
  expect(block).toBe(example);
});

test('readme-example.ts compiles (tsc --noEmit)', () => {
  const config = ts.getParsedCommandLineOfConfigFile(
    path.join(ROOT, 'tsconfig.check.json'),
    {},
    {
      ...ts.sys,
      onUnRecoverableConfigFileDiagnostic: (d) => {
        throw new Error(ts.flattenDiagnosticMessageText(d.messageText, '\n'));
      },
    },
  )!;
  const program = ts.createProgram([EXAMPLE], { ...config.options, noEmit: true });
  const diagnostics = ts
    .getPreEmitDiagnostics(program)
    .map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'));
  expect(diagnostics).toEqual([]);
}, 60_000);
