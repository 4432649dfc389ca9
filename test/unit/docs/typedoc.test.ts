// `npm run docs` keeps the API reference whole: TypeDoc treats its warnings as errors, so an export
// without a doc comment, a link to something not exported or a broken {@link} fails here. The
// test validates without writing docs/api (--emit none), which TypeDoc checks the same way.
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

const root = path.join(__dirname, '../../..');

/** `npm run docs` with `args` after typedoc.json's own options; stdout and stderr together. */
function docs(args: readonly string[]): string {
  const r = spawnSync('npm', ['run', '--silent', 'docs', '--', '--emit', 'none', ...args], {
    cwd: root,
    encoding: 'utf8',
    env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' },
  });
  const output = `${r.stdout}${r.stderr}`;
  if (r.status !== 0) throw new Error(`npm run docs exited with ${r.status}:\n${output}`);
  return output;
}

test('npm run docs builds the API reference without a warning', () => {
  expect(docs([])).not.toMatch(/\[warning\]|\[error\]/);
}, 120_000);

// Fields (TypeDoc's "Property": interface and class fields, members of object types and constant
// tables) are in typedoc.json's requiredToBeDocumented, so the first test holds the API reference to
// them. The cli and testing entry points are not part of the API reference; their fields are held to
// the same rule here (only the field check: exports, links and their other members are not held to
// the reference's rules).
test('every public field of the cli and testing entry points has a doc comment', () => {
  const output = docs([
    '--requiredToBeDocumented',
    'Property',
    '--validation.notExported',
    'false',
    '--validation.invalidLink',
    'false',
    '--entryPoints',
    'lib/cli/index.ts',
    '--entryPoints',
    'lib/testing/index.ts',
  ]);
  expect(output).not.toMatch(/\[warning\]|\[error\]/);
}, 120_000);
