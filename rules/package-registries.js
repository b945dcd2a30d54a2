// rules/package-registries.js: read-only access to the public package registries.
//
//   httpjail --weak --js-file rules/package-registries.js -- pip install -r requirements.txt
//   httpjail --weak --js-file rules/package-registries.js -- npm ci --no-audit
//
// Allowed: GET and HEAD only, https on port 443 only, to
//   PyPI        pypi.org (index and JSON API), files.pythonhosted.org (the files)
//   npm         registry.npmjs.org
//   crates.io   crates.io (API; downloads redirect to static.crates.io),
//               static.crates.io (crate files), index.crates.io (sparse index)
//   Go          proxy.golang.org (modules), sum.golang.org (checksum database)
//   GitHub      release downloads only:
//                 github.com/OWNER/REPO/releases/download/TAG/FILE (a TAG may hold '/')
//                 github.com/OWNER/REPO/releases/latest/download/FILE
//               and the hosts those redirect to, objects.githubusercontent.com and
//               release-assets.githubusercontent.com. Nothing else on github.com (no
//               clone, no pages, no API): see rules/github-readonly.js for that.
//
// Why read-only: installing needs nothing but GET. Publishing (npm publish = PUT,
// twine upload = POST, cargo publish = PUT) is refused, and so is `npm audit`, a POST
// that sends your dependency list to the registry: npm install warns and carries on
// (pass --no-audit to silence it).
// Refused as well: plain http://, other ports, every other host, and look-alikes such
// as pypi.org.attacker.test or evil-github.com (hosts must match exactly).

const FILE = 'rules/package-registries.js';

const REGISTRY_HOSTS = [
  'pypi.org', 'files.pythonhosted.org',
  'registry.npmjs.org',
  'crates.io', 'static.crates.io', 'index.crates.io',
  'proxy.golang.org', 'sum.golang.org',
  'objects.githubusercontent.com', 'release-assets.githubusercontent.com',
];
const METHODS = ['GET', 'HEAD'];

// An owner or repository name: GitHub's own character set, and never `.` or `..`.
const NAME = '(?!\\.\\.?/)[A-Za-z0-9_.-]+';
const RELEASE_DOWNLOAD = new RegExp(
  '^/' + NAME + '/' + NAME + '/releases/(?:download/(?:[^/]+/)+|latest/download/)[^/]+$');

(function () {
  const deny = (why) => ({ deny_message: FILE + ': ' + why });
  // Hosts reach rules lower-cased; normalise anyway so the file is safe under any engine.
  const host = String(r.host).toLowerCase().replace(/\.$/, '');
  const registry = REGISTRY_HOSTS.includes(host);
  if (!registry && host !== 'github.com') {
    return deny(host + ' is not a package registry');
  }
  if (r.scheme !== 'https') return deny(r.scheme + '://' + host + ' is refused: https only');
  if (r.port !== 443) return deny(host + ' port ' + r.port + ' is refused: only 443');
  if (!METHODS.includes(r.method)) {
    return deny(r.method + ' is refused: registries are read-only here (GET and HEAD)');
  }
  if (host === 'github.com') {
    // The path is the raw request path; refuse anything a server might normalise into
    // another one (dot segments, encoded slashes or dots, backslashes).
    const tricky = /%2[ef]|%5c|\\/i.test(r.path) || /\/\.\.?(\/|$)/.test(r.path);
    if (tricky || !RELEASE_DOWNLOAD.test(r.path)) {
      return deny('github.com' + r.path + ' is not a release download');
    }
  }
  return true;
})()
