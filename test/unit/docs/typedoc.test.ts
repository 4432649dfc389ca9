// `npm run docs` keeps the API reference whole: TypeDoc treats its warnings as errors, so an export
// without a doc comment, a link to something not exported or a broken {@link} fails here. The
// test validates without writing docs/api (--emit none), which TypeDoc checks the same way.
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

const root = path.join(__dirname, '../../..');

test('npm run docs builds the API reference without a warning', () => {
  const r = spawnSync('npm', ['run', '--silent', 'docs', '--', '--emit', 'none'], {
    cwd: root,
    encoding: 'utf8',
    env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' },
  });
  const output = `${r.stdout}${r.stderr}`;
  if (r.status !== 0) throw new Error(`npm run docs exited with ${r.status}:\n${output}`);
  expect(output).not.toMatch(/\[warning\]|\[error\]/);
}, 120_000);
