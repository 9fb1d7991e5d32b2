import { useCallback, useEffect, useMemo, useRef, useState } from 'react';

import { configureAmplify, currentUser, idToken, keepTokensFresh, signOut, type SignedInUser } from './auth';
import { loadConfig, type AppConfig } from './config';
import { installLoopbackWebSocketShim } from './loopbackWebSocket';
import { buildTransports } from './transports';
import { amplifyGraphqlApi } from './transports/amplifyGraphql';
import { sessionEndedMessage } from './session';
import { Comparison, type ComparisonHandle } from './ui/Comparison';
import { SignIn } from './ui/SignIn';

type Phase =
  | { kind: 'loading' }
  | { kind: 'failed'; message: string }
  | { kind: 'ready'; config: AppConfig; user: SignedInUser | null; notice?: string };

export function App() {
  const [phase, setPhase] = useState<Phase>({ kind: 'loading' });
  const [signingOut, setSigningOut] = useState(false);
  const comparison = useRef<ComparisonHandle | null>(null);

  useEffect(() => {
    let cancelled = false;
    (async () => {
      const config = await loadConfig();
      installLoopbackWebSocketShim(config.endpoints.appsync.graphql);
      configureAmplify(config);
      const user = await currentUser();
      if (!cancelled) setPhase({ kind: 'ready', config, user });
    })().catch((err: unknown) => {
      if (!cancelled) setPhase({ kind: 'failed', message: (err as Error).message });
    });
    return () => {
      cancelled = true;
    };
  }, []);

  const config = phase.kind === 'ready' ? phase.config : null;
  const user = phase.kind === 'ready' ? phase.user : null;

  const wiring = useMemo(
    () => (config && user ? buildTransports(config, (o) => idToken(o?.forceRefresh), amplifyGraphqlApi()) : null),
    [config, user],
  );

  // The token was refused (its pool or signing key is gone): back to sign-in, saying why,
  // with the settings read again (a restarted local cloud has a new pool and app client).
  const onSessionInvalid = useCallback(() => {
    if (!config) return;
    const notice = sessionEndedMessage(config);
    setPhase({ kind: 'ready', config, user: null, notice });
    void (async () => {
      await signOut().catch(() => undefined);
      const fresh = await loadConfig();
      installLoopbackWebSocketShim(fresh.endpoints.appsync.graphql);
      configureAmplify(fresh);
      setPhase((p) => (p.kind === 'ready' && !p.user ? { kind: 'ready', config: fresh, user: null, notice } : p));
    })().catch(() => undefined);
  }, [config]);

  useEffect(() => {
    if (!config || !user) return;
    return keepTokensFresh(onSessionInvalid);
  }, [config, user, onSessionInvalid]);

  async function doSignOut() {
    setSigningOut(true);
    try {
      // The user's streams stop first, while the token still works.
      await comparison.current?.cancelAll().catch(() => undefined);
    } finally {
      setSigningOut(false);
    }
    if (config) setPhase({ kind: 'ready', config, user: null });
    await signOut().catch(() => undefined);
  }

  return (
    <div className="app">
      <header className="top">
        <div>
          <h1>llm-stream: three architectures side by side</h1>
          {config && (
            <p className="model">
              Model: <strong>{config.model.label}</strong>
            </p>
          )}
        </div>
        {user && (
          <div className="user">
            <span>
              Signed in as <strong>{user.username}</strong>
            </span>
            <button type="button" onClick={() => void doSignOut()} disabled={signingOut}>
              {signingOut ? 'Stopping your streams…' : 'Sign out'}
            </button>
          </div>
        )}
      </header>
      <main>
        {phase.kind === 'loading' && <p role="status">Loading the configuration…</p>}
        {phase.kind === 'failed' && (
          <p className="error" role="alert">
            Could not start: {phase.message}
          </p>
        )}
        {phase.kind === 'ready' && !user && (
          <SignIn
            notice={phase.notice}
            onSignedIn={(u) => setPhase({ kind: 'ready', config: phase.config, user: u })}
          />
        )}
        {phase.kind === 'ready' && user && wiring && (
          <Comparison
            config={phase.config}
            rest={wiring.rest}
            transports={wiring.transports}
            onSessionInvalid={onSessionInvalid}
            handle={comparison}
          />
        )}
      </main>
    </div>
  );
}
