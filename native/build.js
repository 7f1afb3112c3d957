#!/usr/bin/env node
// `npm install` hook: builds the gradient-compression addon (build/Release/fedgate_compress.node)
// with the node-gyp 12 from node_modules, against the headers of the Node that runs this script
// (<prefix>/include/node), so no header download and no network are needed.
//
// A gateway without a C++ toolchain must still install: on any failure this prints a loud warning
// that the pure-TypeScript codec (same bytes, ~6-8x slower) will be used, and exits 0.
// FEDGATE_SKIP_NATIVE=1 skips the build on purpose.
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');

function fallback(reason, detail) {
  const bar = '!'.repeat(78);
  console.warn(
    [
      '',
      bar,
      'fedgate: the native gradient-compression addon was NOT built.',
      `Reason: ${reason}`,
      ...(detail ? [detail] : []),
      'fedgate will use the pure-TypeScript codec instead: identical bytes, but several times',
      'slower on large model updates. To build the addon later, install a C++ toolchain',
      '(Debian/Ubuntu: apt-get install build-essential python3) and run: node native/build.js',
      bar,
      '',
    ].join('\n'),
  );
  process.exit(0);
}

if (process.env.FEDGATE_SKIP_NATIVE === '1') fallback('FEDGATE_SKIP_NATIVE=1 is set');

let gyp;
try {
  gyp = require.resolve('node-gyp/bin/node-gyp.js', { paths: [root] });
} catch (err) {
  fallback('node-gyp is not installed in node_modules', String(err && err.message));
}

// The running Node's own prefix: /usr for a distro Node, ~/.nvm/versions/node/vX for nvm, the
// tarball directory for an official build. Its headers sit in <prefix>/include/node.
const nodedir = path.resolve(process.execPath, '..', '..');
const header = path.join(nodedir, 'include', 'node', 'node_api.h');
if (!fs.existsSync(header)) {
  fallback(`Node headers not found at ${header}`, `(node-gyp would need to download them; nodedir=${nodedir})`);
}

const args = [gyp, 'rebuild', `--nodedir=${nodedir}`, '--release'];
console.log(`fedgate: building native addon: ${process.execPath} ${args.join(' ')}`);
const res = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit', env: process.env });

if (res.error) fallback(`could not run node-gyp: ${res.error.message}`);
if (res.status !== 0) {
  fallback(
    `node-gyp rebuild exited with ${res.signal ? `signal ${res.signal}` : `code ${res.status}`}`,
    'Its output above says why (most often: no C++ compiler, make or python3 on this machine).',
  );
}

const built = path.join(root, 'build', 'Release', 'fedgate_compress.node');
if (!fs.existsSync(built)) fallback(`node-gyp succeeded but ${built} is missing`);

// Load it once here, so a broken binary is reported at install time rather than at first use.
try {
  const addon = require(built);
  if (typeof addon.encode !== 'function') throw new Error('addon has no encode()');
} catch (err) {
  fallback(`the built addon does not load: ${err && err.message}`);
}
console.log(`fedgate: native addon built: ${path.relative(root, built)}`);
