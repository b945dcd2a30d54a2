// rules/github-readonly.js: read-only GitHub. Clone and fetch, never push.
//
//   httpjail --weak --js-file rules/github-readonly.js -- git clone https://github.com/OWNER/REPO
//
// Allowed (https on port 443 only):
//   github.com                 git's smart HTTP protocol, fetch side only:
//                                GET  /OWNER/REPO[.git]/info/refs?service=git-upload-pack
//                                POST /OWNER/REPO[.git]/git-upload-pack
//                              and GET/HEAD /OWNER/REPO/archive/... (source archives,
//                              which redirect to codeload.github.com)
//   codeload.github.com        GET/HEAD (archive downloads)
//   api.github.com             GET/HEAD only: the REST API can read, never write
//                              (no POST/PATCH/PUT/DELETE: no issues, comments, releases,
//                              no GraphQL, which is POST)
//   raw.githubusercontent.com  GET/HEAD (file contents)
//
// Refused:
//   - push: anything naming git-receive-pack, both the
//     /info/refs?service=git-receive-pack discovery and POST .../git-receive-pack;
//   - every other github.com page, Git LFS (its batch API is a POST that serves uploads
//     as well as downloads), gist.github.com, uploads.github.com;
//   - plain http://, other ports, and look-alike hosts (evil-github.com,
//     github.com.evil.test): hosts must match exactly.

const FILE = 'rules/github-readonly.js';

const READ = ['GET', 'HEAD'];
const HOSTS = ['github.com', 'codeload.github.com', 'api.github.com', 'raw.githubusercontent.com'];

// An owner or repository name (REPO may end in .git): never `.` or `..`.
const NAME = '(?!\\.\\.?/)[A-Za-z0-9_.-]+';
const REPO = '^/' + NAME + '/' + NAME;
const INFO_REFS = new RegExp(REPO + '/info/refs$');
const UPLOAD_PACK = new RegExp(REPO + '/git-upload-pack$');
const ARCHIVE = new RegExp(REPO + '/archive/[^?#]+$');

(function () {
  const deny = (why) => ({ deny_message: FILE + ': ' + why });
  // Hosts reach rules lower-cased; normalise anyway so the file is safe under any engine.
  const host = String(r.host).toLowerCase().replace(/\.$/, '');
  if (!HOSTS.includes(host)) return deny(host + ' is not GitHub (read-only GitHub only)');
  if (r.scheme !== 'https') return deny(r.scheme + '://' + host + ' is refused: https only');
  if (r.port !== 443) return deny(host + ' port ' + r.port + ' is refused: only 443');

  let target = r.path + '?' + r.query;
  try { target = decodeURIComponent(target); } catch (e) { /* keep the raw form */ }
  if (target.toLowerCase().includes('receive-pack')) {
    return deny('git push (git-receive-pack) is refused: GitHub is read-only here');
  }

  if (host !== 'github.com') {
    if (READ.includes(r.method)) return true;
    return deny(r.method + ' ' + host + ' is refused: GitHub is read-only here (GET and HEAD)');
  }

  // github.com: the raw request path; refuse anything a server might normalise into
  // another path (dot segments, encoded slashes or dots, backslashes).
  if (/%2[ef]|%5c|\\/i.test(r.path) || /\/\.\.?(\/|$)/.test(r.path)) {
    return deny('github.com' + r.path + ' is refused: unusual path encoding');
  }
  if (INFO_REFS.test(r.path)) {
    if (r.method === 'GET' && r.query === 'service=git-upload-pack') return true;
    return deny('github.com' + r.path + ': only GET ?service=git-upload-pack (clone/fetch)');
  }
  if (UPLOAD_PACK.test(r.path)) {
    if (r.method === 'POST') return true;
    return deny(r.method + ' github.com' + r.path + ': only POST (clone/fetch)');
  }
  if (ARCHIVE.test(r.path) && READ.includes(r.method)) return true;
  return deny('github.com' + r.path + ' is refused: only git clone/fetch and archives');
})()
