// Completion scripts and the man page come from the same commander program as --help: every
// command and option appears in each, and the shells accept the scripts.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';

import { manPage } from '../../../lib/cli/man';
import { buildProgram, packageVersion } from '../../../lib/cli/program';
import { ROOT } from '../helpers';
import { cli } from '../../support/cli-harness';

const io = {
  out: () => undefined,
  err: () => undefined,
  errIsTty: false,
  env: {},
  confirm: async () => null,
};
const program = buildProgram(io);
const commands = program.commands.map((c) => c.name());
const optionsOf = (name: string) =>
  (program.commands.find((c) => c.name() === name)?.options ?? []).flatMap((o) => [o.long!].filter(Boolean));

test('the program has the commands the documents are checked against', () => {
  expect(commands).toEqual(
    expect.arrayContaining(['list', 'bind', 'unbind', 'restore', 'info', 'read', 'dump', 'completion']),
  );
});

describe('completion', () => {
  test.each(['bash', 'zsh'])('%s: every command and every option of each', async (shell) => {
    const r = await cli(['completion', shell], {});
    expect(r.code).toBe(0);
    for (const c of commands) {
      expect(r.stdout).toContain(c);
      for (const o of optionsOf(c)) expect(r.stdout).toContain(o);
    }
    expect(r.stdout).toContain("'1 2 4 8'".replace(/'/g, shell === 'bash' ? "'" : '')); // --width's choices
  });

  test('bash loads the script and completes commands and options from it', () => {
    const script = spawnSync(process.execPath, ['-e', '0']); // node is there; the script comes from cli()
    expect(script.status).toBe(0);
    return cli(['completion', 'bash'], {}).then((r) => {
      const check = spawnSync(
        'bash',
        [
          '-c',
          `${r.stdout}
COMP_WORDS=(vfio-bridge bi); COMP_CWORD=1; _vfio_bridge; echo "\${COMPREPLY[*]}"
COMP_WORDS=(vfio-bridge bind --gr); COMP_CWORD=2; _vfio_bridge; echo "\${COMPREPLY[*]}"
COMP_WORDS=(vfio-bridge read --width ''); COMP_CWORD=3; _vfio_bridge; echo "\${COMPREPLY[*]}"
COMP_WORDS=(vfio-bridge mdev ''); COMP_CWORD=2; _vfio_bridge; echo "\${COMPREPLY[*]}"
COMP_WORDS=(vfio-bridge mdev remove --wa); COMP_CWORD=3; _vfio_bridge; echo "\${COMPREPLY[*]}"`,
        ],
        { encoding: 'utf8' },
      );
      expect(check.stderr).toBe('');
      expect(check.stdout).toBe('bind\n--group\n1 2 4 8\nlist types create remove\n--wait\n');
    });
  });

  test('zsh parses the script', async () => {
    const r = await cli(['completion', 'zsh'], {});
    const zsh = spawnSync('zsh', ['-n', '-c', r.stdout], { encoding: 'utf8' });
    if (zsh.error) return; // no zsh on this machine: the text checks above stand
    expect(zsh.stderr).toBe('');
    expect(zsh.status).toBe(0);
  });

  test('an unknown shell is a usage error naming the ones there are', async () => {
    const r = await cli(['completion', 'fish'], {});
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/fish.*\[EUSAGE\]/);
    expect(r.stderr).toContain('bash, zsh');
  });
});

describe('the man page', () => {
  const page = manPage(program, '9.9.9', '2026-01-02');
  const unroff = page.replace(/\\-/g, '-').replace(/\\e/g, '\\');

  test('names every command and every option, with the help texts', () => {
    expect(page).toMatch(/^\.TH VFIO\\-BRIDGE 1 "2026-01-02" "vfio-bridge 9\.9\.9"/);
    for (const c of commands) {
      expect(unroff).toContain(`.SS vfio-bridge ${c} `);
      for (const o of optionsOf(c)) expect(unroff).toContain(o);
    }
    expect(unroff).toContain('--version');
    expect(unroff).toContain('$ vfio-bridge bind --user alice 0000:03:00.0'); // an example
    expect(unroff).toContain('What persists:');
    expect(unroff).toContain('/run/vfio-bridge/drivers.json');
    expect(unroff).toContain('{"error":{"message":...,"hint":...,"code":...}}');
  });

  test('the page in man/ is what `npm run man` makes now', () => {
    const committed = fs.readFileSync(path.join(ROOT, 'man/vfio-bridge.1'), 'utf8');
    const date = /^\.TH \S+ 1 "([0-9-]+)"/.exec(committed)?.[1] ?? '';
    expect(committed).toBe(manPage(program, packageVersion(), date));
  });

  test('man renders it without warnings', () => {
    const r = spawnSync('man', ['--warnings', '-l', '-'], {
      input: page,
      encoding: 'utf8',
      env: { ...process.env, MANWIDTH: '100' },
    });
    if (r.error) return; // no man on this machine
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain('vfio-bridge');
  });
});
