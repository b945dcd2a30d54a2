// rules/claude-code.js: what Claude Code needs to work, and nothing else.
//
//   httpjail --weak --js-file rules/claude-code.js -- claude -p "..."
//
// Allowed (https on port 443 only):
//   api.anthropic.com
//     POST /v1/messages                   the model API (Claude Code adds ?beta=true)
//     POST /v1/messages/count_tokens      token counting, part of the same API
//     GET  /api/claude_cli/bootstrap      start-up configuration
//     GET  /api/claude_code/policy_limits organisation policy (what the user may do)
//     GET  /api/claude_code/settings      managed settings
//     POST /v1/oauth/token                token refresh for claude.ai (Pro/Max) logins
//   console.anthropic.com, platform.claude.com
//     POST /v1/oauth/token                the same refresh, at the hosts older and newer
//                                         versions use; without it a subscription login
//                                         stops working when its access token expires.
//   The browser sign-in itself (claude.ai/oauth/authorize) happens outside the jail: log
//   in once without the jail, or use ANTHROPIC_API_KEY.
//
// Left out ON PURPOSE (Claude Code keeps working without them; they are refused). What
// Claude Code 2.1.332 tried, seen in the tests' runs of the real program:
//   api.anthropic.com/api/event_logging/...   telemetry
//   api.anthropic.com/api/claude_code/organizations/metrics_enabled
//                                             whether the organisation wants metrics
//   api.anthropic.com/api/eval/...            feature-flag / experiment evaluation
//   api.anthropic.com/api/claude_code_penguin_mode, /api/directory/server-urls
//                                             feature and directory look-ups it does
//                                             without when refused
//   api.anthropic.com/mcp-registry/...        MCP server directory (only for browsing it)
//   statsig.anthropic.com, *.statsig.com, *.sentry.io   metrics and crash reports
//   storage.googleapis.com, downloads.claude.ai, registry.npmjs.org   auto-update checks
//   and downloads, and (the TUI) downloads.claude.ai/model-catalog; update Claude Code
//   outside the jail (or set DISABLE_AUTOUPDATER=1).
//   raw.githubusercontent.com (the TUI's release notes) and github.com (the TUI's fetch of
//   the official plugin marketplace, over HTTPS and over SSH, which the strong jail
//   closes as not HTTP) are refused as hosts Claude Code does not need.
//   CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 stops most of these requests being made.
// Also refused: plain http://, other ports, look-alike hosts (xapi.anthropic.com,
// api.anthropic.com.evil.test) and every other host.

const FILE = 'rules/claude-code.js';

// host -> { path: [methods] }. Paths are compared exactly (the query, e.g. ?beta=true,
// is not part of r.path), so `..`, `//` or percent-encoding cannot reach another endpoint.
const ENDPOINTS = {
  'api.anthropic.com': {
    '/v1/messages': ['POST'],
    '/v1/messages/count_tokens': ['POST'],
    '/api/claude_cli/bootstrap': ['GET'],
    '/api/claude_code/policy_limits': ['GET'],
    '/api/claude_code/settings': ['GET'],
    '/v1/oauth/token': ['POST'],
  },
  'console.anthropic.com': { '/v1/oauth/token': ['POST'] },
  'platform.claude.com': { '/v1/oauth/token': ['POST'] },
};

// Refusals that deserve a precise reason in the log: they are expected, not a breakage.
const LEFT_OUT = [
  ['/api/event_logging/', 'telemetry, left out on purpose'],
  ['/api/claude_code/organizations/metrics_enabled', 'a telemetry setting, left out on purpose'],
  ['/api/claude_code_penguin_mode', 'a feature look-up, left out on purpose'],
  ['/api/directory/', 'a directory look-up, left out on purpose'],
  ['/api/eval/', 'experiment evaluation, left out on purpose'],
  ['/mcp-registry/', 'the MCP server directory, left out on purpose'],
];

const LEFT_OUT_HOSTS = [
  ['statsig.anthropic.com', 'metrics'],
  ['statsig.com', 'metrics'],
  ['sentry.io', 'crash reporting'],
  ['storage.googleapis.com', 'auto-update'],
  ['downloads.claude.ai', 'auto-update'],
];

(function () {
  const deny = (why) => ({ deny_message: FILE + ': ' + why });
  // Hosts reach rules lower-cased; normalise anyway so the file is safe under any engine.
  const host = String(r.host).toLowerCase().replace(/\.$/, '');
  if (!Object.prototype.hasOwnProperty.call(ENDPOINTS, host)) {
    for (const [domain, what] of LEFT_OUT_HOSTS) {
      if (host === domain || host.endsWith('.' + domain)) {
        return deny(host + ' is ' + what + ', left out on purpose');
      }
    }
    return deny(host + ' is not needed by Claude Code');
  }
  if (r.scheme !== 'https') return deny(r.scheme + '://' + host + ' is refused: https only');
  if (r.port !== 443) return deny(host + ' port ' + r.port + ' is refused: only 443');
  const paths = ENDPOINTS[host];
  if (!Object.prototype.hasOwnProperty.call(paths, r.path)) {
    for (const [prefix, what] of LEFT_OUT) {
      if (host === 'api.anthropic.com' && r.path.startsWith(prefix)) {
        return deny(host + r.path + ' is ' + what);
      }
    }
    return deny(host + r.path + ' is not needed by Claude Code');
  }
  if (!paths[r.path].includes(r.method)) {
    return deny(r.method + ' ' + host + r.path + ' is not needed by Claude Code (only ' +
      paths[r.path].join('/') + ')');
  }
  return true;
})()
