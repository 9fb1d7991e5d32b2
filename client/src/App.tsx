import { useEffect, useMemo, useState } from 'react';

import { configureAmplify, currentUser, idToken, keepTokensFresh, signOut, type SignedInUser } from './auth';
import { loadConfig, type AppConfig } from './config';
import { installLoopbackWebSocketShim } from './loopbackWebSocket';
import { buildTransports } from './transports';
import { amplifyGraphqlApi } from './transports/amplifyGraphql';
import { Comparison } from './ui/Comparison';
import { SignIn } from './ui/SignIn';

type Phase =
  | { kind: 'loading' }
  | { kind: 'failed'; message: string }
  | { kind: 'ready'; config: AppConfig; user: SignedInUser | null };

export function App() {
  const [phase, setPhase] = useState<Phase>({ kind: 'loading' });

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

  useEffect(() => {
    if (!config || !user) return;
    return keepTokensFresh(() => setPhase({ kind: 'ready', config, user: null }));
  }, [config, user]);

  async function doSignOut() {
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
            <button type="button" onClick={() => void doSignOut()}>
              Sign out
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
          <SignIn onSignedIn={(u) => setPhase({ kind: 'ready', config: phase.config, user: u })} />
        )}
        {phase.kind === 'ready' && user && wiring && (
          <Comparison config={phase.config} rest={wiring.rest} transports={wiring.transports} />
        )}
      </main>
    </div>
  );
}
