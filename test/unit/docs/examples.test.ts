// The documentation's code is code: every ```ts block in README.md and docs/*.md is an example file
// (or says it is a fragment), every example is shown somewhere, and every example type-checks
// against the package as a user imports it ('vfio-bridge', mapped to lib/ by docs/examples/tsconfig.json).
import * as fs from 'node:fs';
import * as path from 'node:path';
import ts from 'typescript';

const root = path.join(__dirname, '../../..');
const examplesDir = path.join(root, 'docs/examples');
const pages = [
  'README.md',
  ...fs
    .readdirSync(path.join(root, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .map((f) => `docs/${f}`),
];
const examples = new Map(
  fs
    .readdirSync(examplesDir)
    .filter((f) => f.endsWith('.ts'))
    .map((f) => [f, fs.readFileSync(path.join(examplesDir, f), 'utf8').trimEnd()]),
);

interface Block {
  page: string;
  line: number;
  info: string;
  code: string;
}

function tsBlocks(page: string): Block[] {
  const lines = fs.readFileSync(path.join(root, page), 'utf8').split('\n');
  const out: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^```(\S*)(.*)$/.exec(lines[i]);
    if (!open) continue;
    const end = lines.indexOf('```', i + 1);
    if (end < 0) throw new Error(`${page}:${i + 1}: unclosed code block`);
    if (open[1] === 'ts' || open[1] === 'typescript') {
      out.push({
        page,
        line: i + 1,
        info: open[2].trim(),
        code: lines
          .slice(i + 1, end)
          .join('\n')
          .trimEnd(),
      });
    }
    i = end;
  }
  return out;
}

const blocks = pages.flatMap(tsBlocks);

describe('documentation examples', () => {
  test('the pages have TypeScript blocks to check', () => {
    expect(blocks.length).toBeGreaterThan(5);
    expect(examples.size).toBeGreaterThan(5);
  });

  test.each(blocks.map((b) => [`${b.page}:${b.line}`, b] as const))(
    '%s is an example file or marked as a fragment',
    (_where, b) => {
      if (b.info === 'fragment') return;
      expect(b.info).toBe('');
      const match = [...examples].find(([, code]) => code === b.code);
      if (!match) {
        throw new Error(
          `${b.page}:${b.line}: this ts block is not identical to any file in docs/examples/ ` +
            '(paste the file in again, or mark the block ```ts fragment if it is one)',
        );
      }
    },
  );

  test('the README names the test command CI runs, and the contributor page the lab', () => {
    expect(fs.readFileSync(path.join(root, 'README.md'), 'utf8')).toMatch(/`npm test`/);
    const contributing = fs.readFileSync(path.join(root, 'docs/CONTRIBUTING.md'), 'utf8');
    expect(contributing).toMatch(/npm test/);
    expect(contributing).toMatch(/npm run lab/);
  });

  test('every example is shown on some page', () => {
    const shown = new Set(blocks.map((b) => b.code));
    const unshown = [...examples].filter(([, code]) => !shown.has(code)).map(([name]) => name);
    expect(unshown).toEqual([]);
  });

  test('every example type-checks against the package', () => {
    const configPath = path.join(examplesDir, 'tsconfig.json');
    const config = ts.readConfigFile(configPath, (p) => ts.sys.readFile(p));
    const parsed = ts.parseJsonConfigFileContent(config.config, ts.sys, examplesDir);
    expect(parsed.fileNames.map((f) => path.basename(f)).sort()).toEqual([...examples.keys()].sort());
    const program = ts.createProgram(parsed.fileNames, parsed.options);
    const errors = ts.getPreEmitDiagnostics(program).map((d) => {
      const text = ts.flattenDiagnosticMessageText(d.messageText, '\n');
      if (!d.file || d.start === undefined) return text;
      const { line, character } = d.file.getLineAndCharacterOfPosition(d.start);
      return `${path.relative(root, d.file.fileName)}:${line + 1}:${character + 1}: ${text}`;
    });
    expect(errors).toEqual([]);
  }, 120_000);
});
