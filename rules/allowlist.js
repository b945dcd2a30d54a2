// rules/allowlist.js: a host allowlist to copy and edit.
//
//   httpjail --weak --js-file rules/allowlist.js -- ./tool
//
// Edit ALLOWED below. Each entry is either
//   'github.com'                an exact host: github.com itself, no subdomain
//   '*.githubusercontent.com'   any subdomain (raw.githubusercontent.com,
//                               a.b.githubusercontent.com), but not the bare
//                               githubusercontent.com; list that too if you need it.
// Matching is exact, never a substring: evil-github.com, github.com.evil.test and
// xgithubusercontent.com do not pass. Upper case and a trailing dot make no difference.
//
// Only https on port 443, and only the METHODS below (GET and HEAD: read-only; add
// 'POST' and the like for tools that need them, knowing that they can then send data).
// This file, as shipped, allows GitHub downloads and the PyPI and npm registries.

const ALLOWED = [
  'github.com',
  '*.githubusercontent.com',
  'pypi.org',
  'files.pythonhosted.org',
  'registry.npmjs.org',
];
const METHODS = ['GET', 'HEAD'];

const FILE = 'rules/allowlist.js';

// True when `host` is allowed by `pattern`; both are lower-cased, without a trailing dot.
function hostMatches(host, pattern) {
  if (pattern.startsWith('*.')) {
    const suffix = pattern.slice(1);  // '.githubusercontent.com': a whole-label suffix
    return suffix.length > 1 && host.length > suffix.length && host.endsWith(suffix);
  }
  return host === pattern;
}

(function () {
  const deny = (why) => ({ deny_message: FILE + ': ' + why });
  const host = String(r.host).toLowerCase().replace(/\.$/, '');
  const patterns = ALLOWED.map((p) => String(p).toLowerCase().replace(/\.$/, ''));
  if (!patterns.some((p) => hostMatches(host, p))) {
    return deny(host + ' is not in the allowlist');
  }
  if (r.scheme !== 'https') return deny(r.scheme + '://' + host + ' is refused: https only');
  if (r.port !== 443) return deny(host + ' port ' + r.port + ' is refused: only 443');
  if (!METHODS.includes(r.method)) {
    return deny(r.method + ' is refused: only ' + METHODS.join('/') + ' are allowed');
  }
  return true;
})()
