/**
 * Amplify's AppSync real-time client always turns the GraphQL endpoint into a `wss://`
 * URL, even for `http://127.0.0.1:PORT/graphql`, and the local cloud serves plain
 * `ws://` on loopback. This shim rewrites `wss://` to `ws://` for loopback hosts only,
 * and is installed only when the configured AppSync endpoint itself is a loopback
 * `http://` URL, so it never applies to a deployed stack.
 */

const LOOPBACK_WSS = /^wss:\/\/(127\.0\.0\.1|localhost|\[::1\])(:\d+)?\//;

export function isLoopbackHttp(url: string): boolean {
  try {
    const u = new URL(url);
    return u.protocol === 'http:' && ['127.0.0.1', 'localhost', '[::1]'].includes(u.hostname);
  } catch {
    return false;
  }
}

export function rewriteLoopbackWss(url: string): string {
  return url.replace(LOOPBACK_WSS, 'ws://$1$2/');
}

let installed = false;

export function installLoopbackWebSocketShim(appsyncGraphqlUrl: string): boolean {
  if (installed || !isLoopbackHttp(appsyncGraphqlUrl)) return installed;
  const Native = window.WebSocket;
  class LoopbackWebSocket extends Native {
    constructor(url: string | URL, protocols?: string | string[]) {
      super(rewriteLoopbackWss(String(url)), protocols);
    }
  }
  window.WebSocket = LoopbackWebSocket as typeof WebSocket;
  installed = true;
  return true;
}
