// One version source: paraconnect/_version.py. Make package.json follow it before each build.
const fs = require('fs');
const path = require('path');

const py = fs.readFileSync(path.join(__dirname, '..', '..', 'paraconnect', '_version.py'), 'utf8');
const match = py.match(/__version__\s*=\s*["']([^"']+)["']/);
if (!match) {
  console.error('sync-version: no __version__ in paraconnect/_version.py');
  process.exit(1);
}
// PEP 440 pre-releases (1.2.0a1, 1.2.0rc1, 1.2.0.dev3) become semver ones (1.2.0-alpha.1, ...).
const version = match[1]
  .replace(/^(\d+\.\d+\.\d+)a(\d+)$/, '$1-alpha.$2')
  .replace(/^(\d+\.\d+\.\d+)b(\d+)$/, '$1-beta.$2')
  .replace(/^(\d+\.\d+\.\d+)rc(\d+)$/, '$1-rc.$2')
  .replace(/^(\d+\.\d+\.\d+)\.dev(\d+)$/, '$1-dev.$2');
const file = path.join(__dirname, '..', 'package.json');
const pkg = JSON.parse(fs.readFileSync(file, 'utf8'));
if (pkg.version !== version) {
  pkg.version = version;
  fs.writeFileSync(file, JSON.stringify(pkg, null, 2) + '\n');
  console.log(`sync-version: package.json now at ${version} (from paraconnect/_version.py)`);
}
