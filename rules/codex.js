// rules/codex.js: what the OpenAI Codex CLI needs to work, and nothing else.
//
//   httpjail --weak --js-file rules/codex.js -- codex exec "..."
//
// Allowed (https on port 443 only):
//   api.openai.com    the model API, for API-key users (CODEX_API_KEY / OPENAI_API_KEY):
//                       /v1/responses          POST (SSE stream) and GET (the WebSocket
//                                              upgrade Codex tries first)
//                       /v1/responses/compact  POST (remote history compaction)
//                       /v1/models             GET  (model list, ?client_version=...)
//   chatgpt.com       the same three endpoints under /backend-api/codex/ instead of /v1/.
//                     With "Sign in with ChatGPT" (a ChatGPT plan instead of an API key)
//                     Codex's model base URL is https://chatgpt.com/backend-api/codex, so
//                     this is those users' model API. Nothing else on chatgpt.com is.
//   auth.openai.com   ChatGPT login tokens, POST only:
//                       /oauth/token                       code exchange and refresh
//                       /oauth/revoke                      `codex logout`
//                       /api/accounts/deviceauth/usercode  `codex login --device-auth`
//                       /api/accounts/deviceauth/token     (polled until you sign in)
//                     The sign-in pages themselves open in your browser, outside the jail.
//
// Denied on purpose (Codex works without them; each is logged as a refusal). What Codex
// 0.169.0 tried, seen in the tests' runs of the real program:
//   github.com/openai/plugins.git, api.github.com/repos/openai/plugins and
//     chatgpt.com/backend-api/plugins/export/curated   its plugin catalogue, at start
//   ab.chatgpt.com/otlp/v1/metrics                     telemetry (OpenTelemetry metrics)
//   raw.githubusercontent.com/openai/codex/main/announcement_tip.toml
//                                                      the TUI's tip of the day
//   api.github.com/repos/openai/codex/releases/latest  the TUI's update check; update
//                                                      Codex outside the jail
// Also denied: chatgpt.com usage and cloud-task endpoints, web search, image and realtime
// endpoints, and every other host. Plain http://, other ports and look-alike hosts
// (api.openai.com.evil.test, xapi.openai.com) are denied too.
//
// With an API key held by httpjail (--secret CODEX_API_KEY@api.openai.com), Codex's
// model-list request to chatgpt.com carries the key's placeholder, so httpjail refuses it
// (secret-to-wrong-host): the key goes to api.openai.com only. Codex then uses the
// models it knows; pass -m to pick one.

const FILE = 'rules/codex.js';

// host -> { path: [methods] }. Paths are compared exactly (the query is not part of
// r.path), so `..`, `//` or percent-encoding cannot reach another endpoint.
const ENDPOINTS = {
  'api.openai.com': {
    '/v1/responses': ['POST', 'GET'],
    '/v1/responses/compact': ['POST'],
    '/v1/models': ['GET'],
  },
  'chatgpt.com': {
    '/backend-api/codex/responses': ['POST', 'GET'],
    '/backend-api/codex/responses/compact': ['POST'],
    '/backend-api/codex/models': ['GET'],
  },
  'auth.openai.com': {
    '/oauth/token': ['POST'],
    '/oauth/revoke': ['POST'],
    '/api/accounts/deviceauth/usercode': ['POST'],
    '/api/accounts/deviceauth/token': ['POST'],
  },
};

(function () {
  const deny = (why) => ({ deny_message: FILE + ': ' + why });
  // Hosts reach rules lower-cased; normalise anyway so the file is safe under any engine.
  const host = String(r.host).toLowerCase().replace(/\.$/, '');
  if (!Object.prototype.hasOwnProperty.call(ENDPOINTS, host)) {
    return deny(host + ' is not needed by Codex');
  }
  if (r.scheme !== 'https') return deny(r.scheme + '://' + host + ' is refused: https only');
  if (r.port !== 443) return deny(host + ' port ' + r.port + ' is refused: only 443');
  const paths = ENDPOINTS[host];
  if (!Object.prototype.hasOwnProperty.call(paths, r.path)) {
    return deny(host + r.path + ' is not needed by Codex');
  }
  if (!paths[r.path].includes(r.method)) {
    return deny(r.method + ' ' + host + r.path + ' is not needed by Codex (only ' +
      paths[r.path].join('/') + ')');
  }
  return true;
})()
